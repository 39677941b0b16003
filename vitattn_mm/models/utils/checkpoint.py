"""Loading pretrained weights into a backbone, with a clear report of keys that do not fit."""
from typing import Callable, Dict, NamedTuple, Optional

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


class LoadReport(NamedTuple):
    """What :func:`load_matching_state` took from a checkpoint: tensors and parameter values (numel)."""
    tensors: int
    total_tensors: int
    params: int
    total_params: int

    @property
    def param_fraction(self) -> float:
        """Share of the module's parameter values that came from the checkpoint."""
        return self.params / max(self.total_params, 1)


def load_matching_state(module: nn.Module, state: StateDict, source: str = 'checkpoint') -> LoadReport:
    """Loads ``state`` into ``module`` non-strictly, reports what did not fit and returns a :class:`LoadReport`.

    Raises :class:`CheckpointMismatchError` when no key matches (a checkpoint of another model, or a missing
    ``prefix``) or when a matching key has another shape; logs missing and unexpected keys as a warning otherwise.
    The log line says how many tensors and how many parameter values (of ``module.parameters()``) came from it.
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
    params = dict(module.named_parameters())
    report = LoadReport(len(matched), len(own), sum(params[k].numel() for k in matched if k in params),
                        sum(p.numel() for p in params.values()))
    print_log(f'loaded {report.tensors}/{report.total_tensors} tensors of {name} from {source}: '
              f'{report.params / 1e6:.2f}M of its {report.total_params / 1e6:.2f}M parameters '
              f'({100 * report.param_fraction:.1f}%)', logger='current')
    if missing:
        print_log(f'missing keys in {source} (left at their initialisation): {missing}', logger='current',
                  level=30)
    if unexpected:
        print_log(f'unexpected keys in {source} (ignored): {unexpected}', logger='current', level=30)
    return report


def load_pretrained(module: nn.Module, checkpoint: str, prefix: Optional[str] = None,
                    convert: Optional[Callable[[StateDict], StateDict]] = None,
                    map_location: str = 'cpu') -> LoadReport:
    """``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` for our backbones.

    ``convert`` adapts the state dict first (e.g. :meth:`LaViT.convert_pretrained` for PVTv2 weights); a
    ``ValueError`` it raises is re-raised with the checkpoint named.
    """
    state = extract_state_dict(CheckpointLoader.load_checkpoint(checkpoint, map_location=map_location))
    if prefix:
        state = strip_prefix(state, prefix)
    if convert is not None:
        try:
            state = convert(state)
        except ValueError as e:
            raise type(e)(f'checkpoint {checkpoint!r}: {e}') from e
    return load_matching_state(module, state, source=f'checkpoint {checkpoint!r}')
