# Ablation: CB-ViT with context broadcasting switched off (a plain DeiT-S backbone).
_base_ = './maskrcnn_cbvit_s_coco.py'
model = dict(backbone=dict(context_broadcast=False))
