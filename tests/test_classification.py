"""mmpretrain: LaViT and CB-ViT classifiers from the ImageNet configs, loss_dp in a classifier's losses, the generated
ImageNet-layout shapes set, and a LaViT-T classifier that learns it (trained and evaluated with our tools, as a user
would), whose backbone then feeds the detection config."""
import json
import os.path as osp
import types

import pytest
import torch
from helpers import ROOT, last_metrics, printed_metric, run_tool
from learning_setup import CLS, RUN_ENV
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from vitattn_mm import CBViT, DiagonalityPreservingLoss, LaViT
from vitattn_mm.datasets.shapes import SHAPE_CLASSES, check_imagenet_root, ensure_imagenet, read_meta
from vitattn_mm.engine import AuxiliaryLossHook

# The learning run (learning_setup.CLS, one torch thread): the config's schedule, LaViT-T from scratch, 120 iterations
# of 16 images (800 training images, 2.4 epochs), evaluated on 200 held-out images. Chance is 25% (balanced
# classes). Measured over seeds 0, 1, 2 with `python tools/analysis/learning_thresholds.py cls` (Intel Xeon, 2 cores,
# 2026-11-29; docs/results.md), top-1 of seeds 0 / 1 / 2:
#   trained end to end (the same before and after the rounding-only changes of the training step, 2026-11-29)
#                                                               93.5 / 92.0 / 92.5
#   backbone frozen at random init (only the linear head learns) 71.0 / 75.5 / 74.5
# The class colour families make much of the task a colour lookup, hence the high frozen baseline. The threshold
# lies about halfway between the two groups: +8.5 above the best frozen run, -8.0 below the worst trained one.
MIN_ACCURACY = 84.0


def test_registered_in_mmpretrain():
    from mmpretrain.registry import HOOKS, MODELS
    assert MODELS.get('LaViT') is LaViT and MODELS.get('CBViT') is CBViT
    assert MODELS.get('DiagonalityPreservingLoss') is DiagonalityPreservingLoss
    assert HOOKS.get('AuxiliaryLossHook') is AuxiliaryLossHook


def batch(num_classes, size=64, n=2):
    from mmpretrain.structures import DataSample
    inputs = [torch.randint(0, 255, (3, size, size), dtype=torch.uint8) for _ in range(n)]
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(n)]
    return dict(inputs=inputs, data_samples=samples)


def build(config, **backbone):
    cfg = Config.fromfile(osp.join(ROOT, config))
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.update(backbone)
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    from mmpretrain.registry import MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, cfg


def test_imagenet_configs_follow_the_recipe():
    """Config parsing only: the 300-epoch DeiT/PVT recipe and the two 30-epoch fine-tunes."""
    for name, epochs in (('lavit/lavit_t_8xb128_in1k.py', 300), ('lavit/lavit_s_8xb128_in1k.py', 300),
                         ('lavit/lavit_b_8xb128_in1k.py', 300), ('cbvit/cbvit_s_8xb128_in1k.py', 300),
                         ('lavit/lavit_s-pvtv2init_8xb128-30e_in1k.py', 30),
                         ('cbvit/cbvit_s-deitinit_8xb128-30e_in1k.py', 30)):
        cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
        assert cfg.default_scope == 'mmpretrain' and cfg.train_cfg.max_epochs == epochs, name
        assert cfg.train_dataloader.batch_size == 128 and cfg.auto_scale_lr.base_batch_size == 1024
        optim = cfg.optim_wrapper.optimizer
        assert optim.type == 'AdamW' and optim.weight_decay == 0.05
        assert optim.lr == pytest.approx(5e-4 * 1024 / 512 * (1 if epochs == 300 else 0.1))
        warmup, cosine = cfg.param_scheduler
        assert warmup.type == 'LinearLR' and warmup.end == (5 if epochs == 300 else 1) and cosine.type == \
            'CosineAnnealingLR'
        assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup', 'CutMix']
        assert [a.alpha for a in cfg.model.train_cfg.augments] == [0.8, 1.0]
        assert cfg.model.head.loss.label_smooth_val == 0.1
        assert 'RandAugment' in [t.type for t in cfg.train_dataloader.dataset.pipeline]
        assert dict(type='AuxiliaryLossHook') in cfg.custom_hooks
        backbone = cfg.model.backbone
        if backbone.type == 'LaViT':
            assert backbone.dp_loss.loss_weight == 0.1
            assert backbone.drop_path_rate == (0.3 if backbone.arch == 'b' else 0.1)
        init = backbone.init_cfg
        if 'pvtv2init' in name:
            assert init.checkpoint.endswith('pvt_v2_b2.pth')
        elif 'deitinit' in name:
            assert 'deit_small_patch16_224' in init.checkpoint
        else:
            assert init is None, name


