# LaViT-S Mask R-CNN from random initialisation (no ImageNet weights), otherwise as maskrcnn_lavit_s_coco.py.
# Expect far lower accuracy on the 1x schedule than with the PVTv2 start (mmdet's scratch configs need 6x for an R-50
# Mask R-CNN to catch up with an ImageNet start); it is here to measure what the ImageNet start is worth.
_base_ = './maskrcnn_lavit_s_coco.py'
model = dict(backbone=dict(init_cfg=None))
