# Mask R-CNN + FPN with a CB-ViT-S backbone (DeiT-S + context broadcasting), COCO, 1x schedule.
# The plain ViT (stride 16) reaches the FPN through the simple feature pyramid inside CBViT (ViTDet-style).
# CB has no parameters, so DeiT-S ImageNet weights load unchanged.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/vitattn_runtime.py',
]

pretrained = 'https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='CBViT',
        arch='deit-s',
        context_broadcast=True,
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 384]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'norm': dict(decay_mult=0.),
        'pos_embed': dict(decay_mult=0.),
        'cls_token': dict(decay_mult=0.),
    }))
