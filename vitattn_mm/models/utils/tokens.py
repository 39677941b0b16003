"""Conversions between (B, C, H, W) feature maps, (B, N, C) token sequences and (B, heads, N, d) head views."""
from typing import Tuple

import torch


def map_to_tokens(x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(B, C, H, W) -> ((B, H*W, C), (H, W)); no copy for a channels-last map."""
    hw = (x.shape[2], x.shape[3])
    return x.flatten(2).transpose(1, 2), hw


def tokens_to_map(x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) -> contiguous (B, C, H, W)."""
    b, n, c = x.shape
    h, w = hw
    if n != h * w:
        raise ValueError(f'{n} tokens cannot form a {h}x{w} grid')
    return x.transpose(1, 2).reshape(b, c, h, w).contiguous()


def tokens_as_map(x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W) as a channels-last *view* (no copy).

    Convolutions and pooling run on it directly (oneDNN's channels-last kernels are the fast ones on CPU), and
    :func:`map_to_tokens` turns a channels-last result back into tokens without a copy either.
    """
    b, n, c = x.shape
    h, w = hw
    if n != h * w:
        raise ValueError(f'{n} tokens cannot form a {h}x{w} grid')
    return x.contiguous().view(b, h, w, c).permute(0, 3, 1, 2)


def channels_last_grid(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """One image's contiguous (h * w, C) token matrix as a channels-last (1, C, h, w) map: the view that
    :func:`tokens_as_map` makes, as one strided view (one operator call instead of two; for inference loops that run
    it many times per forward, like the Mix-FFN bands, where the calls add up)."""
    c = tokens.shape[1]
    return tokens.as_strided((1, c, h, w), (h * w * c, 1, w * c, c))


def grid_rows_as_tokens(grid: torch.Tensor, first: int, end: int) -> torch.Tensor:
    """Rows ``first`` to ``end`` of a (1, C, H, W) map as a ((end - first) * W, C) token matrix: what
    :func:`map_to_tokens` gives for those rows, as one strided view for a channels-last map (instead of a slice,
    flatten and transpose), else through :func:`map_to_tokens` (a copy)."""
    _, c, _, w = grid.shape
    if not grid.is_contiguous(memory_format=torch.channels_last):
        return map_to_tokens(grid[:, :, first:end])[0].reshape(-1, c)
    return grid.as_strided(((end - first) * w, c), (c, 1), grid.storage_offset() + first * w * c)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C // heads), a view."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def head_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for (B, heads, N, K) and (B, heads, K, d): one ``bmm`` over B x heads (``torch.matmul`` on 4-D
    operands adds broadcasting ``expand``/``view`` calls; the products are the same)."""
    bs, heads, n, _ = a.shape
    out = torch.bmm(a.reshape(bs * heads, n, a.shape[3]), b.reshape(bs * heads, b.shape[2], b.shape[3]))
    return out.view(bs, heads, n, b.shape[3])
