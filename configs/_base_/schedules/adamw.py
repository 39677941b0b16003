# AdamW recipes of mmdet's PVTv2/Swin Mask R-CNN configs (detection) and mmseg's Swin UperNet configs
# (segmentation); our configs add their backbone's paramwise_cfg, e.g.
#   optim_wrapper = dict(_base_.det_optim_wrapper, paramwise_cfg=_base_.lavit_paramwise_cfg)
det_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))
seg_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01))
# 160k iterations: linear warm-up, then poly decay
seg_param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
