# LaViT-T ImageNet-1k classification from scratch, 300 epochs, 8 GPUs x 128 images (recipe: lavit_s_8xb128_in1k.py).
_base_ = './lavit_s_8xb128_in1k.py'
model = dict(backbone=dict(arch='t'))
