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
