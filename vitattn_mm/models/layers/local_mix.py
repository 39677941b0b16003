"""The learned token-axis transforms of less-attention layers (LaViT's Theta and Psi), in a form that does not
depend on the input resolution."""
import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.tokens import map_head_slices

# Softmax weight of the centre tap at initialisation: transforms start close to the identity, i.e. a
# less-attention layer starts by reusing the previous attention almost unchanged (the paper's Fig. 3 shows
# consecutive attention maps are very similar). Our choice; the paper does not give an initialisation.
INIT_SELF_WEIGHT = 0.8


class ConvexLocalMix(nn.Module):
    """A row-stochastic linear map ``T`` over the tokens of a 2-D grid, one per attention head.

    Output token ``i`` is a convex combination of the input tokens in the ``k x k`` neighbourhood of ``i``:
    ``T[i, j] = w(j - i) / m(i)``, where ``w`` is a softmax-normalised ``k x k`` kernel (learned, per head) and
    ``m(i)`` renormalises the taps that fall inside the grid at the borders. Every row of ``T`` is therefore a
    probability distribution, and ``T`` has the same number of parameters at 224x224 and 1333x800.

    This is how we realise the paper's learned transforms Theta and Psi (Eq. ``A_l = Psi(Theta(A_{l-1})^T)^T``),
    which the paper writes as dense ``N x N`` matrices for a fixed input size: ours are translation-equivariant,
    local and convex. See :class:`~vitattn_mm.models.layers.attention_map.AttentionMap` for how they act.

    Args:
        num_heads: one kernel per head.
        kernel_size: odd neighbourhood size ``k``.
    """

    def __init__(self, num_heads: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be a positive odd number, got {kernel_size}')
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        taps = kernel_size * kernel_size
        logits = torch.zeros(num_heads, taps)
        if taps > 1:
            logits[:, taps // 2] = math.log(INIT_SELF_WEIGHT / (1 - INIT_SELF_WEIGHT) * (taps - 1))
        self.kernel_logits = nn.Parameter(logits)

    def kernel(self) -> torch.Tensor:
        """The per-head convex kernels, shape (heads, 1, k, k)."""
        k = self.kernel_size
        return self.kernel_logits.softmax(dim=-1).view(self.num_heads, 1, k, k)

    def _border_mass(self, kernel: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """m(i): kernel mass inside the grid around each token, shape (1, heads, 1, H, W)."""
        ones = kernel.new_ones(1, self.num_heads, *hw)
        mass = F.conv2d(ones, kernel, padding=self.kernel_size // 2, groups=self.num_heads)
        return mass.unsqueeze(2)

    def mix_rows(self, t: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """``T @ t`` for ``t`` of shape (B, heads, N, X) whose axis N lies on the grid ``hw``.

        Each (batch, head) slice is filtered as a channels-last (X, H, W) map by a depthwise convolution
        (oneDNN's fast path; the channels-first layout is ~10x slower here).
        """
        kernel = self.kernel()
        mass = self._border_mass(kernel, hw)[0]  # (heads, 1, H, W)
        x = t.shape[-1]

        def mix(grid: torch.Tensor, head: int) -> torch.Tensor:
            out = F.conv2d(grid, kernel[head:head + 1].expand(x, 1, -1, -1), padding=self.kernel_size // 2,
                           groups=x)
            return out / mass[head]

        return map_head_slices(t, hw, mix)[0]

    def mix_columns(self, t: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """``t @ T`` for ``t`` of shape (B, heads, R, N) whose last axis N lies on the grid ``hw``.

        ``(t T)[r, j] = sum_i t[r, i] / m(i) * w(j - i)``: the adjoint of :meth:`mix_rows`, i.e. a transposed
        convolution, computed as a depthwise convolution with the flipped kernel (same result, faster on CPU).
        """
        b, h, r, n = t.shape
        kernel = self.kernel()
        grid = (t.reshape(b, h, r, *hw) / self._border_mass(kernel, hw)).reshape(b, h * r, *hw)
        flipped = kernel.flip(-2, -1).repeat_interleave(r, dim=0)
        out = F.conv2d(grid, flipped, padding=self.kernel_size // 2, groups=h * r)
        return out.view(b, h, r, n)

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, kernel_size={self.kernel_size}'
