# Ablation: no residual attention downsampling between stages.
_base_ = './maskrcnn_lavit_s_coco.py'
model = dict(backbone=dict(attention_residual=False))
