# Ablation: no residual attention downsampling between stages.
_base_ = './upernet_lavit_s_ade20k.py'
model = dict(backbone=dict(attention_residual=False))
