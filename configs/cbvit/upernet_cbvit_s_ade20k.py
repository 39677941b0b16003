# UperNet with a CB-ViT-S backbone (DeiT-S + context broadcasting), ADE20K 512x512, 160k iterations.
# The stride-16 ViT reaches UperNet through CBViT's simple feature pyramid; DeiT-S weights load unchanged
# (position embedding resized from 14x14 to 32x32).
_base_ = [
    'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/schedules/adamw.py',
    '../_base_/models/cbvit.py',
]
model = dict(
    pretrained=None,
    backbone=dict(_base_.cbvit_backbone, img_size=512),
    decode_head=dict(in_channels=_base_.cbvit_channels),
    auxiliary_head=dict(in_channels=_base_.cbvit_channels[2]))
optim_wrapper = dict(_base_.seg_optim_wrapper, paramwise_cfg=_base_.cbvit_paramwise_cfg)
param_scheduler = _base_.seg_param_scheduler
train_dataloader = dict(batch_size=2)
