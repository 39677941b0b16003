"""Tests for the synthetic shapes dataset generator and dataset checks.

The ``shapes`` package is loaded by file path: ``vitattn_mm/__init__``
imports torch and the mm* registries, which these tests neither need nor
want.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHAPES_PY = REPO / 'vitattn_mm' / 'datasets' / 'shapes' / '__init__.py'
CLI_PY = REPO / 'tools' / 'misc' / 'generate_shapes_data.py'
N_TRAIN, N_VAL = 10, 6


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


shapes = _load('_test_shapes_module', SHAPES_PY)


def _tree_bytes(root):
    """Map relative path -> bytes for every file under ``root``."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob('*')) if p.is_file()
    }


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('gen') / 'shapes_coco'
    return shapes.generate_coco(root, N_TRAIN, N_VAL, seed=0)


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('gen') / 'shapes_ade'
    return shapes.generate_ade(root, N_TRAIN, N_VAL, seed=0)


@pytest.mark.parametrize('layout', ['coco', 'ade'])
def test_same_seed_same_bytes_other_seed_differs(tmp_path, layout):
    gen = shapes.generate_coco if layout == 'coco' else shapes.generate_ade
    a = _tree_bytes(gen(tmp_path / 'a', N_TRAIN, N_VAL, seed=0))
    b = _tree_bytes(gen(tmp_path / 'b', N_TRAIN, N_VAL, seed=0))
    c = _tree_bytes(gen(tmp_path / 'c', N_TRAIN, N_VAL, seed=1))
    assert a == b
    assert a.keys() == c.keys()
    # Every image and annotation file changes with the seed.
    assert all(a[k] != c[k] for k in a)
    # No temporary folders are left next to the datasets.
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a', 'b', 'c']


def test_coco_layout_and_annotations(coco_root):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    meta = shapes.read_meta(coco_root)
    assert meta['num_train'] == N_TRAIN and meta['num_val'] == N_VAL
    for split, count in (('train', N_TRAIN), ('val', N_VAL)):
        coco = COCO(str(coco_root / f'annotations/instances_{split}2017.json'))
        assert len(coco.imgs) == count
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(
            shapes.SHAPE_CLASSES)
        assert coco.getCatIds() == [1, 2, 3, 4]
        assert len(coco.anns) >= count
        for img_id, info in coco.imgs.items():
            h, w = info['height'], info['width']
            assert (h, w) == shapes.DEFAULT_IMAGE_SIZE
            img_path = coco_root / f'{split}2017' / info['file_name']
            with Image.open(img_path) as im:
                assert im.size == (w, h) and im.mode == 'RGB'
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            assert 1 <= len(anns) <= 4
            union = np.zeros((h, w), np.int32)
            for ann in anns:
                assert ann['iscrowd'] == 0
                assert ann['category_id'] in (1, 2, 3, 4)
                x, y, bw, bh = ann['bbox']
                assert 0 <= x and 0 <= y and bw > 0 and bh > 0
                assert x + bw <= w and y + bh <= h
                assert ann['area'] >= 0.01 * h * w
                seg = ann['segmentation']
                assert isinstance(seg, list) and seg
                for poly in seg:
                    assert len(poly) >= 6 and len(poly) % 2 == 0
                    assert all(isinstance(v, float) for v in poly)
                mask = coco.annToMask(ann)
                assert abs(mask.sum() - ann['area']) <= 0.02 * ann['area']
                ys, xs = np.nonzero(mask)
                assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(),
                        ys.max() + 1 - ys.min()] == ann['bbox']
                assert mask_utils.area(coco.annToRLE(ann)) == mask.sum()
                union += mask
            # Occlusion: visible masks of one image never overlap.
            assert union.max() <= 1


