"""Generate the synthetic shapes datasets (COCO detection, ADE20K-style seg,
ImageNet-style classification).

Writes ``<out>/shapes_coco`` (``--task det``), ``<out>/shapes_ade``
(``--task seg``) and ``<out>/shapes_in1k`` (``--task cls``: one shape per
image, 64x64 by default). A dataset whose ``meta.json`` already matches the
requested parameters is left as is unless ``--force`` is given.
"""

import argparse
import importlib.util
import sys
import time
from pathlib import Path

_SHAPES_PY = (Path(__file__).resolve().parents[2] / 'vitattn_mm' /
              'datasets' / 'shapes' / '__init__.py')


def _load_shapes():
    """Load the shapes package by path, skipping ``vitattn_mm/__init__`` (torch)."""
    name = 'vitattn_mm_shapes_standalone'
    spec = importlib.util.spec_from_file_location(name, _SHAPES_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Generate the synthetic shapes datasets: '
        '<out>/shapes_coco (COCO instances), <out>/shapes_ade '
        '(ADE20K-style semantic segmentation) and <out>/shapes_in1k '
        '(ImageNet-style classification, one shape per image).')
    parser.add_argument('--task', choices=('det', 'seg', 'cls', 'all'),
                        default='all',
                        help='det: shapes_coco, seg: shapes_ade, cls: '
                        'shapes_in1k, all: the three (default: all)')
    parser.add_argument('--out', default='data',
                        help='parent folder of the datasets (default: data)')
    parser.add_argument('--num-train', type=int, default=400,
                        help='training images per dataset (default: 400)')
    parser.add_argument('--num-val', type=int, default=50,
                        help='validation images per dataset (default: 50)')
    parser.add_argument('--size', type=int, nargs=2, default=None,
                        metavar=('H', 'W'),
                        help='image height and width (default: 160 160 for '
                        'det and seg, 64 64 for cls)')
    parser.add_argument('--seed', type=int, default=0,
                        help='random seed (default: 0)')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if meta.json matches')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    shapes = _load_shapes()
    jobs = []
    if args.task in ('det', 'all'):
        jobs.append(('det', 'coco', 'shapes_coco', shapes.ensure_coco))
    if args.task in ('seg', 'all'):
        jobs.append(('seg', 'ade', 'shapes_ade', shapes.ensure_ade))
    if args.task in ('cls', 'all'):
        jobs.append(('cls', 'imagenet', 'shapes_in1k', shapes.ensure_imagenet))

    for task, layout, folder, ensure in jobs:
        size = args.size or (shapes.DEFAULT_CLS_IMAGE_SIZE if task == 'cls'
                             else shapes.DEFAULT_IMAGE_SIZE)
        params = dict(num_train=args.num_train, num_val=args.num_val,
                      image_size=tuple(size), seed=args.seed)
        root = Path(args.out) / folder
        start = time.perf_counter()
        try:
            current = not args.force and shapes.dataset_is_current(
                root, layout, **params)
            ensure(root, force=args.force, **params)
        except (FileExistsError, ValueError) as e:
            print(f'error: {e}', file=sys.stderr)
            return 1
        elapsed = time.perf_counter() - start
        meta = shapes.read_meta(root)
        h, w = meta['image_size']
        desc = (f"{meta['num_train']} train / {meta['num_val']} val images, "
                f"{h}x{w}, seed {meta['seed']}")
        if current:
            print(f'[{task}] {root} is up to date ({desc}); '
                  'use --force to regenerate')
            continue
        print(f'[{task}] wrote {root} ({desc}) in {elapsed:.1f} s')
        if layout == 'coco':
            stats = meta['stats']
            print(f"    {root}/train2017/ + annotations/instances_train2017"
                  f".json ({stats['train_instances']} instances)")
            print(f"    {root}/val2017/ + annotations/instances_val2017"
                  f".json ({stats['val_instances']} instances)")
        elif layout == 'ade':
            for split in ('training', 'validation'):
                print(f'    {root}/images/{split}/*.jpg + '
                      f'{root}/annotations/{split}/*.png')
        else:
            for split in shapes.IMAGENET_SPLITS:
                print(f'    {root}/{split}/<class>/*.JPEG + '
                      f'{root}/meta/{split}.txt')
        print(f'    classes: {", ".join(shapes.SHAPE_CLASSES)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