@pytest.mark.parametrize('config, backbone', [
    ('configs/lavit/lavit_s_8xb128_in1k.py', dict(arch='t')),
    ('configs/cbvit/cbvit_s_8xb128_in1k.py', dict(arch='deit-t')),
], ids=['lavit', 'cbvit'])
def test_classifier_train_step_with_mixup_and_loss_dp(config, backbone):
    """The ImageNet configs' classifiers (smaller backbones for speed), one training step with Mixup/CutMix through
    the hook, as the runner does it; ~1 s each."""
    model, cfg = build(config, **backbone)
    if 'cbvit' in config:
        model.head.fc = torch.nn.Linear(192, 1000)  # DeiT-T width
    hook = AuxiliaryLossHook()
    hook.before_run(types.SimpleNamespace(model=model, logger=MMLogger.get_current_instance()))
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    log_vars = model.train_step(batch(1000), optim)
    hook.after_run(None)
    assert torch.isfinite(log_vars['loss'])
    is_lavit = isinstance(model.backbone, LaViT)
    assert ('loss_dp' in log_vars) == is_lavit
    if is_lavit:  # the head's loss is kept apart as loss_cls, so that the logged loss is the optimised total
        assert torch.allclose(log_vars['loss'], log_vars['loss_cls'] + log_vars['loss_dp'], atol=1e-5)
        assert 0 <= log_vars['loss_dp'] <= 0.1
    else:
        assert 'loss_cls' not in log_vars  # nothing renamed without auxiliary losses
    model.eval()
    with torch.no_grad():
        preds = model.val_step(batch(1000, size=77))
    assert preds[0].pred_score.shape == (1000, )


def test_classification_set_layout(tmp_path):
    """The generated ImageNet-layout set: balanced classes, class = shape; checked as mmpretrain reads it."""
    from mmpretrain.datasets import ImageNet
    root = ensure_imagenet(tmp_path / 'shapes_in1k', num_train=12, num_val=8, seed=3)
    check_imagenet_root(root)
    meta = read_meta(root)
    assert meta['layout'] == 'imagenet' and meta['stats'] == {'train_per_class': [3] * 4, 'val_per_class': [2] * 4}
    dataset = ImageNet(data_root=str(root), split='val', metainfo=dict(classes=SHAPE_CLASSES), pipeline=[])
    assert len(dataset) == 8 and dataset.CLASSES == SHAPE_CLASSES
    infos = [dataset.get_data_info(i) for i in range(8)]
    assert [i['gt_label'] for i in infos] == [0, 1, 2, 3] * 2
    assert all(osp.basename(osp.dirname(i['img_path'])) == SHAPE_CLASSES[i['gt_label']] for i in infos)


@pytest.fixture(scope='module')
def trained_classifier(tmp_path_factory):
    """tools/train.py on the shapes classification config (the learning run, learning_setup.CLS)."""
    folder = tmp_path_factory.mktemp('cls')
    root = CLS.prepare_data(str(folder))
    work_dir = str(folder / 'work')
    proc = run_tool(['tools/train.py', CLS.config, '--work-dir', work_dir, '--cfg-options',
                     *CLS.options(root, seed=0)], env=RUN_ENV)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return types.SimpleNamespace(root=root, work_dir=work_dir, checkpoint=checkpoint, data=CLS.data_options(root),
                                 log=proc.stdout + proc.stderr)


def scalars(work_dir):
    import glob
    rows = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            rows += [json.loads(line) for line in f]
    return rows


@pytest.mark.xdist_group('cls_learning')
def test_lavit_t_classifier_learns_shapes(trained_classifier):
    """The learning test: chance 25%, frozen-random baseline 71.0-75.5%, trained 92.0-93.5% (see MIN_ACCURACY)."""
    rows = scalars(trained_classifier.work_dir)
    accuracy = [r['accuracy/top1'] for r in rows if 'accuracy/top1' in r]
    assert accuracy, trained_classifier.log[-3000:]
    assert accuracy[-1] >= MIN_ACCURACY, accuracy
    losses = [r for r in rows if 'loss_dp' in r]
    assert losses and all(0 <= r['loss_dp'] <= 0.1 for r in losses)  # the DP loss reached the classifier's losses


@pytest.mark.xdist_group('cls_learning')
def test_classifier_checkpoint_tests_and_feeds_the_detector(trained_classifier, tmp_path):
    """tools/test.py serves the mmpretrain config; extract_backbone turns the classifier checkpoint into LaViT-T
    weights that the shapes Mask R-CNN config loads."""
    ckpt = trained_classifier.checkpoint
    proc = run_tool(['tools/test.py', CLS.config, ckpt, '--work-dir', str(tmp_path / 'test'), '--cfg-options',
                     *trained_classifier.data])
    logged = last_metrics(trained_classifier.work_dir)['accuracy/top1']  # the training run's own evaluation
    assert printed_metric(proc.stdout + proc.stderr, 'accuracy/top1') == pytest.approx(logged, abs=1e-3)

    backbone = tmp_path / 'lavit_t_shapes_cls.pth'
    proc = run_tool(['tools/model_converters/extract_backbone.py', ckpt, str(backbone)])
    assert "'head.' (2 keys)" in proc.stdout, proc.stdout
    trained = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']

    from mmdet.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/lavit/maskrcnn_lavit_t_shapes.py'))
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(backbone))
    init_default_scope('mmdet')
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    for key, value in detector.backbone.state_dict().items():
        assert torch.equal(value, trained[f'backbone.{key}']), key
