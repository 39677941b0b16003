# Ablation: no diagonality-preserving loss.
_base_ = './maskrcnn_lavit_s_coco.py'
model = dict(backbone=dict(dp_loss=None))
