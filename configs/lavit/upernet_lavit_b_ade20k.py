_base_ = './upernet_lavit_s_ade20k.py'
model = dict(
    backbone=dict(arch='b', drop_path_rate=0.3, init_cfg=dict(checkpoint=_base_.lavit_b_pretrained)))
