"""Every config under configs/ (except _base_) loads, builds its backbone from its toolbox's registry and runs it;
a representative set builds the whole model and runs backbone + neck + head. New configs are picked up
automatically; the toolbox follows from the config's default_scope (mmdet, mmseg, mmpretrain).
The backbone of configs that share one backbone config is built and run once."""
import glob
import importlib
import os.path as osp

import pytest
import torch
from helpers import ROOT
from mmengine.config import Config
from mmengine.registry import DefaultScope

CONFIGS = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in osp.relpath(p, ROOT).split(osp.sep))
# The whole model (neck and heads included) for one config of each kind of model; the others build the backbone
# only (the heads are mmdet's/mmseg's own, identical across those configs up to in_channels, which the backbone
# test checks against the backbone's out_channels).
FULL_MODEL = {
    'configs/lavit/maskrcnn_lavit_t_coco.py', 'configs/cbvit/maskrcnn_cbvit_s_coco.py',
    'configs/lavit/cascade-maskrcnn_lavit_s_coco.py', 'configs/lavit/retinanet_lavit_s_coco.py',
    'configs/lavit/upernet_lavit_t_ade20k.py', 'configs/cbvit/upernet_cbvit_s_ade20k.py',
    'configs/lavit/fpn_lavit_s_ade20k.py', 'configs/cbvit/cbvit_s_8xb128_in1k.py',
}
INPUT = (1, 3, 64, 96)


def test_configs_are_found():
    assert len(CONFIGS) >= 20 and 'configs/lavit/maskrcnn_lavit_s_shapes.py' in CONFIGS
    assert all(c in CONFIGS for c in FULL_MODEL)


def load(path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    scope = cfg.get('default_scope')
    assert scope in ('mmdet', 'mmseg', 'mmpretrain'), f'{path}: default_scope {scope!r}'
    model = cfg.model
    model.backbone.init_cfg = None  # no pretrained weights here
    if 'pretrained' in model:
        model.pretrained = None
    return cfg, importlib.import_module(f'{scope}.registry').MODELS


def neck_in_channels(model_cfg):
    """The channels the config's neck or decode head expects from the backbone (None: a classifier's neck)."""
    if model_cfg.get('neck') and 'in_channels' in model_cfg.neck:
        return list(model_cfg.neck.in_channels)
    head = model_cfg.get('decode_head') or model_cfg.get('head')  # mmseg's decode head, mmpretrain's classifier
    if head is not None and 'in_channels' in head:
        channels = head.in_channels
        return list(channels) if isinstance(channels, (list, tuple)) else [channels]
    return None


_BACKBONE_RUNS = {}  # (scope, backbone config) -> its out_channels: many configs share one backbone


def run_backbone(backbone):
    with torch.no_grad():
        outs = backbone(torch.randn(*INPUT))
    assert [o.shape[1] for o in outs] == backbone.out_channels
    assert all(torch.isfinite(o).all() for o in outs)
    return list(backbone.out_channels)


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds_and_its_backbone_runs(path):
    cfg, registry = load(path)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # as the config's runner would
        check_config(path, cfg, registry)


def check_config(path, cfg, registry):
    full = path in FULL_MODEL
    key = (cfg.default_scope, repr(cfg.model.backbone.to_dict()))
    if full:
        model = registry.build(cfg.model).eval()
        backbone = model.backbone
        out_channels = _BACKBONE_RUNS[key] = run_backbone(backbone)
    elif key in _BACKBONE_RUNS:  # the same backbone config was built and run for another config
        out_channels = _BACKBONE_RUNS[key]
    else:
        backbone = registry.build(cfg.model.backbone).eval()
        out_channels = _BACKBONE_RUNS[key] = run_backbone(backbone)
    expected = neck_in_channels(cfg.model)
    if expected is not None:
        if len(expected) == 1:  # a head on one level (e.g. in_index)
            assert expected[0] in out_channels, (expected, out_channels)
        else:
            assert expected == out_channels, (expected, out_channels)
    if full:
        with torch.no_grad():
            x = torch.randn(*INPUT)
            if cfg.default_scope == 'mmseg':
                logits = model._forward(x)
                assert logits.shape[:2] == (1, cfg.model.decode_head.num_classes)
            elif cfg.default_scope == 'mmpretrain':
                logits = model(x, mode='tensor')
                assert logits.shape == (1, cfg.model.head.num_classes)
            else:
                feats = model.extract_feat(x)  # backbone + neck
                assert all(torch.isfinite(f).all() for f in feats)
