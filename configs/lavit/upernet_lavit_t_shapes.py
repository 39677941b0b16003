# LaViT-T UperNet on the generated ADE20K-layout shapes set: the LaViT-S shapes config with the smaller backbone
# (the three sizes share their channel widths, so the heads stay as they are) and a short schedule with a higher
# learning rate. The learning test trains exactly this (tests/learning_setup.py); its threshold is measured with
# `python tools/analysis/learning_thresholds.py seg`. The heads are narrow (32 / 16 channels instead of 128 / 64): with
# wide heads, features of a frozen random backbone segmented these shapes almost as well as a trained backbone's
# (docs/results.md), so the test could not tell that the backbone learns.
_base_ = './upernet_lavit_s_shapes.py'

model = dict(backbone=dict(arch='t'), decode_head=dict(channels=32), auxiliary_head=dict(channels=16))
train_dataloader = dict(batch_size=4)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
max_iters = 200
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=20, end=max_iters, by_epoch=False),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
