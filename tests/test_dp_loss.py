"""The diagonality-preserving loss: bounds, zeros, differentiability, registry."""
import pytest
import torch

from vitattn_mm.models.losses import DiagonalityPreservingLoss, diagonality_terms
from vitattn_mm.registry import MODELS


def test_zero_for_dominant_symmetric_attention():
    k = 6
    s = torch.full((2, 3, k, k), 0.1 / (k - 1))
    s.diagonal(dim1=-2, dim2=-1).fill_(0.9)
    dom, asym = diagonality_terms(s)
    assert dom.item() == 0 and asym.item() == pytest.approx(0, abs=1e-7)
    assert DiagonalityPreservingLoss(1.0)([s]).item() == pytest.approx(0, abs=1e-7)


def test_upper_bound_reached_by_the_worst_case():
    k = 5
    # every cell attends fully to the next one: diagonal 0, off-diagonal max 1, completely asymmetric
    s = torch.roll(torch.eye(k), 1, dims=1).expand(1, 1, k, k)
    dom, asym = diagonality_terms(s)
    assert dom.item() == pytest.approx(1.0) and asym.item() == pytest.approx(1.0)
    assert DiagonalityPreservingLoss(0.3)([s]).item() == pytest.approx(0.3)


def test_bounded_on_random_row_stochastic_attention_and_differentiable():
    for _ in range(20):
        logits = (torch.randn(2, 4, 9, 9) * 10).requires_grad_()
        loss = DiagonalityPreservingLoss(2.0)([logits.softmax(-1)])
        assert 0 <= loss.item() <= 2.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()
    # uniform attention: no self-affinity dominance violated (ties), symmetric
    u = torch.full((1, 1, 4, 4), 0.25)
    assert DiagonalityPreservingLoss()([u]).item() == 0


def test_rejects_bad_input():
    with pytest.raises(ValueError, match='square'):
        diagonality_terms(torch.rand(1, 1, 3, 4))
    with pytest.raises(ValueError, match='no attention'):
        DiagonalityPreservingLoss()([])
    with pytest.raises(ValueError, match='loss_weight'):
        DiagonalityPreservingLoss(-1)


def test_built_from_registry():
    loss = MODELS.build(dict(type='DiagonalityPreservingLoss', loss_weight=0.25))
    assert loss.loss_weight == 0.25


@pytest.mark.parametrize('max_cells', [0, -3, 2.5, True])
def test_bad_max_cells_is_refused(max_cells):
    with pytest.raises(ValueError, match='max_cells'):
        DiagonalityPreservingLoss(max_cells=max_cells)


def test_layers_of_one_shape_are_batched_without_changing_the_loss():
    """The loss batches the layers whose attention has one shape; it stays the mean over layers of
    (dominance + asymmetry) / 2, each layer's terms averaged over its batch and heads."""
    torch.manual_seed(0)
    shapes = [(2, 1, 9, 9), (2, 1, 9, 9), (2, 3, 9, 9), (2, 3, 4, 4), (2, 1, 9, 9)]
    squares = [torch.randn(s).mul(2).softmax(-1).requires_grad_() for s in shapes]
    loss = DiagonalityPreservingLoss(loss_weight=0.3)(squares)
    expected = 0.3 * torch.stack([sum(diagonality_terms(s)) / 2 for s in squares]).mean()
    assert torch.allclose(loss, expected, atol=1e-7)
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in squares)


def direct_terms(square):
    """The terms as written in the docstring, left to autograd: the reference for DiagonalityTerms."""
    k = square.shape[-1]
    diag = square.diagonal(dim1=-2, dim2=-1)
    off = square.masked_fill(torch.eye(k, dtype=torch.bool), float('-inf'))
    dominance = (off.amax(dim=-1) - diag).clamp(min=0).mean(dim=-1)
    asymmetry = (square - square.transpose(-2, -1)).abs().sum(dim=(-2, -1)) / (2 * k)
    return dominance, asymmetry


@pytest.mark.parametrize('k', [2, 3, 16, 273])
def test_terms_and_gradients_equal_the_direct_formulas_bit_for_bit_and_keep_a_byte_per_entry(k):
    """DiagonalityTerms gives the values and gradients of the direct formulas exactly (random attention, any
    weighting of the two terms), and keeps about one byte per matrix entry for the backward, where autograd of the
    direct formulas keeps a float masked copy and a float difference (8 bytes)."""
    from vitattn_mm.models.losses.diagonality_loss import diagonality_terms_per_matrix
    torch.manual_seed(k)
    s = torch.randn(3, 2, k, k).mul(3).softmax(-1)
    saved = []
    results = []
    for terms in (direct_terms, diagonality_terms_per_matrix):
        square = s.clone().requires_grad_()
        nbytes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: nbytes.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            dominance, asymmetry = terms(square)
        torch.manual_seed(1)
        ((dominance * torch.randn_like(dominance)).sum() + (asymmetry * torch.randn_like(asymmetry)).sum()).backward()
        results.append((dominance, asymmetry, square.grad))
        saved.append(sum(nbytes) / s.numel())
    for direct, ours in zip(*results):
        assert torch.equal(direct, ours)
    assert saved[0] >= 8 and saved[1] <= 1 + 24 / k  # the sign as int8; an index and a flag per row


def test_a_tie_for_the_largest_other_entry_gives_the_gradient_to_one_of_them():
    """Where two off-diagonal entries of a row tie for the maximum, the direct formula shares the row's gradient
    between them and DiagonalityTerms gives it to one: the same total, the same loss."""
    from vitattn_mm.models.losses.diagonality_loss import diagonality_terms_per_matrix
    s = torch.tensor([[0.2, 0.4, 0.4], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]).view(1, 3, 3)
    grads = []
    for terms in (direct_terms, diagonality_terms_per_matrix):
        square = s.clone().requires_grad_()
        dominance, asymmetry = terms(square)
        assert dominance.item() == pytest.approx(0.2 / 3)
        dominance.sum().backward()
        grads.append(square.grad[0, 0])
    assert torch.allclose(grads[0], torch.tensor([-1, 0.5, 0.5]) / 3)
    assert grads[1][0] == pytest.approx(-1 / 3) and sorted(grads[1][1:].tolist()) == pytest.approx([0, 1 / 3])