def test_visible_masks_follow_painting_order():
    h, w = shapes.DEFAULT_IMAGE_SIZE
    overlapping_scenes = 0
    for index in range(40):
        image, instances = shapes.render_scene(
            np.random.default_rng(index), (h, w))
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
        assert 1 <= len(instances) <= 4
        full = [shapes._rasterize(inst.polygon, h, w) for inst in instances]
        covered_later = np.zeros((h, w), bool)
        for inst, drawn in zip(instances[::-1], full[::-1]):
            assert 0 <= inst.label < len(shapes.SHAPE_CLASSES)
            assert len(inst.polygon) >= 3
            np.testing.assert_array_equal(inst.mask, drawn & ~covered_later)
            assert inst.area >= 0.01 * h * w
            covered_later |= drawn
        if sum(f.sum() for f in full) > covered_later.sum():
            overlapping_scenes += 1
        counts = np.sum([inst.mask for inst in instances], axis=0)
        assert counts.max() <= 1
    assert overlapping_scenes >= 3  # occlusions do happen


def test_mask_to_polygons_round_trip():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        polys = shapes.mask_to_polygons(mask)
        if not mask.any():
            assert polys == []
            continue
        rles = mask_utils.frPyObjects(polys, h, w)
        decoded = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
        np.testing.assert_array_equal(decoded, mask)


def test_ade_layout(ade_root):
    meta = shapes.read_meta(ade_root)
    assert meta['layout'] == 'ade'
    for split, count in (('training', N_TRAIN), ('validation', N_VAL)):
        imgs = sorted((ade_root / 'images' / split).iterdir())
        anns = sorted((ade_root / 'annotations' / split).iterdir())
        assert len(imgs) == count
        assert [p.suffix for p in imgs] == ['.jpg'] * count
        assert [p.suffix for p in anns] == ['.png'] * count
        assert [p.stem for p in imgs] == [p.stem for p in anns]
        for img_path, ann_path in zip(imgs, anns):
            with Image.open(ann_path) as ann, Image.open(img_path) as img:
                assert ann.mode == 'L' and ann.size == img.size
                labels = np.asarray(ann)
            assert labels.dtype == np.uint8
            assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3, 4}
            assert 0 in labels and labels.max() >= 1
    shapes.check_ade_root(ade_root)


def test_check_coco_root_missing(tmp_path):
    with pytest.raises(shapes.DatasetNotFoundError) as info:
        shapes.check_coco_root(tmp_path, list(shapes.COCO_ANN_FILES),
                               list(shapes.COCO_IMG_DIRS))
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert 'generate_shapes_data.py' in message
    assert 'instances_train2017.json' in message
    assert 'cocodataset.org' in message
    assert 'annotations_trainval2017.zip' in message
    # A missing root is named as such.
    with pytest.raises(shapes.DatasetNotFoundError,
                       match='generate_shapes_data.py') as info:
        shapes.check_coco_root(tmp_path / 'nowhere')
    assert info.value.path == str(tmp_path / 'nowhere')


def test_check_ade_root_missing(tmp_path):
    with pytest.raises(shapes.DatasetNotFoundError) as info:
        shapes.check_ade_root(tmp_path)
    message = str(info.value)
    assert 'generate_shapes_data.py' in message
    assert 'ADEChallengeData2016' in message
    assert str(tmp_path / 'images' / 'training') in message


