"""Mask R-CNN with LaViT on the generated shapes set, end to end through the project's tools.

Real mmdet/mmengine training loops on the CPU. The learning run (``learning_setup.DET``) is the expensive part;
everything else trains LaViT-T for a few iterations at batch 1.
"""
import glob
import os.path as osp
import re
import shutil

import pytest
import torch
from helpers import (NO_VALIDATION, ROOT, interrupted_work_dir, last_metrics, logged_iterations, printed_metric, run_tool,
                     train_losses, use_analysis_tools)
from learning_setup import DET, RUN_ENV, coco_data_options

# A run that hangs is stopped after this many seconds: at least 3x the slowest run we measured (the learning run,
# about 4 minutes on an AMD EPYC 2-core machine).
HANG_TIMEOUT = 3600

# Learning thresholds, for LaViT-T Mask R-CNN with learning_setup.DET's options (one torch thread, RUN_ENV), measured
# over seeds 0, 1 and 2 with `python tools/analysis/learning_thresholds.py det` (Intel Xeon, 2 cores, 2026-11-29, the
# config's 140 iterations; docs/results.md):
#                                       bbox mAP seeds 0 / 1 / 2     segm mAP seeds 0 / 1 / 2
#   trained end to end (this code)      0.129 / 0.155 / 0.138        0.151 / 0.201 / 0.203
#   same, earlier arithmetic (the same  0.168 / 0.148 / 0.139        0.228 / 0.163 / 0.184
#   values up to rounding: other        0.149 / 0.166 / 0.168        0.206 / 0.204 / 0.211
#   trajectories, as another CPU gives) 0.152 / 0.127 / 0.162        0.202 / 0.158 / 0.210
#   backbone frozen at random init      0.197 / 0.203 / 0.206        0.278 / 0.271 / 0.275
#   a broken backbone (features independent of the image): nothing to localise, mAP ~0
# At this CPU budget (140 iterations of 2 images) the from-scratch backbone does not yet beat its own frozen random
# initialisation: the heads learn faster on fixed random features than on features that move (a lower backbone
# learning rate, or a backbone initialised from the shapes classifier, brings the trained runs closer to the frozen
# ones, never clearly past them: docs/results.md). So this test proves that the detector learns end to end (far above
# a broken backbone) and cannot prove that the backbone's own learning helps; the segmentation and classification
# learning tests do that, and tests/test_aux_loss.py checks that the detection losses reach every backbone parameter
# inside Mask R-CNN. Thresholds: about 3/4 of the worst of the nine earlier trained runs (0.127 bbox, 0.158 segm);
# this code's worst runs lie 0.034 / 0.031 above them, and the test trains seed 0 (0.129 / 0.151 here).
MIN_BBOX_MAP = 0.095
MIN_SEGM_MAP = 0.12


@pytest.fixture(scope='session')
def shapes_coco(tmp_path_factory):
    return DET.prepare_data(str(tmp_path_factory.getbasetemp() / 'data'))


@pytest.fixture(scope='module')
def trained(shapes_coco, tmp_path_factory):
    """LaViT-T Mask R-CNN trained on the shapes set and evaluated once at its last iteration."""
    work_dir = str(tmp_path_factory.mktemp('maskrcnn_learn'))
    run_tool(['tools/train.py', DET.config, '--work-dir', work_dir, '--cfg-options',
              *DET.options(shapes_coco, seed=0)], timeout=HANG_TIMEOUT,
             env=RUN_ENV)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return work_dir, checkpoint


@pytest.mark.xdist_group('det_learning')
def test_learns_to_detect_shapes(trained):
    work_dir, _ = trained
    metrics = last_metrics(work_dir)
    assert metrics['coco/bbox_mAP'] >= MIN_BBOX_MAP, metrics
    assert metrics['coco/segm_mAP'] >= MIN_SEGM_MAP, metrics
    # the diagonality-preserving loss reached the detector's losses, was logged, and is part of the total
    rows = train_losses(work_dir)
    dp = [r['loss_dp'] for r in rows if 'loss_dp' in r]
    assert dp and all(0 <= v <= 0.1 for v in dp)  # bounded by its weight
    assert all(abs(r['loss'] - sum(v for k, v in r.items() if k.startswith('loss_'))) < 1e-3 for r in rows
               if 'loss_dp' in r)


