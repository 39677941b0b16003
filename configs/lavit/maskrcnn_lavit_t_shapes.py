# LaViT-T Mask R-CNN on the generated shapes set: the LaViT-S shapes config with the smaller backbone (the three
# sizes share their channel widths, so the neck and heads stay as they are) and a short schedule with a higher
# learning rate. The learning test trains exactly this (tests/learning_setup.py); its thresholds are measured with
# `python tools/analysis/learning_thresholds.py det`.
_base_ = './maskrcnn_lavit_s_shapes.py'

model = dict(backbone=dict(arch='t'))
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(optimizer=dict(lr=6e-4), clip_grad=dict(max_norm=5.0))
max_iters = 140
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=20, end=max_iters, eta_min_ratio=0.05),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
