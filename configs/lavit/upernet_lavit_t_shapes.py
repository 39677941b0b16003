# LaViT-T UperNet on the generated ADE20K-layout shapes set: the LaViT-S shapes config with the smaller backbone
# (the three sizes share their channel widths, so the heads stay as they are). The learning tests train this one.
_base_ = './upernet_lavit_s_shapes.py'

model = dict(backbone=dict(arch='t'))
