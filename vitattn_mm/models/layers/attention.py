"""Vanilla multi-head attention layers: LaViT's spatial-reduction attention and the plain ViT attention."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.tokens import head_matmul, map_to_tokens, merge_heads, split_heads, tokens_as_map
from .attention_map import ATTENTION_KINDS, AttentionMap, AttentionResidual


def softmax_last(logits: torch.Tensor) -> torch.Tensor:
    """``logits.softmax(-1)``; in inference written over ``logits`` (same kernel, same numbers), which saves
    allocating (and page-faulting) a second full-size matrix. ``logits`` must be a temporary of the caller."""
    if torch.is_grad_enabled() and logits.requires_grad:
        return logits.softmax(dim=-1)
    return torch.ops.aten._softmax.out(logits, -1, False, out=logits)


class KeyGridReduction(nn.Module):
    """Spatial reduction of the key/value tokens (PVTv2's SRA): strided convolution + LayerNorm.

    Our addition: the query grid is zero-padded at the bottom/right to a multiple of ``ratio``, so the key grid is
    ``ceil(H / ratio) x ceil(W / ratio)``. With ratios 8, 4, 2, 1 at strides 4, 8, 16, 32 every stage then attends
    to the *same* ``ceil(H_img / 32) x ceil(W_img / 32)`` key grid at any input size, which is what lets LaViT
    carry attention across stages by pooling only its query axis.
    """

    def __init__(self, dim: int, ratio: int):
        super().__init__()
        self.ratio = ratio
        if ratio > 1:
            self.sr = nn.Conv2d(dim, dim, ratio, ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        if self.ratio == 1:
            return x, hw
        grid = tokens_as_map(x, hw)
        r = self.ratio
        if hw[0] % r or hw[1] % r:
            grid = F.pad(grid, (0, (-hw[1]) % r, 0, (-hw[0]) % r))
        tokens, key_hw = map_to_tokens(self.sr(grid))
        return self.norm(tokens), key_hw


class SpatialReductionAttention(nn.Module):
    """LaViT's vanilla-attention (VA) layer: multi-head attention of the queries over the reduced key grid.

    ``A = softmax(Q K^T / sqrt(d))``, ``Z = A V`` (paper Sec. 3, VA layers). Its attention is returned as an
    :class:`AttentionMap` for the less-attention layers that follow. In the first layer of a stage the previous
    stage's downsampled attention (an :class:`AttentionResidual`) is merged in before ``A V``.

    Args:
        dim: channels. num_heads: heads. sr_ratio: key grid reduction.
        qkv_bias: bias in the q/k/v projections.
        attention_kind: ``'prob'`` or ``'logit'``: what is handed to the next layer (see :class:`AttentionMap`).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True,
                 attention_kind: str = 'prob'):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        if attention_kind not in ATTENTION_KINDS:
            raise ValueError(f'attention_kind must be one of {ATTENTION_KINDS}, got {attention_kind!r}')
        self.num_heads = num_heads
        self.scale = (dim // num_heads)**-0.5
        self.attention_kind = attention_kind
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.reduce = KeyGridReduction(dim, sr_ratio)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                residual: Optional[AttentionResidual] = None) -> Tuple[torch.Tensor, AttentionMap]:
        q = split_heads(self.q(x), self.num_heads)
        keys, key_hw = self.reduce(x, hw)
        k = split_heads(self.k(keys), self.num_heads)
        logits = head_matmul(q * self.scale, k.transpose(-2, -1))
        if self.attention_kind == 'logit':
            if residual is not None:
                logits = residual.merge_into(logits)
            attn = AttentionMap(logits, hw, key_hw, 'logit')
        else:
            probs = softmax_last(logits)
            del logits
            if residual is not None:
                probs = residual.merge_into(probs)
            attn = AttentionMap(probs, hw, key_hw, 'prob')
        return self.proj(attn.apply_tokens(self.v(keys))), attn


class ViTAttention(nn.Module):
    """Plain ViT multi-head self-attention; parameter names (``qkv``, ``proj``) as in timm's ViT."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))
