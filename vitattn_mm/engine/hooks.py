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
    """Adds the pending auxiliary losses of ``model``'s submodules to ``losses`` (in place) and returns it.

    mmpretrain's classification heads return their loss under the key ``'loss'``, the name under which mmengine's
    ``parse_losses`` logs the *total*; with an auxiliary loss beside it the log would show the head's loss as the
    total. So when auxiliary losses are added, a ``'loss'`` entry is renamed ``'loss_cls'`` (it is still summed into
    the total, which mmengine logs as ``loss``).
    """
    added = False
    for source in auxiliary_loss_sources(model):
        for name, value in source.pop_auxiliary_losses().items():
            if name in losses:
                raise KeyError(f'auxiliary loss {name!r} of {type(source).__name__} clashes with a loss of the model')
            losses[name] = value
            added = True
    if added and 'loss' in losses:
        if 'loss_cls' in losses:
            raise KeyError("the model returns both 'loss' and 'loss_cls'; cannot keep its 'loss' apart from the total")
        losses['loss_cls'] = losses.pop('loss')
    return losses


@register_hook
class AuxiliaryLossHook(Hook):
    """Adds backbone losses (LaViT's diagonality-preserving ``loss_dp``) to the model's loss dict.

    mmdet detectors, mmseg segmentors and mmpretrain classifiers build their loss dict from their heads; a loss
    computed inside the backbone would never reach it. This hook registers a forward hook on the (unwrapped) model:
    whenever the model runs in ``mode='loss'``, the losses pending in submodules with ``pop_auxiliary_losses()`` are
    merged into the returned dict, where mmengine logs them and sums every ``loss*`` entry into the total. Works for
    any detector/segmentor/``ImageClassifier`` class (all are mmengine ``BaseModel`` s called with ``mode=``) and
    under DDP, without subclassing the toolboxes' models.

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
      the random generators of the training processes, so drop-path masks and mmdet's RoI/anchor sampling draw
      other numbers after a resume than in an uninterrupted run. We store the python, numpy, torch CPU and (where
      CUDA is in use) the current CUDA device's generator states in every checkpoint, **one set per rank**, and
      on resume every rank restores its own set: an interrupted and resumed run ends with the same weights as an
      uninterrupted one (same machine, same number of processes; cuDNN/atomics nondeterminism aside, which
      ``randomness.deterministic=True`` addresses).
      mmengine writes the checkpoint on rank 0 only, so under DDP every rank hands its state to rank 0 after each
      training iteration and epoch (one ``all_gather_object`` of a few KB); in a single process the state is read
      when the checkpoint is written. Resuming with another number of processes restores rank 0's state on ranks
      the checkpoint has no state for, with a warning (exactness needs the same world size).
    * Safe loading: torch >= 2.6 loads with ``weights_only=True``, which refuses mmengine's ``HistoryBuffer`` objects
      in ``message_hub`` (their pickle calls ``getattr``, which cannot safely be allowed). We store them as plain
      arrays and rebuild them on resume, so our checkpoints load with the safe loader everywhere (tools/test.py,
      mmdet's and mmseg's own tools, ``init_cfg=Pretrained``) without switching it off.
    """

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW), so the gathered states are those at the save

    def __init__(self):
        self._gathered: Optional[list] = None

    @staticmethod
    def random_state() -> dict:
        """This process's generator states (the CUDA one of the current device where CUDA is initialised)."""
        state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state()
        return state

    def _gather(self) -> None:
        from mmengine.dist import all_gather_object, get_world_size
        if get_world_size() > 1:
            self._gathered = all_gather_object(self.random_state())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._gather()

    def after_train_epoch(self, runner) -> None:
        self._gather()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        from mmengine.dist import get_world_size
        ranks = self._gathered if get_world_size() > 1 and self._gathered else [self.random_state()]
        checkpoint['random_state'] = dict(ranks=list(ranks))
        scalars = checkpoint.get('message_hub', {}).get('log_scalars', {})
        for key, value in scalars.items():
            if isinstance(value, HistoryBuffer):
                scalars[key] = {PLAIN_HISTORY: True, 'log': value._log_history, 'count': value._count_history,
                                'max_length': value.max_length}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        from mmengine.dist import get_rank, get_world_size
        scalars = checkpoint.get('message_hub', {}).get('log_scalars', {})
        for key, value in scalars.items():
            if isinstance(value, dict) and value.get(PLAIN_HISTORY):
                scalars[key] = HistoryBuffer(value['log'], value['count'], value['max_length'])
        saved = checkpoint.get('random_state')
        if saved is None:
            runner.logger.warning('the checkpoint holds no random state (not written with ResumableCheckpointHook); '
                                  'random numbers after this resume differ from an uninterrupted run')
            return
        ranks = saved['ranks'] if 'ranks' in saved else [saved]  # older checkpoints: one CPU-only set
        rank, world = get_rank(), get_world_size()
        if len(ranks) != world:
            runner.logger.warning(f'the checkpoint holds the random state of {len(ranks)} process(es), this run has '
                                  f'{world}; ranks without a saved state get rank 0\'s, and random numbers after '
                                  'this resume differ from an uninterrupted run')
        state = ranks[rank] if rank < len(ranks) else ranks[0]
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        use_cuda = torch.cuda.is_available()
        if use_cuda and 'cuda' in state:
            torch.cuda.set_rng_state(state['cuda'])
        elif use_cuda or 'cuda' in state:
            runner.logger.warning('the checkpoint was written ' + ('without' if use_cuda else 'with') + ' CUDA and '
                                  'this run ' + ('uses' if use_cuda else 'does not use') + ' it; the CUDA random '
                                  'state is not restored, so GPU random numbers after this resume differ')
