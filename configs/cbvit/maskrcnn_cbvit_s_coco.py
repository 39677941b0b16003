# Mask R-CNN + FPN with a CB-ViT-S backbone (DeiT-S + context broadcasting), COCO, 1x schedule.
# The plain ViT (stride 16) reaches the FPN through the simple feature pyramid inside CBViT (ViTDet-style).
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/schedules/adamw.py',
    '../_base_/models/cbvit.py',
]
model = dict(backbone=_base_.cbvit_backbone, neck=dict(in_channels=_base_.cbvit_channels))
optim_wrapper = dict(_base_.det_optim_wrapper, paramwise_cfg=_base_.cbvit_paramwise_cfg)
