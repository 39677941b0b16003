"""Conversions between (B, C, H, W) feature maps and (B, N, C) token sequences."""
from typing import Callable, Tuple

import torch


def map_to_tokens(x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(B, C, H, W) -> ((B, H*W, C), (H, W))."""
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


def map_head_slices(t: torch.Tensor, hw: Tuple[int, int], fn: Callable[[torch.Tensor, int], torch.Tensor]):
    """Applies ``fn(maps, head)`` to every head of ``t`` (B, heads, N, X), N lying on the grid ``hw``.

    Each head's (B, N, X) slice is handed over as a channels-last (B, X, H, W) view (no copy for one head; with
    several heads the batch stride is not channels-last and the convolution makes its own copy); ``fn`` returns a
    (B, X, H', W') map. Returns the results as (B, heads, H'*W', X) and the grid (H', W').
    """
    b, h, n, x = t.shape
    t = t.contiguous()
    outs = [fn(t[:, g].view(b, *hw, x).permute(0, 3, 1, 2), g) for g in range(h)]
    new_hw = (outs[0].shape[2], outs[0].shape[3])
    rows = [o.permute(0, 2, 3, 1).reshape(b, -1, x) for o in outs]
    joined = rows[0].unsqueeze(1) if h == 1 else torch.stack(rows, dim=1)
    return joined, new_hw