@pytest.mark.xdist_group('det_learning')
def test_test_tools_reproduce_the_training_evaluation(trained, shapes_coco, tmp_path):
    """Our tools/test.py and mmdet's own tools/test.py evaluate the checkpoint to the values that the training
    run's own evaluation logged (same weights, same images, same CocoMetric)."""
    work_dir, checkpoint = trained
    logged = last_metrics(work_dir)
    data = ['--cfg-options', *coco_data_options(shapes_coco)]
    ours = run_tool(['tools/test.py', DET.config, checkpoint, '--work-dir', str(tmp_path / 'ours'), *data])
    import mmdet
    mmdet_test = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py')
    theirs = run_tool([mmdet_test, DET.config, checkpoint, '--work-dir', str(tmp_path / 'mmdet'), *data])
    for proc in (ours, theirs):
        for name in ('coco/bbox_mAP', 'coco/segm_mAP'):
            assert printed_metric(proc.stdout + proc.stderr, name) == pytest.approx(logged[name], abs=1e-4), name


@pytest.mark.xdist_group('det_learning')
def test_prediction_at_odd_image_size_and_demo(trained, tmp_path, shapes_coco):
    _, checkpoint = trained
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(osp.join(ROOT, DET.config), checkpoint, device='cpu')
    img = mmcv.imread(sorted(glob.glob(osp.join(shapes_coco, 'val2017', '*.jpg')))[0])
    odd = mmcv.imresize(img, (203, 157))  # w, h
    result = inference_detector(model, odd)
    assert result.pred_instances.masks.shape[1:] == (157, 203)
    boxes = result.pred_instances.bboxes
    assert len(boxes) and (boxes[:, 2] <= 203 + 1e-3).all() and (boxes[:, 3] <= 157 + 1e-3).all()

    grid = tmp_path / 'grid.png'
    run_tool(['tools/demo/image_demo.py', osp.join(shapes_coco, 'val2017'), DET.config, checkpoint, '--limit', '3',
              '--out-dir', str(tmp_path / 'png'), '--grid', str(grid)])
    drawn = sorted(glob.glob(str(tmp_path / 'png' / '*.png')))
    assert len(drawn) == 3
    assert mmcv.imread(drawn[0]).shape[:2] == (480, 480)  # 160x160 images are upscaled for legible labels
    canvas = mmcv.imread(str(grid))
    assert canvas.shape[1] > 3 * 480 and canvas.std() > 10


# Short runs that test training mechanics: LaViT-T, batch 1, a checkpoint every 2 iterations, every iteration logged.
def short_run_options(data_root, iters, seed=1):
    return ['--cfg-options', *coco_data_options(data_root), *NO_VALIDATION, f'train_cfg.max_iters={iters}',
            'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1',
            'train_dataloader.batch_size=1', f'randomness.seed={seed}']


def test_resume_continues_exactly(shapes_coco, tmp_path):
    """A run stopped after its checkpoint of iteration 2 and resumed with ``--resume`` starts at iteration 3, runs
    only 3 and 4, and ends with the same weights as the uninterrupted run of 4 (which saved that checkpoint)."""
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    run_tool(['tools/train.py', DET.config, '--work-dir', full, *short_run_options(shapes_coco, 4)])
    interrupted_work_dir(full, part, 2)
    resumed = run_tool(['tools/train.py', DET.config, '--work-dir', part, '--resume',
                        *short_run_options(shapes_coco, 4)])
    log = resumed.stdout + resumed.stderr
    assert re.search(r'resumed epoch: \d+, iter: 2', log), log[-3000:]  # mmengine's line
    assert logged_iterations(log) == [3, 4]  # only the iterations after the stored one ran
    a = torch.load(osp.join(full, 'iter_4.pth'), map_location='cpu', weights_only=True)
    b = torch.load(osp.join(part, 'iter_4.pth'), map_location='cpu', weights_only=True)
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    for key, value in a['state_dict'].items():
        assert torch.allclose(value, b['state_dict'][key], atol=1e-6), key
    # the weights did change during the resumed iterations
    start = torch.load(osp.join(part, 'iter_2.pth'), map_location='cpu', weights_only=True)['state_dict']
    assert any(not torch.equal(start[k], a['state_dict'][k]) for k in start)


