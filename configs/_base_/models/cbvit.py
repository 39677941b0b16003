# CB-ViT settings shared by the CB-ViT configs; they reference these names as `_base_.cbvit_backbone` etc.
# CB has no parameters, so DeiT-S ImageNet weights load unchanged (timm's vit_small_patch16_224 weights too).
cbvit_pretrained = 'https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth'
cbvit_backbone = dict(
    _delete_=True,
    type='CBViT',
    arch='deit-s',
    context_broadcast=True,
    drop_path_rate=0.1,
    out_indices=(0, 1, 2, 3),
    init_cfg=dict(type='Pretrained', checkpoint=cbvit_pretrained))
cbvit_channels = [96, 192, 384, 384]  # simple feature pyramid: C/4, C/2, C, C at strides 4, 8, 16, 32
cbvit_paramwise_cfg = dict(custom_keys={
    'norm': dict(decay_mult=0.),
    'pos_embed': dict(decay_mult=0.),
    'cls_token': dict(decay_mult=0.),
})
