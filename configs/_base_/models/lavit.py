# LaViT settings shared by the LaViT configs; they reference these names as `_base_.lavit_backbone` etc.
# No ImageNet-1k LaViT weights are published. To start from your own classification checkpoint, override
#   model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='path/to/lavit_s.pth')))
# (add prefix='backbone.' to take the backbone of a trained detector or segmentor).
lavit_backbone = dict(
    _delete_=True,
    type='LaViT',
    arch='s',
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.1,
    dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.1),
    init_cfg=None)
lavit_channels = [64, 128, 320, 512]  # the same for arch t, s and b
# no weight decay on norms and on the (softmax-normalised) LA kernels, head mixing and gates
lavit_paramwise_cfg = dict(custom_keys={
    'norm': dict(decay_mult=0.),
    'kernel_logits': dict(decay_mult=0.),
    'head_mix_logits': dict(decay_mult=0.),
    'gate_logits': dict(decay_mult=0.),
})
