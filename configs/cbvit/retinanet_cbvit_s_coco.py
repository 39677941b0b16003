# Reuse example: RetinaNet with CB-ViT-S.
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/schedules/adamw.py',
    '../_base_/models/cbvit.py',
]
model = dict(
    backbone=_base_.cbvit_backbone,
    neck=dict(in_channels=_base_.cbvit_channels, start_level=1, add_extra_convs='on_input'))
optim_wrapper = dict(_base_.det_optim_wrapper, paramwise_cfg=_base_.cbvit_paramwise_cfg)
