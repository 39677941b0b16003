"""The backbones compared by the benchmark, their PVTv2 twins, sizes and inputs."""
import argparse
import logging
import re
from collections import OrderedDict
from typing import Callable, Tuple

import torch
import torch.nn as nn

Size = Tuple[int, int]
REFERENCE = 'pvtv2-b2'
DETECTION_SIZE = (800, 1333)
SEGMENTATION_SIZE = (512, 512)
ALL_VA_ARCH = dict(embed_dims=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_heads=[1, 2, 5, 8],
                   mlp_ratios=[8, 8, 4, 4], num_vanilla=[3, 4, 6, 3])
# each LaViT and the PVTv2 of the same layout (embed dims, depths, heads, MLP ratios)
TWINS = OrderedDict([('lavit-t', 'pvtv2-b1'), ('lavit-s', 'pvtv2-b2'), ('lavit-b', 'pvtv2-b3')])
DP_LOSS = dict(type='DiagonalityPreservingLoss', loss_weight=0.1)


def quiet_mm_logger() -> None:
    """mmdet's init_weights warns 'training start from scratch' on every build; that is intended here."""
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.ERROR)


def _lavit(**kwargs) -> nn.Module:
    from vitattn_mm import LaViT
    return LaViT(init_cfg=None, **kwargs)


def _cbvit() -> nn.Module:
    from vitattn_mm import CBViT
    return CBViT(arch='deit-s', init_cfg=None)


def _pvtv2(depths) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from mmdet.models.backbones import PyramidVisionTransformerV2
        return PyramidVisionTransformerV2(embed_dims=64, num_layers=list(depths), init_cfg=None)

    return build


def _swin_t() -> nn.Module:
    from mmdet.models.backbones import SwinTransformer
    return SwinTransformer(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                           init_cfg=None)


# name -> (label, builder)
MODEL_ZOO: 'OrderedDict[str, Tuple[str, Callable[[], nn.Module]]]' = OrderedDict([
    ('lavit-t', ('LaViT-T', lambda: _lavit(arch='t'))),
    ('lavit-s', ('LaViT-S', lambda: _lavit(arch='s'))),
    ('lavit-b', ('LaViT-B', lambda: _lavit(arch='b'))),
    ('lavit-s-allva', ('LaViT-S all-VA', lambda: _lavit(arch=dict(ALL_VA_ARCH)))),
    ('lavit-s-logit', ("LaViT-S attention_kind='logit'", lambda: _lavit(arch='s', attention_kind='logit'))),
    ('lavit-s-nores', ('LaViT-S attention_residual=False', lambda: _lavit(arch='s', attention_residual=False))),
    ('cbvit-s', ('CB-ViT-S (deit-s)', _cbvit)),
    ('pvtv2-b1', ('PVTv2-b1 (mmdet)', _pvtv2([2, 2, 2, 2]))),
    ('pvtv2-b2', ('PVTv2-b2 (mmdet)', _pvtv2([3, 4, 6, 3]))),
    ('pvtv2-b3', ('PVTv2-b3 (mmdet)', _pvtv2([3, 4, 18, 3]))),
    ('swin-t', ('Swin-T (mmdet)', _swin_t)),
])

# training-step benchmark: name -> (label, builder); LaViT-S with and without its DP loss
TRAIN_ZOO: 'OrderedDict[str, Tuple[str, Callable[[], nn.Module]]]' = OrderedDict([
    ('lavit-s', ('LaViT-S + loss_dp (0.1)', lambda: _lavit(arch='s', dp_loss=dict(DP_LOSS)))),
    ('lavit-s-nodp', ('LaViT-S, no DP loss', lambda: _lavit(arch='s'))),
    ('lavit-s-allva', ('LaViT-S all-VA', lambda: _lavit(arch=dict(ALL_VA_ARCH)))),
    ('pvtv2-b2', ('PVTv2-b2 (mmdet)', _pvtv2([3, 4, 6, 3]))),
    ('swin-t', ('Swin-T (mmdet)', _swin_t)),
])
CURVE_MODELS = ('lavit-s', 'lavit-s-allva', 'pvtv2-b2', 'swin-t')
CURVE_SIZES = ((256, 256), (384, 384), (512, 512), (640, 640), (768, 768), (800, 1066), (800, 1333))


def label(name: str) -> str:
    return (MODEL_ZOO.get(name) or TRAIN_ZOO[name])[0]


def build_model(name: str, train: bool = False) -> nn.Module:
    """A backbone with ``init_cfg=None`` and ``init_weights()``, in eval mode (``train``: the training zoo's
    variant in train mode)."""
    quiet_mm_logger()
    model = (TRAIN_ZOO if train else MODEL_ZOO)[name][1]()
    model.init_weights()
    model.train(train)  # a separate statement: mmdet's SwinTransformer.train() returns None
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parse_size(text: str) -> Size:
    m = re.fullmatch(r'(\d+)[xX](\d+)', text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f'size must be HEIGHTxWIDTH, e.g. 800x1333, got {text!r}')
    return int(m.group(1)), int(m.group(2))


def parse_batch_size(text: str) -> Tuple[int, Size]:
    m = re.fullmatch(r'(\d+)[xX](\d+)[xX](\d+)', text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f'expected BATCHxHEIGHTxWIDTH, e.g. 2x512x512, got {text!r}')
    return int(m.group(1)), (int(m.group(2)), int(m.group(3)))


def size_str(size: Size) -> str:
    return f'{size[0]}x{size[1]}'


def image(size: Size, batch: int = 1) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(batch, 3, *size)
