# The DeiT/PVT ImageNet-1k recipe on top of mmpretrain's imagenet_bs1024_adamw_swin schedule (AdamW, lr 5e-4 x
# batch / 512, weight decay 0.05, cosine to 1e-5, 300 epochs): 5 warm-up epochs instead of Swin's 20, and no weight
# decay on norms, biases and the parameters listed in the backbone's paramwise custom_keys. Our configs use
#   optim_wrapper = dict(paramwise_cfg=dict(_base_.in1k_paramwise_cfg, custom_keys=...))
in1k_paramwise_cfg = dict(_delete_=True, norm_decay_mult=0.0, bias_decay_mult=0.0)
in1k_param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]
