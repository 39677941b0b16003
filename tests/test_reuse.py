"""Other OpenMMLab detectors and segmentors with our backbones (the reuse configs), one training step and one
prediction each, with the auxiliary loss reaching a one-stage detector and a segmentor through the hook."""
import os.path as osp
import types

import pytest
import torch
from helpers import ROOT
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from vitattn_mm.engine import AuxiliaryLossHook

# small variants of the configs' backbones, for speed; the neck/head widths follow from them
LAVIT_T = dict(arch='t', init_cfg=None)
CBVIT_T = dict(arch='deit-t', init_cfg=None)
CBVIT_T_CHANNELS = [48, 96, 192, 192]


def attach_hook(model):
    hook = AuxiliaryLossHook()
    hook.before_run(types.SimpleNamespace(model=model, logger=MMLogger.get_current_instance()))
    return hook


def det_batch(h=96, w=128):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    inputs, samples = [], []
    for i in range(2):
        inputs.append(torch.randint(0, 255, (3, h, w), dtype=torch.uint8))
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1., 1.),
                                        img_id=i))
        s.gt_instances = InstanceData(bboxes=torch.tensor([[10., 12., 60., 70.], [40., 20., 110., 90.]]),
                                      labels=torch.tensor([1, 3]))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def seg_batch(h=96, w=128):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 255, (3, h, w), dtype=torch.uint8))
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, h, w)))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def build(config, backbone, neck_channels=None, seg=False):
    cfg = Config.fromfile(osp.join(ROOT, config))
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.update(backbone)
    if neck_channels:
        cfg.model.neck.in_channels = neck_channels
    if seg:
        cfg.model.data_preprocessor.size = None
        cfg.model.data_preprocessor.size_divisor = 32
        cfg.model.decode_head.norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs GPUs
        cfg.model.decode_head.num_classes = 4
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(cfg.model)
    model.init_weights()
    return model, cfg


CASES = [
    ('configs/lavit/retinanet_lavit_s_coco.py', LAVIT_T, None, False),
    ('configs/cbvit/retinanet_cbvit_s_coco.py', CBVIT_T, CBVIT_T_CHANNELS, False),
    ('configs/lavit/fpn_lavit_s_ade20k.py', LAVIT_T, None, True),
    ('configs/cbvit/fpn_cbvit_s_ade20k.py', CBVIT_T, CBVIT_T_CHANNELS, True),
]


@pytest.mark.parametrize('config, backbone, channels, seg', CASES, ids=[c[0].split('/')[-1] for c in CASES])
def test_train_step_and_predict(config, backbone, channels, seg):
    model, cfg = build(config, backbone, channels, seg)
    hook = attach_hook(model)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = seg_batch() if seg else det_batch()
    model.train()
    log_vars = model.train_step(batch, optim)
    assert torch.isfinite(log_vars['loss'])
    is_lavit = backbone is LAVIT_T
    assert ('loss_dp' in log_vars) == is_lavit
    if is_lavit:  # summed into the total (mmengine sums every entry whose name contains 'loss')
        parts = sum(v for k, v in log_vars.items() if 'loss' in k and k != 'loss')
        assert torch.allclose(log_vars['loss'], parts, atol=1e-5)
    hook.after_run(None)
    model.eval()
    with torch.no_grad():
        preds = model.val_step(seg_batch(101, 77) if seg else det_batch(101, 77))
    if seg:
        assert preds[0].pred_sem_seg.data.shape[-2:] == (101, 77)
    else:
        assert hasattr(preds[0], 'pred_instances')


def test_cascade_mask_rcnn_builds_with_lavit():
    model, _ = build('configs/lavit/cascade-maskrcnn_lavit_s_coco.py', LAVIT_T)
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 96, 128))
    assert len(feats) == 5 and feats[0].shape[1] == 256
