"""Getting a backbone's auxiliary losses into any detector's or segmentor's losses."""
import random
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import is_model_wrapper

from ..registry import register_hook

# marks a HistoryBuffer stored as plain arrays in a checkpoint
PLAIN_HISTORY = '__history_buffer__'


def auxiliary_loss_sources(model: nn.Module):
    """Submodules that compute losses during their forward and hand them over with ``pop_auxiliary_losses()``."""
    return [m for m in model.modules() if callable(getattr(m, 'pop_auxiliary_losses', None))]


def merge_auxiliary_losses(model: nn.Module, losses: Dict) -> Dict:
    """Adds the pending auxiliary losses of ``model``'s submodules to ``losses`` (in place) and returns it."""
    for source in auxiliary_loss_sources(model):
        for name, value in source.pop_auxiliary_losses().items():
            if name in losses:
                raise KeyError(f'auxiliary loss {name!r} of {type(source).__name__} clashes with a loss of the model')
            losses[name] = value
    return losses


@register_hook
class AuxiliaryLossHook(Hook):
    """Adds backbone losses (LaViT's diagonality-preserving ``loss_dp``) to the model's loss dict.

    mmdet detectors and mmseg segmentors build their loss dict from their heads; a loss computed inside the
    backbone would never reach it. This hook registers a forward hook on the (unwrapped) model: whenever the model
    runs in ``mode='loss'``, the losses pending in submodules with ``pop_auxiliary_losses()`` are merged into the
    returned dict, where mmengine logs them and sums every ``loss*`` entry into the total. Works for any
    detector/segmentor class and under DDP, without subclassing either toolbox's models.

    Usage: ``custom_hooks = [dict(type='AuxiliaryLossHook')]``.
    """

    priority = 'NORMAL'

    def __init__(self):
        self._handle: Optional[object] = None

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not auxiliary_loss_sources(model):
            runner.logger.info('AuxiliaryLossHook: the model has no module with auxiliary losses; nothing to do')
            return
        self._handle = model.register_forward_hook(self._merge, with_kwargs=True)

    @staticmethod
    def _merge(module, args, kwargs, output):
        if kwargs.get('mode') == 'loss' and isinstance(output, dict):
            merge_auxiliary_losses(module, output)
        return output

    def after_run(self, runner) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


@register_hook
class ResumableCheckpointHook(Hook):
    """Makes checkpoints resume exactly and load with torch's safe loader.

    * Random state: mmengine restores weights, optimizer, scheduler and the data position on ``--resume``, but not
      the random generators of the training process, so drop-path masks and mmdet's RoI/anchor sampling draw other
      numbers after a resume than in an uninterrupted run. We store the python, numpy and torch generator states in
      every checkpoint and restore them on resume: an interrupted and resumed run ends with the same weights as an
      uninterrupted one (same machine).
    * Safe loading: torch >= 2.6 loads with ``weights_only=True``, which refuses mmengine's ``HistoryBuffer`` objects
      in ``message_hub`` (their pickle calls ``getattr``, which cannot safely be allowed). We store them as plain
      arrays and rebuild them on resume, so our checkpoints load with the safe loader everywhere (tools/test.py,
      mmdet's and mmseg's own tools, ``init_cfg=Pretrained``) without switching it off.
    """

    priority = 'NORMAL'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['random_state'] = dict(python=random.getstate(), numpy=np.random.get_state(),
                                          torch=torch.get_rng_state())
        scalars = checkpoint.get('message_hub', {}).get('log_scalars', {})
        for key, value in scalars.items():
            if isinstance(value, HistoryBuffer):
                scalars[key] = {PLAIN_HISTORY: True, 'log': value._log_history, 'count': value._count_history,
                                'max_length': value.max_length}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        scalars = checkpoint.get('message_hub', {}).get('log_scalars', {})
        for key, value in scalars.items():
            if isinstance(value, dict) and value.get(PLAIN_HISTORY):
                scalars[key] = HistoryBuffer(value['log'], value['count'], value['max_length'])
        state = checkpoint.get('random_state')
        if state is None:
            runner.logger.warning('the checkpoint holds no random state (not written with ResumableCheckpointHook); '
                                  'random numbers after this resume differ from an uninterrupted run')
            return
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
