"""Writing the shapes datasets in COCO (instances), ADE20K (semantic labels) and ImageNet (classification)
folder layouts, and regenerating them only when ``meta.json`` does not match."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .metadata import (GENERATOR_VERSION, _meta_matches, _replace_atomically,
                       _scene_rng, _write_json, expected_meta)
from .polygons import mask_bbox, mask_to_polygons
from .scene import DEFAULT_IMAGE_SIZE, SHAPE_CLASSES, label_map, render_scene

# The classification set (ImageNet layout): one shape per image, small images, the class colour families of the
# detection/segmentation sets (with any hue, outline only, a LaViT-T classifier stayed at chance after 300 CPU
# iterations; see docs/results.md).
DEFAULT_CLS_IMAGE_SIZE = (64, 64)
CLS_DIAMETER_RANGE = (0.45, 0.85)
IMAGENET_SPLITS = ('train', 'val')

COCO_ANN_FILES = ('annotations/instances_train2017.json',
                  'annotations/instances_val2017.json')
COCO_IMG_DIRS = ('train2017', 'val2017')
ADE_SPLITS = ('training', 'validation')

_JPEG_QUALITY = 95


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image, 'RGB').save(
        path, 'JPEG', quality=_JPEG_QUALITY, subsampling=0)


def _plan(root, layout: str, num_train: int, num_val: int, image_size, seed: int):
    """What a generator writes: its root, the meta it records, the image size (h, w) and the images per split."""
    meta = expected_meta(layout, num_train=num_train, num_val=num_val, image_size=image_size, seed=seed)
    return Path(root), meta, tuple(meta['image_size']), {'train': meta['num_train'], 'val': meta['num_val']}


def generate_coco(root: str | os.PathLike,
                  num_train: int = 400,
                  num_val: int = 50,
                  image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE,
                  seed: int = 0) -> Path:
    """Write a COCO-layout instance dataset to ``root`` and return it.

    Layout: ``annotations/instances_{train,val}2017.json``,
    ``{train,val}2017/*.jpg`` and ``meta.json``. Category ids are
    1..4 in ``SHAPE_CLASSES`` order; segmentations are polygons of the
    visible region; ``bbox`` and ``area`` come from the visible mask.
    """
    root, meta, (h, w), counts = _plan(root, 'coco', num_train, num_val, image_size, seed)

    def build(tmp: Path) -> None:
        (tmp / 'annotations').mkdir()
        stats = {}
        for split, count in counts.items():
            img_dir = tmp / f'{split}2017'
            img_dir.mkdir()
            images, annotations = [], []
            for image_id in range(1, count + 1):
                rng = _scene_rng('coco', meta['seed'], split, image_id)
                image, instances = render_scene(rng, (h, w))
                file_name = f'{image_id:012d}.jpg'
                _save_jpeg(image, img_dir / file_name)
                images.append({'id': image_id, 'file_name': file_name,
                               'height': h, 'width': w})
                for inst in instances:
                    annotations.append({
                        'id': len(annotations) + 1,
                        'image_id': image_id,
                        'category_id': inst.label + 1,
                        'segmentation': mask_to_polygons(inst.mask),
                        'area': float(inst.area),
                        'bbox': mask_bbox(inst.mask),
                        'iscrowd': 0,
                    })
            _write_json(tmp / 'annotations' / f'instances_{split}2017.json', {
                'info': {'description': 'synthetic shapes',
                         'version': str(GENERATOR_VERSION)},
                'images': images,
                'annotations': annotations,
                'categories': [{'id': i + 1, 'name': name,
                                'supercategory': 'shape'}
                               for i, name in enumerate(SHAPE_CLASSES)],
            })
            stats[f'{split}_instances'] = len(annotations)
        _write_json(tmp / 'meta.json', {**meta, 'stats': stats})

    _replace_atomically(root, build)
    return root


def generate_ade(root: str | os.PathLike,
                 num_train: int = 400,
                 num_val: int = 50,
                 image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE,
                 seed: int = 0) -> Path:
    """Write an ADE20K-layout semantic segmentation dataset to ``root``.

    Layout: ``images/{training,validation}/*.jpg``,
    ``annotations/{training,validation}/*.png`` (same stems) and
    ``meta.json``. Label PNGs are single-channel uint8: 0 = background
    (ignored with ``reduce_zero_label=True``), k = ``SHAPE_CLASSES[k-1]``.
    Returns ``root``.
    """
    root, meta, (h, w), counts = _plan(root, 'ade', num_train, num_val, image_size, seed)

    def build(tmp: Path) -> None:
        stats = {}
        for (split, count), folder in zip(counts.items(), ADE_SPLITS):
            img_dir = tmp / 'images' / folder
            ann_dir = tmp / 'annotations' / folder
            img_dir.mkdir(parents=True)
            ann_dir.mkdir(parents=True)
            pixels = np.zeros(len(SHAPE_CLASSES) + 1, np.int64)
            for index in range(1, count + 1):
                rng = _scene_rng('ade', meta['seed'], split, index)
                image, instances = render_scene(rng, (h, w))
                labels = label_map(instances, (h, w))
                pixels += np.bincount(labels.ravel(), minlength=pixels.size)
                stem = f'shapes_{split}_{index:06d}'
                _save_jpeg(image, img_dir / f'{stem}.jpg')
                Image.fromarray(labels, 'L').save(ann_dir / f'{stem}.png')
            stats[f'{split}_label_pixels'] = pixels.tolist()
        _write_json(tmp / 'meta.json', {**meta, 'stats': stats})

    _replace_atomically(root, build)
    return root


def _coco_complete(root: Path) -> bool:
    return (all((root / f).is_file() for f in COCO_ANN_FILES)
            and all((root / d).is_dir() for d in COCO_IMG_DIRS))


def _ade_complete(root: Path) -> bool:
    return all((root / top / split).is_dir()
               for top in ('images', 'annotations') for split in ADE_SPLITS)


def _imagenet_complete(root: Path) -> bool:
    return all((root / 'meta' / f'{split}.txt').is_file() and
               (root / split).is_dir() for split in IMAGENET_SPLITS)


def generate_imagenet(root: str | os.PathLike,
                      num_train: int = 400,
                      num_val: int = 50,
                      image_size: int | Sequence[int] = DEFAULT_CLS_IMAGE_SIZE,
                      seed: int = 0) -> Path:
    """Write an ImageNet-layout classification set to ``root`` and return it.

    One shape per image, of class ``(i - 1) % 4`` for image ``i`` (balanced
    classes, chance accuracy 25%), coloured from its class's hue family as in
    the detection set, its diameter ``CLS_DIAMETER_RANGE`` of the image side. Layout as mmpretrain's
    ``ImageNet`` dataset reads it: ``{train,val}/<class>/<stem>.JPEG``,
    ``meta/{train,val}.txt`` with lines ``<class>/<stem>.JPEG <label>``,
    ``meta/classes.txt`` and ``meta.json``.
    """
    root, meta, (h, w), counts = _plan(root, 'imagenet', num_train, num_val, image_size, seed)

    def build(tmp: Path) -> None:
        (tmp / 'meta').mkdir()
        stats = {}
        for split, count in counts.items():
            for name in SHAPE_CLASSES:
                (tmp / split / name).mkdir(parents=True)
            lines, per_class = [], [0] * len(SHAPE_CLASSES)
            for index in range(1, count + 1):
                label = (index - 1) % len(SHAPE_CLASSES)
                rng = _scene_rng('imagenet', meta['seed'], split, index)
                image, _ = render_scene(rng, (h, w), label=label,
                                        diameter_range=CLS_DIAMETER_RANGE)
                rel = f'{SHAPE_CLASSES[label]}/shapes_{split}_{index:06d}.JPEG'
                _save_jpeg(image, tmp / split / rel)
                lines.append(f'{rel} {label}\n')
                per_class[label] += 1
            (tmp / 'meta' / f'{split}.txt').write_text(''.join(lines), encoding='utf-8')
            stats[f'{split}_per_class'] = per_class
        (tmp / 'meta' / 'classes.txt').write_text('\n'.join(SHAPE_CLASSES) + '\n', encoding='utf-8')
        _write_json(tmp / 'meta.json', {**meta, 'stats': stats})

    _replace_atomically(root, build)
    return root


def dataset_is_current(root: str | os.PathLike,
                       layout: str,
                       *,
                       num_train: int,
                       num_val: int,
                       image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE,
                       seed: int = 0) -> bool:
    """True if ``root`` holds a complete ``layout`` ('coco', 'ade' or
    'imagenet') dataset whose ``meta.json`` matches the given parameters."""
    root = Path(root)
    params = expected_meta(layout, num_train=num_train, num_val=num_val,
                           image_size=image_size, seed=seed)
    complete = dict(coco=_coco_complete, ade=_ade_complete,
                    imagenet=_imagenet_complete)[layout]
    return _meta_matches(root, params) and complete(root)


def _ensure(layout: str, generate: Callable[..., Path], root: str | os.PathLike, force: bool, num_train: int,
            num_val: int, image_size: int | Sequence[int], seed: int) -> Path:
    """Run ``generate`` unless ``root/meta.json`` already matches (or ``force``); returns ``root``."""
    root = Path(root)
    if not force and dataset_is_current(root, layout, num_train=num_train, num_val=num_val,
                                        image_size=image_size, seed=seed):
        return root
    return generate(root, num_train, num_val, image_size, seed)


def ensure_coco(root: str | os.PathLike, *, force: bool = False, num_train: int = 400, num_val: int = 50,
                image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE, seed: int = 0) -> Path:
    """Run :func:`generate_coco` unless ``root/meta.json`` already matches. ``force=True`` regenerates anyway.
    Returns ``root``."""
    return _ensure('coco', generate_coco, root, force, num_train, num_val, image_size, seed)


def ensure_ade(root: str | os.PathLike, *, force: bool = False, num_train: int = 400, num_val: int = 50,
               image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE, seed: int = 0) -> Path:
    """Run :func:`generate_ade` unless ``root/meta.json`` already matches. ``force=True`` regenerates anyway.
    Returns ``root``."""
    return _ensure('ade', generate_ade, root, force, num_train, num_val, image_size, seed)


def ensure_imagenet(root: str | os.PathLike, *, force: bool = False, num_train: int = 400, num_val: int = 50,
                    image_size: int | Sequence[int] = DEFAULT_CLS_IMAGE_SIZE, seed: int = 0) -> Path:
    """Run :func:`generate_imagenet` unless ``root/meta.json`` already matches. ``force=True`` regenerates anyway.
    Returns ``root``."""
    return _ensure('imagenet', generate_imagenet, root, force, num_train, num_val, image_size, seed)
