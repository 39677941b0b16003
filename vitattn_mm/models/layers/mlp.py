"""Feed-forward layers."""
from typing import Tuple

import torch
import torch.nn as nn

from ..utils.tokens import map_to_tokens, tokens_as_map


class MixFFN(nn.Module):
    """PVTv2's feed-forward: Linear -> 3x3 depthwise conv on the token grid -> GELU -> Linear.

    The depthwise convolution gives the tokens their positional information (LaViT, like PVTv2, has no position
    embedding), which also serves the less-attention layers that compute no queries or keys.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        x = self.fc1(x)
        x = map_to_tokens(self.dwconv(tokens_as_map(x, hw)))[0]
        if torch.is_grad_enabled() and x.requires_grad:
            return self.fc2(self.act(x))
        # inference: GELU written over the convolution's output (same kernel, same numbers), which saves allocating
        # a second hidden-size tensor (8x the tokens' size in stage 1); measured in docs/benchmarks.md (Mix-FFN)
        return self.fc2(torch.ops.aten.gelu_(x, approximate=self.act.approximate))


class Mlp(nn.Module):
    """The ViT feed-forward, parameter names (``fc1``, ``fc2``) as in timm."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
