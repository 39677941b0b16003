# Ablation: every layer computes vanilla attention (no less-attention layers, hence no DP loss).
_base_ = './upernet_lavit_s_ade20k.py'
model = dict(backbone=dict(arch=dict(_delete_=True, **_base_.lavit_s_allva_arch), dp_loss=None))
