# Reuse example: Cascade Mask R-CNN with LaViT-S.
_base_ = [
    'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/schedules/adamw.py',
    '../_base_/models/lavit.py',
]
model = dict(backbone=_base_.lavit_backbone, neck=dict(in_channels=_base_.lavit_channels))
optim_wrapper = dict(_base_.det_optim_wrapper, paramwise_cfg=_base_.lavit_paramwise_cfg)
