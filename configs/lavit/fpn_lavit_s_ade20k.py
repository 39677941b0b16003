# Reuse example: Semantic FPN with LaViT-S, ADE20K 512x512.
_base_ = [
    'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/models/lavit.py',
]
model = dict(pretrained=None, backbone=_base_.lavit_backbone, neck=dict(in_channels=_base_.lavit_channels))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    paramwise_cfg=_base_.lavit_paramwise_cfg)
