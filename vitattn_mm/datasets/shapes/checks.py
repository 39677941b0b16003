"""Checks of COCO, ADE20K and ImageNet dataset folders (real or generated), whose errors say how to get the data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from .layouts import ADE_SPLITS, COCO_ANN_FILES, COCO_IMG_DIRS, IMAGENET_SPLITS

_GENERATE_CMD = 'python tools/misc/generate_shapes_data.py'
_GENERATE_FLAGS = ('--task {det,seg,cls,all} --out DIR --num-train N '
                   '--num-val N --size H W --seed S --force')


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file or folder is missing; ``path`` names it."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return self.args[0]


_COCO_HELP = (
    'To use real COCO 2017, download train2017.zip, val2017.zip and '
    'annotations_trainval2017.zip from https://cocodataset.org/#download '
    'and unpack them under data/coco, so that it holds annotations/, '
    'train2017/ and val2017/.\n'
    'To use the small synthetic shapes dataset instead, run\n'
    f'    {_GENERATE_CMD} --task det\n'
    'which writes data/shapes_coco (flags: ' + _GENERATE_FLAGS + ').')

_ADE_HELP = (
    'To use real ADE20K, download ADEChallengeData2016.zip from the MIT '
    'Scene Parsing Benchmark (http://sceneparsing.csail.mit.edu, file '
    'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip) '
    'and unpack it to data/ade/ADEChallengeData2016, so that it holds '
    'images/{training,validation} and annotations/{training,validation}.\n'
    'To use the small synthetic shapes dataset instead, run\n'
    f'    {_GENERATE_CMD} --task seg\n'
    'which writes data/shapes_ade (flags: ' + _GENERATE_FLAGS + ').')

_REQUIRED_COCO_KEYS = ('images', 'annotations', 'categories')
_FULL_PARSE_LIMIT = 64 * 2**20


def _require(path: Path, kind: str, what: str, help_text: str) -> None:
    """Raise DatasetNotFoundError unless ``path`` is a file (kind 'file'),
    a folder ('root') or a non-empty folder ('dir')."""
    is_dir = kind != 'file'
    if not (path.is_dir() if is_dir else path.is_file()):
        raise DatasetNotFoundError(
            f"{what} not found: missing {'folder' if is_dir else 'file'} "
            f"'{os.path.abspath(path)}'.\n{help_text}", path)
    if kind == 'dir':
        with os.scandir(path) as it:
            if next(it, None) is None:
                raise DatasetNotFoundError(
                    f"{what} not found: folder '{os.path.abspath(path)}' is "
                    f'empty.\n{help_text}', path)


def _scan_large_json(path: Path) -> None:
    """Cheap structural check for annotation files too big to parse."""
    with open(path, 'rb') as f:
        head = f.read(1024).lstrip()
        f.seek(max(0, path.stat().st_size - 1024))
        tail = f.read().rstrip()
        if not head.startswith(b'{') or not tail.endswith(b'}'):
            raise ValueError(
                f"COCO annotation file '{path}' is corrupt or truncated: it "
                'does not start with "{" and end with "}"; delete it and '
                'download or generate it again')
        f.seek(0)
        missing = {k: f'"{k}"'.encode() for k in _REQUIRED_COCO_KEYS}
        carry = b''
        while missing and (chunk := f.read(2**24)):
            window = carry + chunk
            for key in [k for k, tok in missing.items() if tok in window]:
                del missing[key]
            carry = chunk[-32:]
    if missing:
        raise ValueError(f"COCO annotation file '{path}' lacks the key(s) "
                         f'{sorted(missing)}')


def validate_coco_json(path: str | os.PathLike,
                       full_parse_limit: int = _FULL_PARSE_LIMIT) -> None:
    """Raise ValueError if ``path`` is not a COCO annotation json.

    Files up to ``full_parse_limit`` bytes are parsed and must be an object
    whose ``images``, ``annotations`` and ``categories`` are lists; larger
    files get a cheap check (braces at both ends, keys present).
    """
    path = Path(path)
    if path.stat().st_size > full_parse_limit:
        _scan_large_json(path)
        return
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"COCO annotation file '{path}' is not valid JSON ({e.msg} at "
            f'line {e.lineno} column {e.colno}); it is probably truncated '
            'or corrupt: delete it and download or generate it again') from e
    except UnicodeDecodeError as e:
        raise ValueError(
            f"COCO annotation file '{path}' is not UTF-8 text ({e}); it is "
            'corrupt: delete it and download or generate it again') from e
    if not isinstance(data, dict):
        raise ValueError(f"COCO annotation file '{path}' must hold a JSON "
                         f'object, found {type(data).__name__}')
    missing = [k for k in _REQUIRED_COCO_KEYS if k not in data]
    if missing:
        raise ValueError(
            f"COCO annotation file '{path}' lacks the key(s) {missing}")
    for key in _REQUIRED_COCO_KEYS:
        if not isinstance(data[key], list):
            raise ValueError(f"COCO annotation file '{path}': '{key}' must be "
                             f'a list, found {type(data[key]).__name__}')


def check_coco_root(root: str | os.PathLike,
                    ann_files: Sequence[str] = COCO_ANN_FILES,
                    img_dirs: Sequence[str] = COCO_IMG_DIRS) -> None:
    """Check a COCO-layout dataset under ``root``.

    ``ann_files`` and ``img_dirs`` are relative to ``root``. Raises
    DatasetNotFoundError naming the first missing path (or empty image
    folder) and ValueError for a corrupt annotation file.
    """
    root = Path(root)
    _require(root, 'root', 'COCO-style dataset', _COCO_HELP)
    for ann in ann_files:
        _require(root / ann, 'file', 'COCO annotation file', _COCO_HELP)
    for img_dir in img_dirs:
        _require(root / img_dir, 'dir', 'COCO image folder', _COCO_HELP)
    for ann in ann_files:
        validate_coco_json(root / ann)


def check_ade_root(root: str | os.PathLike,
                   splits: Sequence[str] = ADE_SPLITS) -> None:
    """Check an ADE20K-layout dataset under ``root``.

    Requires non-empty ``images/<split>`` and ``annotations/<split>`` for
    every split; raises DatasetNotFoundError naming the first missing one.
    """
    root = Path(root)
    _require(root, 'root', 'ADE20K-style dataset', _ADE_HELP)
    for split in splits:
        for top in ('images', 'annotations'):
            _require(root / top / split, 'dir', f'ADE20K {top} folder',
                     _ADE_HELP)


_IMAGENET_HELP = (
    'To use real ImageNet-1k, download ILSVRC2012 from https://image-net.org '
    'and arrange it as mmpretrain expects: data/imagenet/train/<wnid>/*.JPEG, '
    'data/imagenet/val/*.JPEG and data/imagenet/meta/{train,val}.txt '
    '(see mmpretrain\'s dataset preparation docs).\n'
    'To use the small synthetic shapes classification set instead, run\n'
    f'    {_GENERATE_CMD} --task cls\n'
    'which writes data/shapes_in1k (flags: ' + _GENERATE_FLAGS + ').')


def check_imagenet_root(root: str | os.PathLike,
                        splits: Sequence[str] = IMAGENET_SPLITS) -> None:
    """Check an ImageNet-layout dataset under ``root``: non-empty ``<split>``
    folders and ``meta/<split>.txt`` files; raises DatasetNotFoundError
    naming the first missing one."""
    root = Path(root)
    _require(root, 'root', 'ImageNet-style dataset', _IMAGENET_HELP)
    for split in splits:
        _require(root / split, 'dir', f'ImageNet {split} folder', _IMAGENET_HELP)
        _require(root / 'meta' / f'{split}.txt', 'file',
                 f'ImageNet {split} annotation list', _IMAGENET_HELP)
