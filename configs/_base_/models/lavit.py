# LaViT settings shared by the LaViT configs; they reference these names as `_base_.lavit_backbone` etc.
# No LaViT ImageNet weights are published, but LaViT-T/S/B have exactly PVTv2-b1/b2/b3's layout, so the backbone
# starts from PVTv2's official ImageNet-1k release (as mmdet's PVTv2 configs do; LaViT converts the weights when it
# loads them, see docs/pretraining.md). Offline, download the file once and point the config at it:
#   --cfg-options model.backbone.init_cfg.checkpoint=pretrain/pvt_v2_b2.pth
# or start from your own classification checkpoint (configs/lavit/lavit_*_in1k.py, then
# tools/model_converters/extract_backbone.py). The `-scratch` configs train from random initialisation.
pvtv2_release = 'https://github.com/whai362/PVT/releases/download/v2/'
lavit_t_pretrained = pvtv2_release + 'pvt_v2_b1.pth'  # LaViT-T <- PVTv2-b1
lavit_s_pretrained = pvtv2_release + 'pvt_v2_b2.pth'  # LaViT-S <- PVTv2-b2
lavit_b_pretrained = pvtv2_release + 'pvt_v2_b3.pth'  # LaViT-B <- PVTv2-b3
lavit_backbone = dict(
    _delete_=True,
    type='LaViT',
    arch='s',
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.1,
    dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.1),
    init_cfg=dict(type='Pretrained', checkpoint=lavit_s_pretrained))
lavit_channels = [64, 128, 320, 512]  # the same for arch t, s and b
# LaViT-S with every layer a vanilla-attention layer (the -allva ablation configs)
lavit_s_allva_arch = dict(embed_dims=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_heads=[1, 2, 5, 8],
                          mlp_ratios=[8, 8, 4, 4], num_vanilla=[3, 4, 6, 3])
# no weight decay on norms and on the (softmax-normalised) LA kernels, head mixing and gates
lavit_paramwise_cfg = dict(custom_keys={
    'norm': dict(decay_mult=0.),
    'kernel_logits': dict(decay_mult=0.),
    'head_mix_logits': dict(decay_mult=0.),
    'gate_logits': dict(decay_mult=0.),
})
