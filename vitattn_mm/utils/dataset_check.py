"""Checks, before a run starts, that the datasets a config points to exist and are readable.

Without them mmdet/mmseg fail deep inside dataset construction with a bare FileNotFoundError or a JSON decode
error; we say what is missing and how to get it (download, or generate the small synthetic set).
"""
import os.path as osp
from typing import Iterator, Tuple

from mmengine.config import Config, ConfigDict

from ..datasets.shapes import DatasetNotFoundError, validate_coco_json

DATALOADER_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader')

_COCO_HINT = ('Download COCO 2017 from https://cocodataset.org (train2017.zip, val2017.zip, '
              'annotations_trainval2017.zip) and unpack it so that data/coco/annotations/, data/coco/train2017/ and '
              'data/coco/val2017/ exist')
_ADE_HINT = ('Download ADEChallengeData2016.zip (MIT Scene Parsing Benchmark) and unpack it so that '
             'data/ade/ADEChallengeData2016/images/ and .../annotations/ exist')
_IMAGENET_HINT = ('Download ImageNet-1k (ILSVRC2012) from https://image-net.org and arrange it as mmpretrain expects, '
                  'so that data/imagenet/train/, data/imagenet/val/ and data/imagenet/meta/{train,val}.txt exist')
_SHAPES_HINT = ('or generate the small synthetic set with `python tools/misc/generate_shapes_data.py` '
                '(data/shapes_coco, data/shapes_ade, data/shapes_in1k) and use the *_shapes configs')


def _datasets(dataset: ConfigDict) -> Iterator[ConfigDict]:
    """The leaf datasets of a (possibly wrapped) dataset config."""
    if 'dataset' in dataset:
        yield from _datasets(dataset['dataset'])
    elif 'datasets' in dataset:
        for d in dataset['datasets']:
            yield from _datasets(d)
    else:
        yield dataset


def dataset_paths(cfg: Config) -> Iterator[Tuple[str, str, str]]:
    """(dataloader key, kind, path) for every annotation file and image/label folder the config reads."""
    for key in DATALOADER_KEYS:
        loader = cfg.get(key)
        if not loader:
            continue
        for ds in _datasets(loader['dataset']):
            root = ds.get('data_root') or ''
            if ds.get('ann_file'):
                yield key, 'annotation file', osp.join(root, ds['ann_file'])
            prefixes = ds.get('data_prefix') or {}
            if isinstance(prefixes, str):  # mmpretrain's datasets: one image folder
                prefixes = dict(img_path=prefixes)
            if not prefixes and ds.get('split'):  # mmpretrain's ImageNet: the folder is named after the split
                prefixes = dict(img_path=ds['split'])
            for name, prefix in prefixes.items():
                if prefix and '://' not in str(prefix):
                    yield key, f'{name} folder', osp.join(root, prefix)


def check_config_datasets(cfg: Config, phases: Tuple[str, ...] = DATALOADER_KEYS) -> None:
    """Raises :class:`DatasetNotFoundError` / ``ValueError`` naming the first missing or corrupt dataset file."""
    for key, kind, path in dataset_paths(cfg):
        if key not in phases:
            continue
        if not osp.exists(path):
            low = path.lower()
            hint = _ADE_HINT if 'ade' in low else _IMAGENET_HINT if 'imagenet' in low or 'in1k' in low else _COCO_HINT
            raise DatasetNotFoundError(
                f'{kind} of {key} not found: {path}\n{hint},\n{_SHAPES_HINT}.', path)
        if kind == 'annotation file' and path.endswith('.json'):
            validate_coco_json(path)
