"""Feed-forward layers."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.tokens import channels_last_grid, grid_rows_as_tokens, map_to_tokens, tokens_as_map


# Inference on the CPU computes MixFFN's hidden layer in bands of grid rows with at most about this many hidden values
# each (8 MB in float32), so that fc1's output, the convolution's and the GELU stay in the CPU caches between the steps
# instead of streaming hundred-MB tensors through memory. Our choice: LaViT-S stage 1 at 1333x800 has 34M hidden
# values (17 bands); that feed-forward took 143 ms in one pass and 79 ms in bands, and its hidden activations fell from
# 2 x 137 MB to 2 x 8 MB (Intel Xeon, 2 threads; docs/benchmarks.md, "Mix-FFN variants"), with the same numbers (the
# bands overlap by the convolution's halo). Training (autograd on) keeps one pass.
BAND_VALUES = 1 << 21
# ... but only when the hidden layer needs more than this many bands (see MixFFN._band_rows).
MIN_BANDS = 2


class MixFFN(nn.Module):
    """PVTv2's feed-forward: Linear -> 3x3 depthwise conv on the token grid -> GELU -> Linear.

    The depthwise convolution gives the tokens their positional information (LaViT, like PVTv2, has no position
    embedding), which also serves the less-attention layers that compute no queries or keys.

    ``band_values``: in inference on the CPU, the hidden layer runs image by image in bands of grid rows of about
    this many hidden values (see ``BAND_VALUES``); ``None`` or 0: one pass. Results are the same either way. The
    bands keep the hidden layer in the CPU's caches; on other devices (a GPU) the hidden layer runs in one pass,
    where a band's 8 operator calls would be 8 kernel launches and there is no cache of that kind to fit.
    """

    def __init__(self, dim: int, hidden_dim: int, band_values: Optional[int] = BAND_VALUES):
        super().__init__()
        if band_values is not None and (isinstance(band_values, bool) or not isinstance(band_values, int)
                                        or band_values < 0):
            raise ValueError(f'band_values must be a non-negative int or None (one pass), got {band_values!r}')
        self.band_values = band_values
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.fc2(self.act(map_to_tokens(self.dwconv(tokens_as_map(self.fc1(x), hw)))[0]))
        rows = self._band_rows(self.fc1.out_features, hw) if x.device.type == 'cpu' else hw[0]
        if rows < hw[0]:
            return self._forward_in_bands(x, hw, rows)
        # inference: GELU written over the convolution's output (same kernel, same numbers), which saves allocating
        # a second hidden-size tensor (8x the tokens' size in stage 1); measured in docs/benchmarks.md (Mix-FFN)
        hidden = map_to_tokens(self.dwconv(tokens_as_map(self.fc1(x), hw)))[0]
        return self.fc2(torch.ops.aten.gelu_(hidden, approximate=self.act.approximate))

    def _band_rows(self, values_per_token: int, hw: Tuple[int, int]) -> int:
        """Grid rows per band: equal bands of at most about ``band_values`` hidden values, or all rows (one pass)
        when the hidden layer holds at most ``MIN_BANDS`` bands' worth: two bands were no faster than one pass
        (LaViT-S's stage 2 at 512x512, 4.2M values: 10.9 ms in two bands, 9.4 ms in one pass; its stage 4 at
        1333x800, 2.2M values: 17.2 vs 15.2 ms; Intel Xeon), and each band costs operator calls."""
        if not self.band_values:
            return hw[0]
        bands = min(hw[0], math.ceil(hw[0] * hw[1] * values_per_token / self.band_values))
        return math.ceil(hw[0] / bands) if bands > MIN_BANDS else hw[0]

    def _forward_in_bands(self, x: torch.Tensor, hw: Tuple[int, int], rows: int) -> torch.Tensor:
        """Inference, image by image, ``rows`` grid rows at a time: each band is extended by the convolution's halo
        (one row above and below, zero padding only at the grid's own border), and only its own rows are kept.
        A band of grid rows is a run of rows of the image's (N, C) token matrix, so each band is 8 aten calls:
        fc1 on the rows, one strided view as a channels-last map, the convolution, one strided view of the band's
        own rows, GELU in place, fc2 written straight into the output's rows. The calls per band are what the bands
        cost at small inputs."""
        b, n, c = x.shape
        h, w = hw
        halo = self.dwconv.padding[0]
        hidden_dim, out_dim = self.fc1.out_features, self.fc2.out_features
        w1, w2 = self.fc1.weight.t(), self.fc2.weight.t()
        x = x.contiguous()
        out = x.new_empty(b, n, out_dim)
        for image, image_out in zip(x, out):
            for top in range(0, h, rows):
                bottom = min(h, top + rows)
                lo, hi = max(0, top - halo), min(h, bottom + halo)
                hidden = torch.addmm(self.fc1.bias, image[lo * w:hi * w], w1)  # ((hi - lo) * w, hidden_dim)
                hidden = F.conv2d(channels_last_grid(hidden, hi - lo, w), self.dwconv.weight, self.dwconv.bias,
                                  padding=halo, groups=hidden_dim)
                own = grid_rows_as_tokens(hidden, top - lo, bottom - lo)
                own = torch.ops.aten.gelu_(own, approximate=self.act.approximate)
                torch.addmm(self.fc2.bias, own, w2, out=image_out[top * w:bottom * w])
                # drop this band's convolution output before the next band allocates its own, so that the allocator
                # hands the same memory back instead of fresh pages (each first touch of a page is a fault): stage-1
                # feed-forward of LaViT-S at 1333x800 79 -> 70 ms, stage 2 60 -> 55 ms (Intel Xeon, glibc malloc)
                del hidden, own
        return out


class Mlp(nn.Module):
    """The ViT feed-forward, parameter names (``fc1``, ``fc2``) as in timm."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
