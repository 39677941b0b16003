# Reuse example: Semantic FPN with CB-ViT-S, ADE20K 512x512.
_base_ = [
    'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/models/cbvit.py',
]
model = dict(pretrained=None, backbone=dict(_base_.cbvit_backbone, img_size=512),
             neck=dict(in_channels=_base_.cbvit_channels))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    paramwise_cfg=_base_.cbvit_paramwise_cfg)
