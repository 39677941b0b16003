"""Loading pretrained weights into a backbone, with a clear report of keys that do not fit."""
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

StateDict = Dict[str, torch.Tensor]


class CheckpointMismatchError(KeyError):
    """A checkpoint whose keys or shapes do not fit the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def extract_state_dict(checkpoint: dict) -> StateDict:
    """The weights inside an mmengine, timm or DeiT checkpoint (``state_dict``, ``model`` or the dict itself)."""
    for key in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def strip_prefix(state: StateDict, prefix: str) -> StateDict:
    """Keys that start with ``prefix`` (e.g. ``'backbone.'``), with it removed."""
    if not prefix.endswith('.'):
        prefix += '.'
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_matching_state(module: nn.Module, state: StateDict, source: str = 'checkpoint') -> None:
    """Loads ``state`` into ``module`` non-strictly and reports what did not fit.

    Raises :class:`CheckpointMismatchError` when no key matches (a checkpoint of another model, or a missing
    ``prefix``) or when a matching key has another shape; logs missing and unexpected keys as a warning otherwise.
    """
    own = module.state_dict()
    matched = [k for k in state if k in own]
    name = type(module).__name__
    if not matched:
        raise CheckpointMismatchError(
            f'{source} has no key of {name}: its first keys are {sorted(state)[:5]}, the model expects e.g. '
            f'{sorted(own)[:5]}. If it is a detector/segmentor checkpoint, set prefix="backbone." in init_cfg; '
            f'otherwise it is a checkpoint of another model.')
    wrong_shape = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}' for k in matched
                   if state[k].shape != own[k].shape]
    if wrong_shape:
        raise CheckpointMismatchError(f'{source} does not fit {name}, shapes differ:\n  ' + '\n  '.join(wrong_shape))
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    module.load_state_dict(state, strict=False)
    print_log(f'loaded {len(matched)}/{len(own)} tensors of {name} from {source}', logger='current')
    if missing:
        print_log(f'missing keys in {source} (left at their initialisation): {missing}', logger='current',
                  level=30)
    if unexpected:
        print_log(f'unexpected keys in {source} (ignored): {unexpected}', logger='current', level=30)


def load_pretrained(module: nn.Module, checkpoint: str, prefix: Optional[str] = None,
                    convert: Optional[Callable[[StateDict], StateDict]] = None,
                    map_location: str = 'cpu') -> None:
    """``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` for our backbones."""
    state = extract_state_dict(CheckpointLoader.load_checkpoint(checkpoint, map_location=map_location))
    if prefix:
        state = strip_prefix(state, prefix)
    if convert is not None:
        state = convert(state)
    load_matching_state(module, state, source=f'checkpoint {checkpoint!r}')
