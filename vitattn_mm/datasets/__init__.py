"""Dataset helpers. ``shapes`` needs only numpy and Pillow."""

from .shapes import (ADE_SPLITS, COCO_ANN_FILES, COCO_IMG_DIRS,
                     DEFAULT_IMAGE_SIZE, GENERATOR_NAME, GENERATOR_VERSION,
                     SHAPE_CLASSES, SHAPE_PALETTE, SHAPES_METAINFO,
                     DatasetNotFoundError, ShapeInstance, check_ade_root,
                     check_coco_root, dataset_is_current, ensure_ade,
                     ensure_coco, expected_meta, generate_ade, generate_coco,
                     label_map, mask_bbox, mask_to_polygons, read_meta,
                     render_scene, validate_coco_json)

__all__ = [
    'ADE_SPLITS', 'COCO_ANN_FILES', 'COCO_IMG_DIRS', 'DEFAULT_IMAGE_SIZE',
    'GENERATOR_NAME', 'GENERATOR_VERSION', 'SHAPE_CLASSES', 'SHAPE_PALETTE',
    'SHAPES_METAINFO', 'DatasetNotFoundError', 'ShapeInstance',
    'check_ade_root', 'check_coco_root', 'dataset_is_current', 'ensure_ade',
    'ensure_coco', 'expected_meta', 'generate_ade', 'generate_coco',
    'label_map', 'mask_bbox', 'mask_to_polygons', 'read_meta',
    'render_scene', 'validate_coco_json'
]
