# LaViT-S UperNet from random initialisation (no ImageNet weights), otherwise as upernet_lavit_s_ade20k.py.
# ViTs trained on ADE20K from scratch stay far below their ImageNet-initialised scores; this config measures that gap.
_base_ = './upernet_lavit_s_ade20k.py'
model = dict(backbone=dict(init_cfg=None))
