# The cheap route to LaViT-S ImageNet weights: start from PVTv2-b2's ImageNet-1k release (LaViT-S has its layout; the
# weights convert on loading, see docs/pretraining.md) and fine-tune 30 epochs, 8 GPUs x 128 images. What is new
# to LaViT (the less-attention transforms, residual attention downsampling) and the classifier head learn from their
# initialisation; the less-attention layers lose PVTv2's query/key projections and adapt. Same augmentation and
# losses as the 300-epoch recipe, a tenth of its learning rate (our choice for a fine-tune), 1 warm-up epoch.
_base_ = './lavit_s_8xb128_in1k.py'
model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=_base_.lavit_s_pretrained)))
optim_wrapper = dict(optimizer=dict(lr=5e-5 * 128 * 8 / 512))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=1),
]
train_cfg = dict(max_epochs=30)
