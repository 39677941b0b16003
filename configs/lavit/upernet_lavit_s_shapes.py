# LaViT-S UperNet on the generated ADE20K-layout shapes set (data/shapes_ade, 160x160, 4 classes + ignored
# background, reduce-zero-label as ADE20K): inherits the ADE20K config and changes only the data and a schedule
# that trains from scratch in minutes on 2 CPU cores.
_base_ = './upernet_lavit_s_ade20k.py'

data_root = 'data/shapes_ade'
crop_size = (128, 128)
metainfo = dict(
    classes=('circle', 'square', 'triangle', 'star'),
    palette=[[220, 20, 60], [0, 130, 200], [60, 180, 75], [255, 190, 0]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(160, 160), ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# ADE20KDataset only accepts subsets of the 150 ADE classes; the same layout with our classes is a BaseSegDataset
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
               seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(batch_size=4, num_workers=1, dataset=dict(dataset, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=1, dataset=dict(dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

# CPU scale: full LaViT-S backbone, UperNet at 128 channels, BN instead of SyncBN (one process).
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(init_cfg=None),  # from scratch: the tests download nothing
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(channels=128, num_classes=4, norm_cfg=norm_cfg),
    auxiliary_head=dict(channels=64, num_classes=4, norm_cfg=norm_cfg))

optim_wrapper = dict(optimizer=dict(lr=3e-4))
max_iters = 400
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters, by_epoch=False),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=200, max_keep_ckpts=2, save_last=True))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
