_base_ = './maskrcnn_lavit_s_coco.py'
model = dict(backbone=dict(arch='t', init_cfg=dict(checkpoint=_base_.lavit_t_pretrained)))
