# CB-ViT-S fine-tuned from DeiT-S's ImageNet-1k weights (context broadcasting has no parameters, so they load
# unchanged), 30 epochs, 8 GPUs x 128 images. The classifier head is new (it reads the average of the patch tokens,
# not DeiT's class token). Same augmentation as the 300-epoch recipe, a tenth of its learning rate, 1 warm-up epoch.
_base_ = './cbvit_s_8xb128_in1k.py'
model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=_base_.cbvit_pretrained)))
optim_wrapper = dict(optimizer=dict(lr=5e-5 * 128 * 8 / 512))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=1),
]
train_cfg = dict(max_epochs=30)
