# LaViT-T classifier on the generated ImageNet-layout shapes set (data/shapes_in1k: 64x64 images, one shape each,
# class = shape, coloured from the class's hue family as in the detection set; made by
# `python tools/misc/generate_shapes_data.py --task cls`). Inherits the ImageNet config and changes only the data and
# a schedule that trains from scratch in under a minute on 2 CPU cores: no Mixup/CutMix/RandAugment on 64x64 toy
# images, plain cross-entropy, no drop path. Downloads nothing.
_base_ = './lavit_t_8xb128_in1k.py'

data_root = 'data/shapes_in1k'
metainfo = dict(classes=('circle', 'square', 'triangle', 'star'))
data_preprocessor = dict(num_classes=4)
model = dict(
    backbone=dict(drop_path_rate=0.0, init_cfg=None),
    head=dict(num_classes=4, loss=dict(_delete_=True, type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(_delete_=True))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=16,
    num_workers=0,  # 64x64 JPEGs load in the main process faster than a worker starts (every 50 iterations)
    persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='meta/train.txt', data_prefix='train', metainfo=metainfo,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='meta/val.txt', data_prefix='val', metainfo=metainfo,
                 pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# Iteration-based, evaluated once at the end.
max_iters = 120
optim_wrapper = dict(optimizer=dict(lr=1e-3))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=16),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=16, end=max_iters, eta_min=1e-5),
]
auto_scale_lr = dict(enable=False)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1, save_last=True))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
