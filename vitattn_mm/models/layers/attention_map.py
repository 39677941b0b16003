"""An attention matrix carried from one layer to the next (and from one stage to the next) in LaViT."""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from ..utils.tokens import map_head_slices
from .local_mix import ConvexLocalMix

ATTENTION_KINDS = ('prob', 'logit')


def pool_rows(t: torch.Tensor, hw: Tuple[int, int], factor: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Average-pool the rows of ``t`` (B, heads, N, X), whose axis N lies on grid ``hw``, by ``factor``.

    ``ceil_mode`` makes the pooled grid ``ceil(H / factor) x ceil(W / factor)``, the grid that our patch
    embeddings and key reductions produce, and averages partial windows over their in-grid part only, so pooled
    rows of a row-stochastic matrix stay row-stochastic.
    """
    if factor == 1:
        return t, hw
    return map_head_slices(t, hw, lambda grid, head: F.avg_pool2d(grid, factor, factor, ceil_mode=True))


class AttentionMap:
    """Attention of one layer over (queries x keys), shape (B, heads, Nq, Nk), with its grids.

    ``kind='prob'`` (our default): ``matrix`` holds softmax probabilities ``P`` of the last vanilla-attention
    layer, and the less-attention transforms applied since then are kept *factored*: the effective attention
    is ``A = Psi_n ... Psi_1 P Theta_1 ... Theta_n``. Every ``Psi``/``Theta`` is row-stochastic, so ``A`` stays a
    probability matrix and needs no softmax, and ``A @ V`` is computed as
    ``Psi_n(...Psi_1(P @ Theta_1(...Theta_n(V))))``: the transforms act on ``V`` (Nk x d) and on the output
    (Nq x d), never on the Nq x Nk matrix. A less-attention layer then costs one ``P @ V`` product, with neither
    ``Q K^T`` nor softmax.

    ``kind='logit'`` (the paper's form): ``matrix`` holds pre-softmax logits ``L``; a less-attention layer
    computes ``L_l = Psi L_{l-1} Theta`` explicitly over the Nq x Nk matrix and then ``softmax(L_l) V``.
    It skips only ``Q K^T`` and exists for comparison (``tools/analysis/benchmark_backbones.py``).
    """

    def __init__(self, matrix: torch.Tensor, query_hw: Tuple[int, int], key_hw: Tuple[int, int],
                 kind: str = 'prob', psis: Sequence[ConvexLocalMix] = (),
                 thetas: Sequence[ConvexLocalMix] = ()):
        if kind not in ATTENTION_KINDS:
            raise ValueError(f'attention kind must be one of {ATTENTION_KINDS}, got {kind!r}')
        self.matrix = matrix
        self.query_hw = tuple(query_hw)
        self.key_hw = tuple(key_hw)
        self.kind = kind
        self.psis = tuple(psis)
        self.thetas = tuple(thetas)

    @property
    def num_heads(self) -> int:
        return self.matrix.shape[1]

    def transformed(self, psi: ConvexLocalMix, theta: ConvexLocalMix) -> 'AttentionMap':
        """The attention of a less-attention layer: ``Psi A Theta``."""
        if self.kind == 'prob':
            return AttentionMap(self.matrix, self.query_hw, self.key_hw, 'prob',
                                self.psis + (psi, ), self.thetas + (theta, ))
        logits = theta.mix_columns(psi.mix_rows(self.matrix, self.query_hw), self.key_hw)
        return AttentionMap(logits, self.query_hw, self.key_hw, 'logit')

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``A @ v`` for values ``v`` of shape (B, heads, Nk, d)."""
        if self.kind == 'logit':
            return self.matrix.softmax(dim=-1) @ v
        for theta in reversed(self.thetas):
            v = theta.mix_rows(v, self.key_hw)
        z = self.matrix @ v
        for psi in self.psis:
            z = psi.mix_rows(z, self.query_hw)
        return z

    def probabilities(self) -> torch.Tensor:
        """The explicit row-stochastic matrix A (B, heads, Nq, Nk). Costly at full resolution: analysis only."""
        return self.pooled(1).matrix if self.kind == 'prob' else self.matrix.softmax(dim=-1)

    def pooled(self, factor: int) -> 'AttentionMap':
        """The attention with its query grid average-pooled by ``factor``, all transforms applied.

        For probabilities: ``pool(Psi_n ... Psi_1 P) Theta_1 ... Theta_n`` (the Psi act before pooling, the
        Theta after it, on the smaller matrix). For logits the logits are pooled.
        """
        a = self.matrix
        for psi in self.psis:
            a = psi.mix_rows(a, self.query_hw)
        a, hw = pool_rows(a, self.query_hw, factor)
        for theta in self.thetas:
            a = theta.mix_columns(a, self.key_hw)
        return AttentionMap(a, hw, self.key_hw, self.kind)

    def carried(self, factor: int) -> 'AttentionMap':
        """The attention handed to the next stage: as :meth:`pooled`, but the Psi act *after* pooling.

        Pooling first makes the Psi act on the 4x smaller next-stage query grid (their 3x3 neighbourhood then spans
        2x2 times the area): the stage boundary costs one pooling pass over the full matrix instead of one pass per
        LA layer. Theta acts on the key axis and commutes with query pooling, so for Theta this is exact. Our
        approximation; the exact :meth:`pooled` serves the loss and the analysis tools.
        """
        a, hw = pool_rows(self.matrix, self.query_hw, factor)
        for psi in self.psis:
            a = psi.mix_rows(a, hw)
        for theta in self.thetas:
            a = theta.mix_columns(a, self.key_hw)
        return AttentionMap(a, hw, self.key_hw, self.kind)


class AttentionResidual:
    """The previous stage's downsampled attention ``D``, to be merged into a stage's first attention.

    Probabilities: ``(1 - g) * P + g * D`` (a convex combination, so rows stay distributions);
    logits: ``L + g * D``. ``g`` is a per-head gate in [0, 1].
    """

    def __init__(self, matrix: torch.Tensor, gate: torch.Tensor, kind: str):
        self.matrix = matrix
        self.gate = gate.view(1, -1, 1, 1)
        self.kind = kind

    def merge_into(self, current: torch.Tensor) -> torch.Tensor:
        if current.shape != self.matrix.shape:
            raise RuntimeError(f'carried attention {tuple(self.matrix.shape)} does not match the stage attention '
                               f'{tuple(current.shape)}: query and key grids of consecutive stages must align')
        if self.kind == 'prob':
            return torch.lerp(current, self.matrix, self.gate)
        return current + self.gate * self.matrix
