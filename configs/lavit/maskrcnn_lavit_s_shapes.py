# LaViT-S Mask R-CNN on the generated shapes set (the README's main job). Inherits the COCO config and
# changes only the data (4 shape classes, 160x160 images under data/shapes_coco, made by
# tools/misc/generate_shapes_data.py) and a schedule that trains from scratch in minutes on 2 CPU cores.
_base_ = './maskrcnn_lavit_s_coco.py'

data_root = 'data/shapes_coco/'
image_scale = (160, 160)
metainfo = dict(
    classes=('circle', 'square', 'triangle', 'star'),
    palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 190, 0)])

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline,
                 filter_cfg=dict(filter_empty_gt=True, min_size=4)))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# CPU scale for a 4-class toy set: the backbone is the full LaViT-S, the neck and heads are half as wide
# (128 channels, 2 mask convs) and sample 64 RoIs per image (at most 4 objects per image; 16 positives at most).
# The RoI heads, not the backbone, dominate a training iteration here (tools/analysis/profile_train_step.py: 74% of
# it with 128 RoIs, RoIAlign's CPU backward alone 21%); 64 RoIs make the LaViT-T iteration 22% faster.
# torchvision's RoIAlign (same `aligned=True` semantics) because mmcv's CPU RoIAlign backward is ~1.5x slower here.
model = dict(
    backbone=dict(init_cfg=None),  # from scratch: the main job and the tests download nothing
    neck=dict(out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(
        bbox_roi_extractor=dict(roi_layer=dict(use_torchvision=True), out_channels=128),
        mask_roi_extractor=dict(roi_layer=dict(use_torchvision=True), out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=512, num_classes=4),
        mask_head=dict(num_convs=2, in_channels=128, conv_out_channels=128, num_classes=4)),
    train_cfg=dict(rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rcnn=dict(max_per_img=20)))

# Iteration-based, evaluated once at the end; gloo for CPU distributed runs.
max_iters = 200
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=25),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=25, end=max_iters, eta_min_ratio=0.05),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=50, max_keep_ckpts=2, save_last=True))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
optim_wrapper = dict(optimizer=dict(lr=3e-4))
