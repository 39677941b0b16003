# UperNet with a LaViT-S backbone, ADE20K 512x512, 160k iterations, 8 GPUs x 2 images.
# Same optimisation as mmseg's Swin UperNet configs: AdamW lr 6e-5, weight decay 0.01, linear warm-up then poly.
_base_ = [
    'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/models/lavit.py',
]
model = dict(
    pretrained=None,
    backbone=_base_.lavit_backbone,
    decode_head=dict(in_channels=_base_.lavit_channels),
    auxiliary_head=dict(in_channels=_base_.lavit_channels[2]))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=_base_.lavit_paramwise_cfg)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
