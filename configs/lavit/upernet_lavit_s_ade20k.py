# UperNet with a LaViT-S backbone, ADE20K 512x512, 160k iterations, 8 GPUs x 2 images.
# Same optimisation as mmseg's Swin UperNet configs: AdamW lr 6e-5, weight decay 0.01, linear warm-up then poly.
_base_ = [
    'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/schedules/adamw.py',
    '../_base_/models/lavit.py',
]
model = dict(
    pretrained=None,
    backbone=_base_.lavit_backbone,
    decode_head=dict(in_channels=_base_.lavit_channels),
    auxiliary_head=dict(in_channels=_base_.lavit_channels[2]))
optim_wrapper = dict(_base_.seg_optim_wrapper, paramwise_cfg=_base_.lavit_paramwise_cfg)
param_scheduler = _base_.seg_param_scheduler
train_dataloader = dict(batch_size=2)
