# Ablation: no diagonality-preserving loss.
_base_ = './upernet_lavit_s_ade20k.py'
model = dict(backbone=dict(dp_loss=None))
