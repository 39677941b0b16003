"""Patch embeddings: image or feature map -> token sequence plus its grid size."""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.tokens import map_to_tokens


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: a strided convolution followed by LayerNorm.

    Same construction as PVTv2 (kernel 7 / stride 4 for the first stage, kernel 3 / stride 2 after): with
    padding ``kernel_size // 2`` the output grid is ``ceil(H / stride) x ceil(W / stride)`` for any input size,
    which keeps every stage's grid aligned with the shared key grid (see
    :class:`~vitattn_mm.models.layers.attention.KeyGridReduction`).
    """

    def __init__(self, in_channels: int, embed_dim: int, kernel_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size, stride, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.proj(x)
        tokens, hw = map_to_tokens(x)
        return self.norm(tokens), hw


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding of a plain ViT (parameter names as in timm: ``proj``).

    Inputs whose sides are not multiples of the patch size are zero-padded at the bottom and right
    (our choice; timm requires exact multiples), so any image size of at least one patch is accepted.
    """

    def __init__(self, in_channels: int = 3, embed_dim: int = 768, patch_size: int = 16):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[2]) % p, (-x.shape[3]) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return map_to_tokens(self.proj(x))
