# LaViT-B ImageNet-1k classification from scratch, 300 epochs, 8 GPUs x 128 images (recipe: lavit_s_8xb128_in1k.py;
# drop path 0.3, as PVTv2-b3 is trained).
_base_ = './lavit_s_8xb128_in1k.py'
model = dict(backbone=dict(arch='b', drop_path_rate=0.3))
