"""The learning tests' runs, in one place: the learning tests and ``tools/analysis/learning_thresholds.py`` (which
measures the thresholds over several seeds) use exactly these configs and options.

Each task trains a LaViT-T model on a generated shapes set with ``tools/train.py`` and evaluates it once at the end.
LaViT-T (not S) and the configs' short schedules keep the CPU cost of the suite small; the thresholds in the test
files are measured with these settings.
"""
import os.path as osp
from dataclasses import dataclass
from typing import Callable, List, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _coco_data(root: str) -> str:
    from vitattn_mm.datasets.shapes import ensure_coco
    return str(ensure_coco(osp.join(root, 'shapes_coco')))


def _ade_data(root: str) -> str:
    from vitattn_mm.datasets.shapes import ensure_ade
    return str(ensure_ade(osp.join(root, 'shapes_ade')))


def _imagenet_data(root: str) -> str:
    from vitattn_mm.datasets.shapes import ensure_imagenet
    return str(ensure_imagenet(osp.join(root, 'shapes_in1k'), num_train=800, num_val=200, seed=0))


def coco_data_options(data_root: str) -> List[str]:
    """--cfg-options that point a shapes Mask R-CNN config at a shapes_coco folder."""
    root = data_root.rstrip('/') + '/'
    ann = root + 'annotations/instances_val2017.json'
    return [f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', f'val_evaluator.ann_file={ann}',
            f'test_evaluator.ann_file={ann}']


def data_root_options(data_root: str) -> List[str]:
    """--cfg-options that point the train/val/test dataloaders of a config whose datasets take a data_root (the
    shapes UperNet and classification configs) at one folder."""
    return [f'{split}_dataloader.dataset.data_root={data_root}' for split in ('train', 'val', 'test')]


# A training run's numbers depend on the number of torch threads (the order of reductions), so every learning run
# uses one, whether the suite runs on one pytest worker or two, and the thresholds were measured that way.
RUN_ENV = {'OMP_NUM_THREADS': '1'}


@dataclass(frozen=True)
class LearningTask:
    """A config trained as it is (its schedule, batch size and evaluation at the last iteration are the config's
    own), on data generated under a given folder, with a given seed."""
    config: str
    metrics: Tuple[str, ...]
    prepare_data: Callable[[str], str]
    data_options: Callable[[str], List[str]]

    def options(self, data_root: str, seed) -> List[str]:
        return [*self.data_options(data_root), f'randomness.seed={seed}']


DET = LearningTask(config='configs/lavit/maskrcnn_lavit_t_shapes.py', metrics=('coco/bbox_mAP', 'coco/segm_mAP'),
                   prepare_data=_coco_data, data_options=coco_data_options)
SEG = LearningTask(config='configs/lavit/upernet_lavit_t_shapes.py', metrics=('mIoU', ), prepare_data=_ade_data,
                   data_options=data_root_options)
# 120 iterations of 16 images (800 training images, 2.4 epochs), evaluated on 200 held-out images
CLS = LearningTask(config='configs/lavit/lavit_t_cls_shapes.py', metrics=('accuracy/top1', ),
                   prepare_data=_imagenet_data, data_options=data_root_options)
TASKS = dict(det=DET, seg=SEG, cls=CLS)
# The baseline a trained backbone must beat: the same run with the backbone frozen at its random initialisation
# (the neck and heads still learn, on untrained features).
FROZEN_BACKBONE = ('model.backbone.frozen_stages=4', )
