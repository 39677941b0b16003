_base_ = './upernet_lavit_s_ade20k.py'
model = dict(backbone=dict(arch='t', init_cfg=dict(checkpoint=_base_.lavit_t_pretrained)))
