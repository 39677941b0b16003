# Reuse example: RetinaNet (a one-stage detector) with LaViT-S; the DP loss reaches its losses the same way.
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/models/lavit.py',
]
model = dict(
    backbone=_base_.lavit_backbone,
    neck=dict(in_channels=_base_.lavit_channels, start_level=1, add_extra_convs='on_input'))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=_base_.lavit_paramwise_cfg)
