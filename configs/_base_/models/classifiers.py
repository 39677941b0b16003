# ImageNet-1k classifiers (mmpretrain's ImageClassifier) with our backbones; the classification configs reference
# these names as `_base_.lavit_classifier` etc. Like mmpretrain's DeiT/PVT configs: global average pooling of the
# backbone's last output, a linear head, label smoothing 0.1, Mixup 0.8 / CutMix 1.0. The backbones return a tuple
# of feature maps as mmpretrain's do; the classifiers ask them for one level only.
lavit_classifier = dict(
    type='ImageClassifier',
    backbone=dict(
        type='LaViT',
        arch='s',
        out_indices=(3, ),  # stride 32, 512 channels
        drop_path_rate=0.1,
        dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.1),  # logged and summed as loss_dp
        init_cfg=None),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# CB-ViT classifies from the average of its normalised patch tokens: the stride-16 level of its simple pyramid
# (out_indices=(2,)) is exactly that map. The class token is kept (DeiT weights load unchanged, and CB's broadcast
# mean includes it, as in the paper's ViT); the pyramid's up-sampling layers get no gradient in classification,
# hence `find_unused_parameters=True` in the CB-ViT classification configs.
cbvit_classifier = dict(
    type='ImageClassifier',
    backbone=dict(
        type='CBViT',
        arch='deit-s',
        context_broadcast=True,
        out_indices=(2, ),  # stride 16, 384 channels
        drop_path_rate=0.1,
        init_cfg=None),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
