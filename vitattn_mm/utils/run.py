"""What tools/train.py and tools/test.py share: config loading, dataset checks, runner construction."""
import contextlib
import os.path as osp
import sys
from typing import Optional, Sequence

from mmengine.config import Config

TOOLBOX_OF_SCOPE = {'mmdet': 'mmdet', 'mmseg': 'mmseg', 'mmpretrain': 'mmpretrain'}


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Loads a config, applies ``--cfg-options``, sets work_dir (default ``work_dirs/<config name>``) and launcher."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        merge_cfg_options(cfg, cfg_options, path)
    scope = cfg.get('default_scope')
    if scope not in TOOLBOX_OF_SCOPE:
        raise ValueError(f'{path}: default_scope must be one of {sorted(TOOLBOX_OF_SCOPE)} (inherit an mmdet::, '
                         f'mmseg:: or mmpretrain:: base config), got {scope!r}')
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join('work_dirs', osp.splitext(osp.basename(path))[0])
    cfg.launcher = launcher
    return cfg


def merge_cfg_options(cfg: Config, options: dict, source: str = 'the config') -> None:
    """Applies ``--cfg-options`` to ``cfg``; an override that cannot apply is a one-line ``ValueError``.

    mmengine's ``merge_from_dict`` refuses a dotted key below an entry that is ``None`` in the config with a
    ``TypeError`` (e.g. ``model.backbone.init_cfg.type=Pretrained`` onto ``init_cfg=None``). Here such keys build
    the dict: the ``None`` becomes an empty dict first, so
    ``model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.checkpoint=PATH`` works whether the config
    has an ``init_cfg`` or ``None``. A dict built this way must get a ``type`` from the same options. Any other
    refusal (a key below a string or number, a list index out of range) becomes a ``ValueError`` naming the keys.
    """
    from mmengine.config import ConfigDict

    def child(node, part):
        if isinstance(node, dict):
            return node.get(part, ConfigDict())
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            return node[int(part)]
        return ConfigDict()  # not there: mmengine's merge creates it (or refuses it with an error we report)

    created = []
    for key in options:
        parts = key.split('.')
        node = cfg._cfg_dict
        for depth, part in enumerate(parts[:-1]):
            value = child(node, part)
            if value is None:
                value = ConfigDict()
                node[int(part) if isinstance(node, list) else part] = value
                created.append('.'.join(parts[:depth + 1]))
            node = value
    try:
        cfg.merge_from_dict(options)
    except (TypeError, KeyError) as e:
        reason = ' '.join(str(e).split())
        raise ValueError(f'--cfg-options {" ".join(options)} cannot be applied to {source}: {reason}') from None
    for name in created:
        value = cfg._cfg_dict
        for part in name.split('.'):
            value = value[int(part)] if isinstance(value, list) else value[part]
        if isinstance(value, dict) and 'type' not in value:
            given = ' '.join(f'{k}=...' for k in options if k.startswith(name + '.'))
            raise ValueError(f'{name} is None in {source}, and --cfg-options gives only {given}; give its type too, '
                             f'e.g. {name}.type=Pretrained {name}.checkpoint=PATH')


def setup_cpu_distributed(cfg: Config) -> None:
    """Lets ``--launcher pytorch`` run on CPU-only machines (e.g. ``tools/dist_train.sh CONFIG 2`` here).

    mmengine 0.10's launcher calls ``torch.cuda.set_device`` and wraps the model in DDP with ``device_ids``, both of
    which fail without a GPU. Without CUDA we start the process group ourselves with gloo (mmengine then skips its
    own initialisation) and wrap the model with ``device_ids=None``, as DDP wants for CPU modules.
    """
    import torch
    import torch.distributed as dist
    from mmengine.logging import print_log
    if cfg.launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if cfg.launcher != 'pytorch':
        raise ValueError(f'on a machine without GPUs only --launcher pytorch is supported, got {cfg.launcher}')
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'gloo')
    if backend != 'gloo':
        print_log(f'no GPU: using the gloo backend instead of {backend}', logger='current')
    dist.init_process_group(backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.update(device_ids=None, broadcast_buffers=wrapper.get('broadcast_buffers', False),
                   find_unused_parameters=cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper


def build_runner(cfg: Config, phases: Sequence[str]):
    """Checks the datasets of ``phases`` and builds the toolbox's runner (a custom ``runner_type`` is honoured)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from .dataset_check import check_config_datasets

    check_config_datasets(cfg, tuple(phases))
    setup_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


@contextlib.contextmanager
def report_and_exit():
    """Turns the errors a user can fix (missing data, bad config values, bad checkpoints) into a one-paragraph
    message and exit status 2, instead of a stack trace. Set VITATTN_TRACEBACK=1 to see the trace."""
    import os

    from ..datasets.shapes import DatasetNotFoundError
    from ..models.utils.checkpoint import CheckpointMismatchError
    user_errors = (DatasetNotFoundError, CheckpointMismatchError, FileNotFoundError, ValueError)
    try:
        yield
    except user_errors as e:
        if os.environ.get('VITATTN_TRACEBACK'):
            raise
        print(f'\nerror: {type(e).__name__}: {e}\n(set VITATTN_TRACEBACK=1 for the full traceback)', file=sys.stderr)
        sys.exit(2)
