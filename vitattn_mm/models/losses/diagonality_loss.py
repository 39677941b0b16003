"""LaViT's diagonality-preserving loss, in a bounded form for rectangular (queries x pooled keys) attention."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ...registry import register_model


def diagonality_terms_per_matrix(square: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`diagonality_terms` of every K x K matrix of ``square`` (..., K, K): two tensors of shape (...)."""
    k = square.shape[-1]
    if square.dim() < 2 or square.shape[-2] != k:
        raise ValueError(f'expected square attention, got shape {tuple(square.shape)}')
    dominance, asymmetry = DiagonalityTerms.apply(square)
    return dominance, asymmetry / (2 * k)


class DiagonalityTerms(torch.autograd.Function):
    """Per K x K matrix of ``square`` (..., K, K): the mean over rows of ``relu(max_{j != i} S[i, j] - S[i, i])``
    and ``sum |S - S^T|``, with a backward written for the memory of training (the DP loss runs on every LA
    layer's matrix). Autograd of the direct formulas keeps a masked copy of the matrices (for the row maxima) and
    the float difference ``S - S^T``, and its backward builds three full-size gradients that it then adds; this
    keeps one signed byte per entry and two small tensors per row, and builds one. The values and gradients are
    those of the direct formulas, bit for bit (tested), except where two off-diagonal entries of a row tie for the
    maximum: there one of them gets the row's gradient, not each an equal share.
    """

    @staticmethod
    def forward(ctx, square: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        k = square.shape[-1]
        diff = square - square.transpose(-2, -1)
        sign = diff.sign().to(torch.int8)
        asymmetry = diff.abs_().sum(dim=(-2, -1))
        if k == 1:
            ctx.save_for_backward(sign)
            return square.new_zeros(square.shape[:-2]), asymmetry
        top, index = square.topk(2, dim=-1)  # the largest entry of a row other than its own is one of these two
        first_is_own = index[..., 0] == torch.arange(k, device=square.device)
        largest_other = torch.where(first_is_own, top[..., 1], top[..., 0])
        where_other = torch.where(first_is_own, index[..., 1], index[..., 0])
        excess = largest_other - square.diagonal(dim1=-2, dim2=-1)
        ctx.save_for_backward(sign, where_other, excess >= 0)
        return excess.clamp(min=0).mean(dim=-1), asymmetry

    @staticmethod
    def backward(ctx, grad_dominance: torch.Tensor, grad_asymmetry: torch.Tensor) -> torch.Tensor:
        # (autograd hands zeros, not None, for an output that was not used: materialized gradients)
        sign, *rows = ctx.saved_tensors
        # d sum|S - S^T| / dS = s - s^T for s = sign(S - S^T): 2 s exactly, as int8
        grad = grad_asymmetry[..., None, None] * (sign - sign.transpose(-2, -1))
        if rows:
            where_other, positive = rows
            # what autograd computes for mean (divide by K) and clamp (pass where excess >= 0), then add it at the
            # row's largest other entry and subtract it on the diagonal
            per_row = torch.where(positive, grad_dominance[..., None].expand(positive.shape) / positive.shape[-1],
                                  0.0)
            grad.scatter_add_(-1, where_other[..., None], per_row[..., None])
            grad.diagonal(dim1=-2, dim2=-1).sub_(per_row)
        return grad


def diagonality_terms(square: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Diagonal-dominance and asymmetry terms of row-stochastic square attention.

    Args:
        square: (B, heads, K, K) attention whose rows and columns index the same K key-grid cells, each row a
            probability distribution (queries average-pooled onto the key grid, see
            :meth:`AttentionMap.key_grid_attentions`).

    Returns:
        ``dominance``: mean over rows of ``relu(max_{j != i} S[i, j] - S[i, i])``, in [0, 1]; zero exactly when
        every cell attends to itself at least as much as to any other cell.
        ``asymmetry``: ``sum |S - S^T| / (2 K)`` averaged over batch and heads, in [0, 1]; zero for symmetric S.
    """
    dominance, asymmetry = diagonality_terms_per_matrix(square)
    return dominance.mean(), asymmetry.mean()


@register_model
class DiagonalityPreservingLoss(nn.Module):
    """Diagonality-preserving loss for the transformed attention of less-attention layers.

    The paper adds, for every transformed attention ``A``, a term that rewards symmetry and a large diagonal
    (self-affinity) relative to the rest of each row. Written on unnormalised transformed attention, that term is
    unbounded below (scaling the diagonal up decreases it without end), and it assumes square N x N attention.

    Ours: each LA layer's attention (rows: queries, columns: the reduced key grid) is first average-pooled over
    the query grid onto the key grid, giving a row-stochastic K x K matrix ``S`` whose cell i is the same image
    region as key i (for 'prob' attention the LA layers' Psi act after this pooling, on the key grid; see
    :meth:`~vitattn_mm.models.layers.attention_map.AttentionMap.key_grid_attentions`). Then, with
    :func:`diagonality_terms`,
    ``loss = loss_weight * mean_over_layers((dominance(S) + asymmetry(S)) / 2)``, which lies in ``[0, loss_weight]``
    and is zero when every region attends to itself most and attention between regions is symmetric.

    Args:
        loss_weight: the weight; ``0`` switches the loss (and the collection of attention for it) off.
        max_cells: key grids with more cells are coarsened for the loss by the smallest integer factor that brings
            them within it (our choice, for cost at detection resolutions; ``None``: never). Default 300.
    """

    def __init__(self, loss_weight: float = 1.0, max_cells: Optional[int] = 300):
        super().__init__()
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
        if max_cells is not None and (isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells < 1):
            raise ValueError(f'max_cells must be a positive int or None, got {max_cells!r}')
        self.loss_weight = float(loss_weight)
        # key grids with more cells are coarsened for the loss (AttentionMap.key_grid_attentions): 300 keeps
        # 512x512 inputs (16 x 16 key cells) exact and coarsens 1333x800 (25 x 42) by 2 (13 x 21 = 273 cells)
        self.max_cells = max_cells

    def forward(self, squares: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(squares) == 0:
            raise ValueError('DiagonalityPreservingLoss got no attention: the backbone has no less-attention layer')
        # the layers whose attention has the same shape (those of one stage) in one batch of matrices
        groups = {}
        for square in squares:
            groups.setdefault(tuple(square.shape), []).append(square)
        per_layer = []
        for group in groups.values():
            dominance, asymmetry = diagonality_terms_per_matrix(torch.stack(group))  # (layers, B, heads)
            per_layer.append((dominance.flatten(1).mean(1) + asymmetry.flatten(1).mean(1)) / 2)
        return self.loss_weight * torch.cat(per_layer).mean()

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, max_cells={self.max_cells}'