def test_check_coco_root_ok_and_corrupt_json(coco_root, tmp_path):
    shapes.check_coco_root(coco_root, list(shapes.COCO_ANN_FILES),
                           list(shapes.COCO_IMG_DIRS))
    ann = 'annotations/instances_val2017.json'
    data = (coco_root / ann).read_bytes()
    bad_root = tmp_path / 'bad'
    (bad_root / 'annotations').mkdir(parents=True)
    (bad_root / 'val2017').mkdir()
    (bad_root / 'val2017' / 'x.jpg').write_bytes(b'')
    bad_file = bad_root / ann

    bad_file.write_bytes(data[:len(data) // 2])  # truncated
    with pytest.raises(ValueError, match='instances_val2017.json'):
        shapes.check_coco_root(bad_root, [ann], ['val2017'])
    # The cheap check for huge files catches truncation as well.
    with pytest.raises(ValueError, match='instances_val2017.json'):
        shapes.validate_coco_json(bad_file, full_parse_limit=0)

    bad_file.write_text(json.dumps({'images': [], 'annotations': []}))
    with pytest.raises(ValueError, match='categories'):
        shapes.validate_coco_json(bad_file)
    with pytest.raises(ValueError, match='categories'):
        shapes.validate_coco_json(bad_file, full_parse_limit=0)

    bad_file.write_bytes(data)
    shapes.validate_coco_json(bad_file, full_parse_limit=0)
    shapes.check_coco_root(bad_root, [ann], ['val2017'])


def test_ensure_generates_only_when_needed(tmp_path):
    root = tmp_path / 'shapes_coco'
    kw = dict(num_train=3, num_val=2, image_size=(64, 80), seed=0)
    shapes.ensure_coco(root, **kw)
    stamp = (root / 'meta.json').stat().st_ino, (root / 'meta.json').stat(
    ).st_mtime_ns
    assert shapes.dataset_is_current(root, 'coco', **kw)
    shapes.ensure_coco(root, **kw)
    assert stamp == ((root / 'meta.json').stat().st_ino,
                     (root / 'meta.json').stat().st_mtime_ns)
    with Image.open(root / 'train2017' / '000000000001.jpg') as im:
        assert im.size == (80, 64)

    kw['seed'] = 3
    assert not shapes.dataset_is_current(root, 'coco', **kw)
    shapes.ensure_coco(root, **kw)
    assert shapes.read_meta(root)['seed'] == 3
    shapes.ensure_coco(root, force=True, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['shapes_coco']

    # Never replaces a folder this generator did not write.
    foreign = tmp_path / 'coco'
    foreign.mkdir()
    (foreign / 'keep.txt').write_text('real data')
    with pytest.raises(FileExistsError):
        shapes.ensure_coco(foreign, **kw)
    assert (foreign / 'keep.txt').read_text() == 'real data'


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    calls = []
    save = shapes._save_jpeg

    def failing_save(image, path):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        save(image, path)

    monkeypatch.setattr(shapes.layouts, '_save_jpeg', failing_save)
    with pytest.raises(KeyboardInterrupt):
        shapes.generate_ade(tmp_path / 'shapes_ade', 5, 2, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_both_layouts(tmp_path, capsys):
    cli = _load('_test_generate_shapes_cli', CLI_PY)
    argv = ['--out', str(tmp_path), '--num-train', '3', '--num-val', '2',
            '--size', '48', '64', '--seed', '5']
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert 'wrote' in out and 'shapes_coco' in out and 'shapes_ade' in out
    shapes.check_coco_root(tmp_path / 'shapes_coco')
    shapes.check_ade_root(tmp_path / 'shapes_ade')
    meta = shapes.read_meta(tmp_path / 'shapes_ade')
    assert meta['image_size'] == [48, 64] and meta['seed'] == 5
    assert cli.main(argv + ['--task', 'det']) == 0
    assert 'up to date' in capsys.readouterr().out


def test_import_needs_no_torch_or_mm():
    code = (
        'import importlib.util, sys\n'
        'spec = importlib.util.spec_from_file_location(\n'
        f'    "s", {str(SHAPES_PY)!r})\n'
        'm = importlib.util.module_from_spec(spec); sys.modules["s"] = m\n'
        'spec.loader.exec_module(m)\n'
        'heavy = {"torch", "mmdet", "mmseg", "mmcv", "mmengine", "cv2"}\n'
        'print(sorted(heavy & {k.split(".")[0] for k in sys.modules}))\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                            text=True, check=True, env=dict(os.environ))
    assert result.stdout.strip() == '[]'
