# Mask R-CNN + FPN with a LaViT-S backbone, COCO, 1x schedule (12 epochs), 8 GPUs x 2 images.
# Same recipe as mmdet's PVTv2/Swin Mask R-CNN configs: AdamW, lr 1e-4, weight decay 0.05.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/schedules/adamw.py',
    '../_base_/models/lavit.py',
]
model = dict(backbone=_base_.lavit_backbone, neck=dict(in_channels=_base_.lavit_channels))
optim_wrapper = dict(_base_.det_optim_wrapper, paramwise_cfg=_base_.lavit_paramwise_cfg)
