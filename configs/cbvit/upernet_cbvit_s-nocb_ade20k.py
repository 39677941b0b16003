# Ablation: CB-ViT with context broadcasting switched off (a plain DeiT-S backbone).
_base_ = './upernet_cbvit_s_ade20k.py'
model = dict(backbone=dict(context_broadcast=False))
