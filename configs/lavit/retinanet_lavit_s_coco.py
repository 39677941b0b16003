# Reuse example: RetinaNet (a one-stage detector) with LaViT-S; the DP loss reaches its losses the same way.
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/schedules/adamw.py',
    '../_base_/models/lavit.py',
]
model = dict(
    backbone=_base_.lavit_backbone,
    neck=dict(in_channels=_base_.lavit_channels, start_level=1, add_extra_convs='on_input'))
optim_wrapper = dict(_base_.det_optim_wrapper, paramwise_cfg=_base_.lavit_paramwise_cfg)
