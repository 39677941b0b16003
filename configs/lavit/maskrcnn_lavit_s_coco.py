# Mask R-CNN + FPN with a LaViT-S backbone, COCO, 1x schedule (12 epochs), 8 GPUs x 2 images.
# Same recipe as mmdet's PVTv2/Swin Mask R-CNN configs: AdamW, lr 1e-4, weight decay 0.05.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/vitattn_runtime.py',
]

# No ImageNet-1k LaViT weights are published: set this to your own classification checkpoint
# (a vitattn_mm/timm-style state dict of LaViT, or a detector checkpoint with init_cfg prefix='backbone.').
pretrained = None

model = dict(
    backbone=dict(
        _delete_=True,
        type='LaViT',
        arch='s',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.1),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'norm': dict(decay_mult=0.),
        'kernel_logits': dict(decay_mult=0.),
        'head_mix_logits': dict(decay_mult=0.),
        'gate_logits': dict(decay_mult=0.),
    }))
