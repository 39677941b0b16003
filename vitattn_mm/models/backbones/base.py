"""What our pyramid backbones share: input checks, out_indices, freezing, norm_eval, pretrained loading."""
from typing import Iterable, List, Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from ..utils.checkpoint import StateDict, load_pretrained

NUM_LEVELS = 4
MIN_INPUT_SIZE = 32


class PyramidBackbone(BaseModule):
    """Base of backbones that return up to four feature maps at strides 4, 8, 16 and 32.

    Subclasses build their layers, then call :meth:`_set_up_common` and implement :meth:`frozen_modules` and
    ``forward``.
    """

    def _set_up_common(self, in_channels: int, out_indices: Sequence[int], frozen_stages: int, norm_eval: bool):
        self.in_channels = in_channels
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        out_indices = list(out_indices)
        bad = [i for i in out_indices if not isinstance(i, int) or not -NUM_LEVELS <= i < NUM_LEVELS]
        if bad or not out_indices:
            raise ValueError(f'out_indices must be a non-empty list of levels in 0..{NUM_LEVELS - 1}, '
                             f'got {out_indices}')
        self.out_indices = sorted({i % NUM_LEVELS for i in out_indices})
        limit = self.max_frozen_stages()
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= limit:
            raise ValueError(f'frozen_stages of {type(self).__name__} must be -1 (nothing frozen) or a stage count '
                             f'0..{limit}, got {frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

    def check_input(self, x: torch.Tensor) -> None:
        """Rejects inputs the backbone would process into silently wrong features."""
        if x.dim() != 4:
            raise ValueError(f'{type(self).__name__} expects a (B, C, H, W) image batch, got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} was built for {self.in_channels} input channels, the input has '
                             f'{x.shape[1]} (shape {tuple(x.shape)})')
        if min(x.shape[2:]) < MIN_INPUT_SIZE:
            raise ValueError(f'{type(self).__name__} needs images of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} '
                             f'pixels (its coarsest level has stride 32), got {x.shape[2]}x{x.shape[3]}')

    def max_frozen_stages(self) -> int:
        """The largest valid ``frozen_stages`` (freezes everything that can be frozen). Called by
        :meth:`_set_up_common`, so it may use only what the subclass has set before that call."""
        return NUM_LEVELS

    def frozen_modules(self) -> List[nn.Module]:
        """Modules (and parameters wrapped in modules) that ``frozen_stages`` freezes."""
        raise NotImplementedError

    def frozen_parameters(self) -> Iterable[nn.Parameter]:
        """Loose parameters (not inside a module of :meth:`frozen_modules`) that are frozen too."""
        return []

    def _freeze(self) -> None:
        """Frozen parts: ``requires_grad=False`` and eval mode. Subclasses call it at the end of ``__init__`` (so
        that optimizers and DDP, built before the first ``train()``, see the frozen parameters) and ``train()``
        calls it again."""
        for module in self.frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad = False
        for p in self.frozen_parameters():
            p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # --- weights ---------------------------------------------------------------------------------------------
    def convert_pretrained(self, state: StateDict) -> StateDict:
        """Hook for subclasses: adapt a pretrained state dict (key names, position embedding size)."""
        return state

    def init_weights(self) -> None:
        cfg = self.init_cfg or {}
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            if not cfg.get('checkpoint'):
                raise ValueError(f"init_cfg of {type(self).__name__} has type='Pretrained' but no checkpoint")
            self._init_from_scratch()
            load_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix'), convert=self.convert_pretrained,
                            map_location=cfg.get('map_location', 'cpu'))
            self._is_init = True
        elif cfg:
            super().init_weights()
        else:
            self._init_from_scratch()
            self._is_init = True

    def _init_from_scratch(self) -> None:
        """Truncated-normal linear layers, fan-out normal convolutions, unit LayerNorms (as PVTv2/timm)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, (2.0 / fan_out)**0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def per_layer_flags(value, depth: int, name: str) -> List[bool]:
    """A bool for all layers, or a per-layer sequence of bools, as a list of ``depth`` bools."""
    if isinstance(value, bool):
        return [value] * depth
    flags = list(value)
    if len(flags) != depth or not all(isinstance(f, bool) for f in flags):
        raise ValueError(f'{name} must be a bool or {depth} bools (one per layer), got {value!r}')
    return flags


def drop_path_rates(rate: float, depth: int) -> List[float]:
    """Stochastic depth rising linearly from 0 to ``rate`` over ``depth`` layers."""
    if not 0 <= rate < 1:
        raise ValueError(f'drop_path_rate must be in [0, 1), got {rate}')
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def maybe_checkpoint(fn, *args, enabled: bool):
    """Runs ``fn(*args)``, with activation checkpointing when ``enabled``."""
    if enabled:
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


__all__ = ['PyramidBackbone', 'per_layer_flags', 'drop_path_rates', 'maybe_checkpoint', 'NUM_LEVELS']
