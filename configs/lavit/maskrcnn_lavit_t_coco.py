_base_ = './maskrcnn_lavit_s_coco.py'
model = dict(backbone=dict(arch='t'))
