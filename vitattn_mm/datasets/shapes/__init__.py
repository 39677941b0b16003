"""Deterministic synthetic "shapes" datasets in COCO, ADE20K and ImageNet layouts.

Each detection/segmentation image shows 1 to 4 solid-colored shapes (circle, square, triangle, star) on a varied
background; each classification image shows one. Modules: ``scene`` renders a scene, ``polygons`` turns masks into
COCO polygons and boxes, ``metadata`` identifies a generated dataset (``meta.json``), ``layouts`` writes the
datasets, ``checks`` checks dataset folders. The package depends only on numpy, Pillow and the standard library,
so it can be imported without torch, mmdet or mmseg.
"""

from .checks import (DatasetNotFoundError, check_ade_root, check_coco_root,
                     check_imagenet_root, validate_coco_json)
from .layouts import (ADE_SPLITS, CLS_DIAMETER_RANGE, COCO_ANN_FILES,
                      COCO_IMG_DIRS, DEFAULT_CLS_IMAGE_SIZE, IMAGENET_SPLITS,
                      _save_jpeg, dataset_is_current, ensure_ade, ensure_coco,
                      ensure_imagenet, generate_ade, generate_coco,
                      generate_imagenet)
from .metadata import (GENERATOR_NAME, GENERATOR_VERSION, expected_meta,
                       read_meta)
from .polygons import mask_bbox, mask_to_polygons
from .scene import (DEFAULT_IMAGE_SIZE, SHAPE_CLASSES, SHAPE_PALETTE,
                    SHAPES_METAINFO, ShapeInstance, _rasterize, label_map,
                    render_scene)

__all__ = [
    'SHAPE_CLASSES', 'SHAPE_PALETTE', 'SHAPES_METAINFO', 'GENERATOR_NAME',
    'GENERATOR_VERSION', 'DEFAULT_IMAGE_SIZE', 'COCO_ANN_FILES',
    'COCO_IMG_DIRS', 'ADE_SPLITS', 'DatasetNotFoundError', 'ShapeInstance',
    'render_scene', 'label_map', 'mask_to_polygons', 'mask_bbox',
    'generate_coco', 'generate_ade', 'ensure_coco', 'ensure_ade',
    'expected_meta', 'read_meta', 'dataset_is_current', 'check_coco_root',
    'check_ade_root', 'validate_coco_json', 'IMAGENET_SPLITS',
    'DEFAULT_CLS_IMAGE_SIZE', 'CLS_DIAMETER_RANGE', 'generate_imagenet',
    'ensure_imagenet', 'check_imagenet_root'
]
