# CB-ViT-S (DeiT-S + context broadcasting) ImageNet-1k classification from scratch, 300 epochs, 8 GPUs x 128 images,
# as the CB paper trains it: the DeiT recipe (AdamW lr 5e-4 x 1024 / 512, weight decay 0.05, cosine, 5 warm-up
# epochs, RandAugment, random erasing, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, drop path 0.1).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/vitattn_runtime.py',
    '../_base_/models/cbvit.py',
    '../_base_/models/classifiers.py',
    '../_base_/schedules/in1k_adamw.py',
]
model = _base_.cbvit_classifier
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
optim_wrapper = dict(
    optimizer=dict(lr=5e-4 * 128 * 8 / 512),
    paramwise_cfg=dict(_base_.in1k_paramwise_cfg, custom_keys=_base_.cbvit_paramwise_cfg.custom_keys))
param_scheduler = _base_.in1k_param_scheduler
auto_scale_lr = dict(base_batch_size=1024)
find_unused_parameters = True  # the simple pyramid's up-sampling layers are not used by the classifier
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
