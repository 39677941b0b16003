# LaViT-T Mask R-CNN on the generated shapes set: the LaViT-S shapes config with the smaller backbone (the three
# sizes share their channel widths, so the neck and heads stay as they are). The learning tests train this one.
_base_ = './maskrcnn_lavit_s_shapes.py'

model = dict(backbone=dict(arch='t'))
