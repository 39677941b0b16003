"""Mask R-CNN with LaViT on the generated shapes set, end to end through the project's tools.

These tests train real models with real mmdet/mmengine loops on CPU; together they take several minutes.
"""
import glob
import json
import os.path as osp
import shutil

import pytest
import torch
from helpers import NO_VALIDATION, ROOT, last_metrics, run_tool

from vitattn_mm.datasets.shapes import ensure_coco

CONFIG = 'configs/lavit/maskrcnn_lavit_s_shapes.py'

# Learning thresholds. Measured here (400 iterations, batch 4, seed 0, shapes generator v2, 1 thread):
#   LaViT-S trained end to end:                               bbox mAP 0.436, segm mAP 0.562
#   the same detector, backbone frozen at random init
#   (model.backbone.frozen_stages=4, heads and FPN trained):  bbox mAP 0.416, segm mAP 0.494
#   a broken backbone (features independent of the image):    nothing to localise, mAP ~0
# The FPN and heads learn a lot on frozen random features of this easy set, so bbox mAP separates the trained
# backbone from the frozen one by only 0.02, too little to assert; mask mAP separates them by 0.068. So: bbox mAP
# must clear 0.30 (far above a broken backbone, margin 0.136 below the trained run), and segm mAP must clear 0.515
# (+0.021 above the frozen-random backbone, -0.047 below the trained run).
LEARN_ITERS = 400
MIN_BBOX_MAP = 0.30
MIN_SEGM_MAP = 0.515


@pytest.fixture(scope='session')
def shapes_coco():
    return ensure_coco(osp.join(ROOT, 'data', 'shapes_coco'))


@pytest.fixture(scope='module')
def trained(shapes_coco, tmp_path_factory):
    """LaViT-S Mask R-CNN trained on the shapes set with the README's config (~10 minutes on 2 cores)."""
    work_dir = str(tmp_path_factory.mktemp('maskrcnn_learn'))
    run_tool(['tools/train.py', CONFIG, '--work-dir', work_dir, '--cfg-options', f'train_cfg.max_iters={LEARN_ITERS}',
              f'train_cfg.val_interval={LEARN_ITERS}', 'randomness.seed=0'], timeout=1500)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return work_dir, checkpoint


def test_learns_to_detect_shapes(trained):
    work_dir, checkpoint = trained
    metrics = last_metrics(work_dir)
    assert metrics['coco/bbox_mAP'] >= MIN_BBOX_MAP, metrics
    assert metrics['coco/segm_mAP'] >= MIN_SEGM_MAP, metrics
    # the diagonality-preserving loss reached the detector's losses and was logged
    with open(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))[0]) as f:
        rows = [json.loads(line) for line in f]
    dp = [r['loss_dp'] for r in rows if 'loss_dp' in r]
    assert dp and all(0 <= v <= 0.1 for v in dp)  # bounded by its weight
    assert all(abs(r['loss'] - sum(v for k, v in r.items() if k.startswith('loss_'))) < 1e-3 for r in rows
               if 'loss_dp' in r)


def test_test_tools_evaluate_the_checkpoint(trained, tmp_path):
    """Our tools/test.py and mmdet's own tools/test.py both evaluate the trained model with CocoMetric."""
    _, checkpoint = trained
    ours = run_tool(['tools/test.py', CONFIG, checkpoint, '--work-dir', str(tmp_path / 'ours')])
    assert 'coco/bbox_mAP' in ours.stdout + ours.stderr
    import mmdet
    mmdet_test = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py')
    theirs = run_tool([mmdet_test, CONFIG, checkpoint, '--work-dir', str(tmp_path / 'mmdet')])
    assert 'coco/segm_mAP' in theirs.stdout + theirs.stderr


def test_prediction_at_odd_image_size_and_demo(trained, tmp_path, shapes_coco):
    _, checkpoint = trained
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(osp.join(ROOT, CONFIG), checkpoint, device='cpu')
    img = mmcv.imread(sorted(glob.glob(osp.join(shapes_coco, 'val2017', '*.jpg')))[0])
    odd = mmcv.imresize(img, (203, 157))  # w, h
    result = inference_detector(model, odd)
    assert result.pred_instances.masks.shape[1:] == (157, 203)
    boxes = result.pred_instances.bboxes
    assert len(boxes) and (boxes[:, 2] <= 203 + 1e-3).all() and (boxes[:, 3] <= 157 + 1e-3).all()

    grid = tmp_path / 'grid.png'
    run_tool(['tools/demo/image_demo.py', osp.join(shapes_coco, 'val2017'), CONFIG, checkpoint, '--limit', '3',
              '--out-dir', str(tmp_path / 'png'), '--grid', str(grid)])
    assert len(glob.glob(str(tmp_path / 'png' / '*.png'))) == 3
    drawn = mmcv.imread(str(grid))
    assert drawn.shape[1] > 3 * 150 and drawn.std() > 10


def test_resume_continues_exactly(shapes_coco, tmp_path):
    """A run stopped after 2 iterations and resumed to 4 ends with the same weights as a run of 4."""
    common = ['--cfg-options', *NO_VALIDATION, 'default_hooks.checkpoint.interval=2',
              'train_dataloader.batch_size=2', 'randomness.seed=1']
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    run_tool(['tools/train.py', CONFIG, '--work-dir', full, *common, 'train_cfg.max_iters=4'])
    run_tool(['tools/train.py', CONFIG, '--work-dir', part, *common, 'train_cfg.max_iters=2'])
    assert osp.exists(osp.join(part, 'iter_2.pth')) and not osp.exists(osp.join(part, 'iter_4.pth'))
    resumed = run_tool(['tools/train.py', CONFIG, '--work-dir', part, '--resume', *common, 'train_cfg.max_iters=4'])
    assert 'resumed' in (resumed.stdout + resumed.stderr).lower()
    a = torch.load(osp.join(full, 'iter_4.pth'), map_location='cpu', weights_only=False)
    b = torch.load(osp.join(part, 'iter_4.pth'), map_location='cpu', weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    for key, value in a['state_dict'].items():
        assert torch.allclose(value, b['state_dict'][key], atol=1e-6), key
    # and the weights did change during those iterations
    start = torch.load(osp.join(part, 'iter_2.pth'), map_location='cpu', weights_only=False)['state_dict']
    assert any(not torch.equal(start[k], a['state_dict'][k]) for k in start)


def test_two_process_distributed_training(shapes_coco, tmp_path):
    work_dir = str(tmp_path / 'dist')
    proc = run_tool(['tools/dist_train.sh', CONFIG, '2', '--work-dir', work_dir, '--cfg-options',
                     'train_cfg.max_iters=2', *NO_VALIDATION, 'train_dataloader.batch_size=2',
                     'default_hooks.logger.interval=1'], env={'PORT': '29517'}, timeout=900)
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log and 'GPU number: 2' in log  # mmengine's names for world size 2
    assert 'Iter(train) [2/2]' in log
    assert osp.exists(osp.join(work_dir, 'iter_2.pth'))


def test_missing_coco_gives_instructions():
    proc = run_tool(['tools/train.py', 'configs/lavit/maskrcnn_lavit_s_coco.py', '--work-dir', '/tmp/none',
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
    proc = run_tool(['tools/test.py', CONFIG, 'unused.pth', '--cfg-options', f'test_dataloader.dataset.data_root={root}/'],
                    check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'instances_val2017.json' in proc.stderr
    assert ('not found' in proc.stderr) if damage == 'missing' else ('JSON' in proc.stderr or 'json' in proc.stderr)