def test_two_process_distributed_training(shapes_coco, tmp_path):
    work_dir = str(tmp_path / 'dist')
    proc = run_tool(['tools/dist_train.sh', DET.config, '2', '--work-dir', work_dir,
                     *short_run_options(shapes_coco, 2)], env={'PORT': '29517'}, timeout=HANG_TIMEOUT)
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log and 'GPU number: 2' in log  # mmengine's names for world size 2
    assert logged_iterations(log) == [1, 2]
    state = torch.load(osp.join(work_dir, 'iter_2.pth'), map_location='cpu', weights_only=True)
    assert state['meta']['iter'] == 2


def test_missing_coco_gives_instructions(tmp_path):
    proc = run_tool(['tools/train.py', 'configs/lavit/maskrcnn_lavit_s_coco.py', '--work-dir', str(tmp_path),
                     '--cfg-options', 'train_dataloader.dataset.data_root=data/no_coco_here/'], check=False)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    assert 'data/no_coco_here/annotations/instances_train2017.json' in proc.stderr
    assert 'cocodataset.org' in proc.stderr and 'generate_shapes_data.py' in proc.stderr


@pytest.mark.parametrize('damage', ['truncated', 'missing'])
def test_corrupt_or_missing_annotation_file(shapes_coco, tmp_path, damage):
    root = tmp_path / 'coco'
    shutil.copytree(shapes_coco, root)
    ann = root / 'annotations' / 'instances_val2017.json'
    if damage == 'truncated':
        ann.write_text(ann.read_text()[:500])
    else:
        ann.unlink()
    proc = run_tool(['tools/test.py', DET.config, 'unused.pth', '--work-dir', str(tmp_path / 'wd'),
                     '--cfg-options', f'test_dataloader.dataset.data_root={root}/'], check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'instances_val2017.json' in proc.stderr
    assert ('not found' in proc.stderr) if damage == 'missing' else ('JSON' in proc.stderr or 'json' in proc.stderr)


def test_training_step_profile_splits_one_iteration(shapes_coco):
    """tools/analysis/profile_train_step.py times the parts of a real Mask R-CNN training iteration: every part is
    measured, the backbone's forward and backward hooks fire, and the parts add up to the iteration."""
    import time
    use_analysis_tools()
    import profile_train_step as prof
    from mmengine.registry import DefaultScope
    data = dict(opt.split('=', 1) for opt in coco_data_options(shapes_coco))
    with DefaultScope.overwrite_default_scope('mmdet'):
        cfg, model, optim_wrapper, loader = prof.build(osp.join(ROOT, DET.config),
                                                       {**data, 'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': False,
                                                        'train_dataloader.batch_size': 1})
        timer = prof.StepTimer(model)
        start = time.perf_counter()
        parts = prof.train_iteration(model, optim_wrapper, prof.endless(loader), timer)
        elapsed = time.perf_counter() - start
    assert set(parts) == set(prof.PARTS)
    assert all(v >= 0 for v in parts.values()), parts
    for part in ('backbone forward', 'neck forward', 'heads forward', 'heads + neck backward', 'backbone backward'):
        assert parts[part] > 0, (part, parts)
    assert sum(parts.values()) == pytest.approx(elapsed, rel=0.05)
