_base_ = './maskrcnn_lavit_s_coco.py'
model = dict(
    backbone=dict(arch='b', drop_path_rate=0.3, init_cfg=dict(checkpoint=_base_.lavit_b_pretrained)))
