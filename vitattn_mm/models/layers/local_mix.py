"""The learned token-axis transforms of less-attention layers (LaViT's Theta and Psi), in a form that does not
depend on the input resolution."""
import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

# Softmax weight of the centre tap at initialisation: transforms start close to the identity, i.e. a
# less-attention layer starts by reusing the previous attention almost unchanged (the paper's Fig. 3 shows
# consecutive attention maps are very similar). Our choice; the paper does not give an initialisation.
INIT_SELF_WEIGHT = 0.8


def scaled(x: torch.Tensor, factor: torch.Tensor, overwrite: bool) -> torch.Tensor:
    """``x * factor``; in place when ``overwrite`` and autograd needs neither operand (inference)."""
    if overwrite and not (torch.is_grad_enabled() and (x.requires_grad or factor.requires_grad)):
        return x.mul_(factor)
    return x * factor


class ConvexLocalMix(nn.Module):
    """A row-stochastic linear map ``T`` over the tokens of a 2-D grid, one per attention head.

    Output token ``i`` is a convex combination of the input tokens in the ``k x k`` neighbourhood of ``i``:
    ``T[i, j] = w(j - i) / m(i)``, where ``w`` is a softmax-normalised ``k x k`` kernel (learned, per head) and
    ``m(i)`` renormalises the taps that fall inside the grid at the borders. Every row of ``T`` is therefore a
    probability distribution, and ``T`` has the same number of parameters at 224x224 and 1333x800.

    This is how we realise the paper's learned transforms Theta and Psi (Eq. ``A_l = Psi(Theta(A_{l-1})^T)^T``),
    which the paper writes as dense ``N x N`` matrices for a fixed input size: ours are translation-equivariant,
    local and convex. See :class:`~vitattn_mm.models.layers.attention_map.AttentionMap` for how they act.
    :meth:`on_grid` prepares ``T`` for one grid (:class:`GridMix`); it applies to all heads in one convolution.

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
        self._prepared: Optional[tuple] = None  # (grid, kernel storage, its version, GridMix): see on_grid

    def kernel(self) -> torch.Tensor:
        """The per-head convex kernels, shape (heads, 1, k, k)."""
        k = self.kernel_size
        return self.kernel_logits.softmax(dim=-1).view(self.num_heads, 1, k, k)

    def on_grid(self, hw: Tuple[int, int]) -> 'GridMix':
        """``T`` on the grid ``hw``: kernels and border normalisation computed once, for every use on that grid.

        In inference (autograd off, no autocast, not compiled or traced) the prepared transform is also kept for the
        next call on the same grid while the kernel is unchanged (same storage, same version counter: an optimizer
        step or ``load_state_dict`` changes the version), so a model run again at the same input size prepares
        nothing (about 10 aten calls per transform, two transforms per less-attention layer). With autograd on it
        is prepared anew on every call: the kernel changes with every step and autograd needs the graph.
        """
        logits = self.kernel_logits
        if (torch.is_grad_enabled() or torch.is_autocast_enabled(logits.device.type)
                or torch.compiler.is_compiling() or torch.jit.is_tracing()):
            return GridMix(self.kernel(), hw)
        hw = (int(hw[0]), int(hw[1]))
        kept = self._prepared
        # ``kept`` holds the kernel's storage (a detached view), so no other tensor can take its address meanwhile
        if kept is None or kept[0] != hw or kept[1].data_ptr() != logits.data_ptr() or kept[2] != logits._version:
            kept = self._prepared = (hw, logits.detach(), logits._version, GridMix(self.kernel(), hw))
        return kept[3]

    def mix_rows(self, t: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """``T @ t`` for ``t`` of shape (B, heads, N, X) whose axis N lies on the grid ``hw``."""
        return self.on_grid(hw).rows(t)

    def mix_columns(self, t: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """``t @ T`` for ``t`` of shape (B, heads, R, N) whose last axis N lies on the grid ``hw``."""
        return self.on_grid(hw).columns(t)

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, kernel_size={self.kernel_size}'


class GridMix:
    """A :class:`ConvexLocalMix` prepared for one grid: ``T = diag(1 / m) C``, with ``C`` the zero-padded
    depthwise convolution by the per-head kernel and ``m = C 1`` its mass inside the grid.

    All heads are handled by one convolution: the heads are folded into the channels (a (heads x X)-channel
    depthwise convolution whose weight repeats each head's kernel), so no per-head loop runs. For that, matrices
    are used in a *heads-inner* memory layout (B, N, heads, X), seen through a (B, heads, N, X) view; a matrix in
    the usual (B, heads, N, X) layout with more than one head is copied into it once. Weights (per channel count)
    and the border mass (per grid, one value per token and head) are made once and reused by every application (a
    chain of less-attention layers applies the same transform several times).
    """

    def __init__(self, kernel: torch.Tensor, hw: Tuple[int, int]):
        self.kernel = kernel
        self.hw = (int(hw[0]), int(hw[1]))
        self.num_heads = kernel.shape[0]
        self.pad = kernel.shape[-1] // 2
        self._cache: Dict[tuple, torch.Tensor] = {}

    def _weight(self, per_head: int, flipped: bool = False, heads_inner: bool = False) -> torch.Tensor:
        """Depthwise weight for ``heads x per_head`` channels: head-major (each kernel repeated ``per_head``
        times) or, with ``heads_inner``, the kernels tiled ``per_head`` times."""
        key = ('weight', per_head, flipped, heads_inner)
        if key not in self._cache:
            k = self.kernel.flip(-2, -1) if flipped else self.kernel
            self._cache[key] = k.repeat(per_head, 1, 1, 1) if heads_inner else k.repeat_interleave(per_head, 0)
        return self._cache[key]

    def _row_band_weight(self) -> torch.Tensor:
        """For one head: weight (W, W, k, 1) with ``[x', x, a] = w_flipped[a, x - x' + pad]`` (zero off the band)."""
        if 'band' not in self._cache:
            k, width = self.kernel.shape[-1], self.hw[1]
            flipped = self.kernel[0, 0].flip(-2, -1)
            shifts = torch.stack([torch.ones(width - abs(o)).diag(o) if width > abs(o) else torch.zeros(width, width)
                                  for o in range(-self.pad, self.pad + 1)]).to(flipped)
            self._cache['band'] = torch.einsum('ab,bpq->pqa', flipped, shifts).unsqueeze(-1)
            assert self._cache['band'].shape == (width, width, k, 1)
        return self._cache['band']

    @property
    def inv_mass(self) -> torch.Tensor:
        """1 / m(i), shape (1, heads, H, W); m > 0 since the centre tap lies inside the grid. A token at least ``pad``
        from every edge has all its taps inside, so its m is the kernel's sum, 1: there the value is set to exactly 1
        (in floating point the sum of the softmax is 1 only up to rounding), so only the border ring is scaled
        (:meth:`map` in training touches that ring alone) and the interior has no gradient through the mass."""
        if 'inv_mass' not in self._cache:
            ones = self.kernel.new_ones(1, self.num_heads, *self.hw)
            mass = F.conv2d(ones, self.kernel, padding=self.pad, groups=self.num_heads)
            inside = self._interior()
            self._cache['inv_mass'] = (mass.reciprocal() if inside is None
                                       else torch.where(inside, 1.0, mass.reciprocal()))
        return self._cache['inv_mass']

    @property
    def has_interior(self) -> bool:
        """Whether some token's whole neighbourhood lies inside the grid (else every token is on the border ring)."""
        (h, w), p = self.hw, self.pad
        return h > 2 * p and w > 2 * p

    def _interior(self) -> Optional[torch.Tensor]:
        """Mask (H, W) of the tokens whose whole neighbourhood lies inside the grid; None if there are none."""
        if not self.has_interior:
            return None
        (h, w), p = self.hw, self.pad
        inside = torch.zeros(h, w, dtype=torch.bool, device=self.kernel.device)
        inside[p:h - p, p:w - p] = True
        return inside

    def _check(self, n: int, heads: int) -> None:
        if n != self.hw[0] * self.hw[1] or heads != self.num_heads:
            raise ValueError(f'{heads} heads x {n} tokens do not fit this transform ({self.num_heads} heads on a '
                             f'{self.hw[0]}x{self.hw[1]} grid)')

    def map(self, x: torch.Tensor) -> torch.Tensor:
        """``T`` applied to every channel of a channels-last map ``x`` (B, heads * X, H, W) with head-major channels
        (the layout of a token tensor (B, N, heads * X) seen by :func:`tokens_as_map`, and of an attention matrix in
        heads-inner layout, whose X is its other axis): one depthwise convolution, then the border normalisation
        ``1 / m``, one value per token and head broadcast over the head's X channels. Returns the same layout.

        Inference multiplies the whole map in place by :attr:`inv_mass` (1 in the interior). Training multiplies the
        border ring alone (in place, four slices), where the whole map had cost a full-size product and, in the
        backward, two more and a reduction for the gradient of the mass (in-process A/B of a LaViT-S training step,
        Intel Xeon: 2.240 -> 2.045 s at 2x512x512, 7.05 -> 6.65 s at 1x1333x800). Both modes give the same bits:
        the interior's factor is exactly 1.
        """
        b, c, h, w = x.shape
        self._check(h * w, self.num_heads)
        out = F.conv2d(x.contiguous(memory_format=torch.channels_last), self._weight(c // self.num_heads),
                       padding=self.pad, groups=c)
        if not self.pad:
            return out  # a 1x1 kernel: m = 1 everywhere
        # (B, heads, X, H, W): a view of the channels-last map, so the per-head mass broadcasts over X
        grid = out.view(b, self.num_heads, c // self.num_heads, h, w)
        inv = self.inv_mass.unsqueeze(2)
        if torch.is_grad_enabled() and (out.requires_grad or self.kernel.requires_grad):
            if not self.has_interior:
                return (grid * inv).view(b, c, h, w)
            return ScaleBorderRing.apply(out, inv, self.num_heads, self.pad)
        grid.mul_(inv)
        return out

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """``T @ t`` for ``t`` of shape (B, heads, N, X), N on the grid: one channels-last depthwise convolution
        with heads x X channels. The result is a (B, heads, N, X) view of a heads-inner tensor."""
        b, heads, n, x = t.shape
        self._check(n, heads)
        h, w = self.hw
        inner = t.transpose(1, 2)
        if not inner.is_contiguous():
            inner = inner.contiguous()  # one copy for a multi-head matrix in the usual layout
        out = self.map(inner.view(b, h, w, heads * x).permute(0, 3, 1, 2))
        return out.permute(0, 2, 3, 1).reshape(b, n, heads, x).transpose(1, 2)

    def columns(self, t: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
        """``t @ T`` for ``t`` of shape (B, heads, R, N), N on the grid; keeps ``t``'s layout (usual or
        heads-inner). ``overwrite``: ``t`` may be scaled in place (a temporary of the caller).

        ``(t T)[r, j] = sum_i t[r, i] / m(i) * w(j - i)``: the adjoint of :meth:`rows`, i.e. a transposed
        convolution, computed as one depthwise convolution over the (R x heads) rows with the flipped kernels.
        """
        b, heads, r, n = t.shape
        self._check(n, heads)
        h, w = self.hw
        inv = self.inv_mass.view(heads, n)
        if heads == 1 and t.is_contiguous():
            # one head: a dense convolution along the key rows whose W x W channel mixing is the kernel's
            # horizontal taps (a channels-last GEMM, ~1.5x faster here than R tiny depthwise images)
            grid = scaled(t, inv.view(1, 1, 1, n), overwrite).view(b * r, h, 1, w).permute(0, 3, 1, 2)
            out = F.conv2d(grid, self._row_band_weight(), padding=(self.pad, 0))
            return out.permute(0, 2, 3, 1).reshape(b, 1, r, n)
        if t.is_contiguous():
            grid = scaled(t, inv.view(1, heads, 1, n), overwrite).view(b, heads * r, h, w)
            out = F.conv2d(grid, self._weight(r, flipped=True), padding=self.pad, groups=heads * r)
            return out.view(b, heads, r, n)
        inner = t.transpose(1, 2)
        if not inner.is_contiguous():
            return self.columns(t.contiguous(), overwrite=True)
        grid = scaled(inner, inv.view(1, 1, heads, n), overwrite).view(b, r * heads, h, w)
        out = F.conv2d(grid, self._weight(r, flipped=True, heads_inner=True), padding=self.pad, groups=heads * r)
        return out.view(b, r, heads, n).transpose(1, 2)


class ScaleBorderRing(torch.autograd.Function):
    """Training's border normalisation: ``out`` (B, heads * X, H, W; a convolution's output, which its backward does
    not need) is multiplied in place by ``inv`` (1, heads, 1, H, W) on the ring of tokens within ``pad`` of the
    grid's edge; the interior's factor is exactly 1 and is skipped. Autograd of a product over the whole map would
    cost it in the forward and twice more in the backward plus a reduction (for the gradient of ``inv``); here the
    backward copies the incoming gradient once and works on the ring alone. Same values and gradients as
    ``out * inv`` (tested against torch's numerical gradient)."""

    @staticmethod
    def ring(h: int, w: int, p: int):
        """(rows, columns) slices of the top and bottom bands and of the left and right bands between them."""
        return ((slice(0, p), slice(None)), (slice(h - p, h), slice(None)),
                (slice(p, h - p), slice(0, p)), (slice(p, h - p), slice(w - p, w)))

    @staticmethod
    def forward(ctx, out: torch.Tensor, inv: torch.Tensor, heads: int, pad: int) -> torch.Tensor:
        b, c, h, w = out.shape
        grid = out.view(b, heads, c // heads, h, w)
        ring = ScaleBorderRing.ring(h, w, pad)
        before = [grid[..., rows, cols].clone() for rows, cols in ring]
        for rows, cols in ring:
            grid[..., rows, cols].mul_(inv[..., rows, cols])
        ctx.mark_dirty(out)
        ctx.save_for_backward(inv, *before)
        ctx.heads, ctx.pad = heads, pad
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inv, *before = ctx.saved_tensors
        b, c, h, w = grad.shape
        ring = ScaleBorderRing.ring(h, w, ctx.pad)
        grad_out = grad.clone(memory_format=torch.preserve_format)
        shape = (b, ctx.heads, c // ctx.heads, h, w)
        grid, incoming = grad_out.view(shape), grad.reshape(shape)  # (the incoming gradient may be any layout)
        grad_inv = torch.zeros_like(inv) if ctx.needs_input_grad[1] else None
        for (rows, cols), kept in zip(ring, before):
            grid[..., rows, cols].mul_(inv[..., rows, cols])
            if grad_inv is not None:
                grad_inv[..., rows, cols] = (incoming[..., rows, cols] * kept).sum(dim=(0, 2), keepdim=True)
        return grad_out, grad_inv, None, None
