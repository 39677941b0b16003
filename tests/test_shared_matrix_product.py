"""The products of one attention matrix by several layers' values: the matrix's gradient gathered into one GEMM
(``SharedMatrixProducts``) equals plain autograd's, in LaViT and in the cases where it must not gather."""
import pytest
import torch
from conftest import tiny_lavit as build

import vitattn_mm.models.layers.attention_map as attention_map
from vitattn_mm.models.layers.shared_matrix_product import SharedMatrixProducts


class CountingProducts(SharedMatrixProducts):
    """Records how many (dZ, V) pairs each first product's backward multiplied in one GEMM."""
    gathered = []

    def _gathered(self, grad, values):
        grad, values = super()._gathered(grad, values)
        CountingProducts.gathered.append(values.shape[-1])
        return grad, values


def chain(p, vs, shared, independent_last=False):
    """``Z_0 = P V_0``, then ``Z_l = P f(Z_(l-1), V_l)`` as in a LaViT stage (each layer's values depend on the
    output before it); ``independent_last``: the last product's values do not depend on the others."""
    times = (lambda m, v: m @ v) if shared is None else (lambda m, v: shared.product(m, v))
    outs = [times(p, vs[0])]
    for l, v in enumerate(vs[1:], 1):
        values = v if independent_last and l == len(vs) - 1 else v + outs[-1].mean(1, keepdim=True)
        outs.append(times(p, values))
    return outs


def matrix_and_values(layers=3, seed=0):
    torch.manual_seed(seed)
    logits = torch.randn(3, 11, 7, dtype=torch.float64, requires_grad=True)
    vs = [torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True) for _ in range(layers)]
    return logits, vs


def gradients(loss_of_outputs, shared_factory, layers=3, independent_last=False, backward=None):
    logits, vs = matrix_and_values(layers)
    outs = chain(logits.softmax(-1), vs, shared_factory(), independent_last)
    loss = loss_of_outputs(outs)
    (backward or (lambda l: l.backward()))(loss)
    return [None if t.grad is None else t.grad.clone() for t in [logits] + vs]


def weighted_sum(outs):
    torch.manual_seed(9)
    return sum((o * torch.randn_like(o)).sum() for o in outs)


def test_gathered_gradient_equals_autograd_in_one_gemm():
    """Three products as in a LaViT stage (1 VA + 2 LA): same gradients as plain autograd, and the first product's
    backward multiplies all three (dZ, V) pairs in one GEMM (inner dimension 3 x 5)."""
    CountingProducts.gathered = []
    got = gradients(weighted_sum, CountingProducts)
    ref = gradients(weighted_sum, lambda: None)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert CountingProducts.gathered == [15]


def test_a_product_whose_gradient_comes_alone_returns_its_own():
    """A loss on the last product alone (its values independent of the first product's output, so the first
    product's backward does not run): the matrix still gets that product's gradient."""
    CountingProducts.gathered = []
    last_only = lambda outs: weighted_sum(outs[-1:])  # noqa: E731
    got = gradients(last_only, CountingProducts, independent_last=True)
    ref = gradients(last_only, lambda: None, independent_last=True)
    assert got[0].abs().sum() > 0
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert CountingProducts.gathered == []


def test_retain_graph_backward_twice_and_partial_gradients():
    """Two backward passes over one graph accumulate twice the gradient, as plain autograd, each gathering its own
    products; a ``torch.autograd.grad`` for a later layer's values only (a pass in which the first product does not
    run) leaves nothing behind that a later full pass would count."""
    def twice(loss):
        loss.backward(retain_graph=True)
        loss.backward()

    CountingProducts.gathered = []
    got, ref = gradients(weighted_sum, CountingProducts, backward=twice), gradients(weighted_sum, lambda: None,
                                                                                  backward=twice)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert CountingProducts.gathered == [15, 15]  # each pass gathers its own three products

    results = []
    for factory in (SharedMatrixProducts, lambda: None):
        logits, vs = matrix_and_values()
        loss = weighted_sum(chain(logits.softmax(-1), vs, factory()))
        torch.autograd.grad(loss, [vs[-1]], retain_graph=True)
        loss.backward()
        results.append(logits.grad)
    torch.testing.assert_close(*results, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('options', [dict(), dict(with_cp=True),
                                     dict(dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.5))])
def test_lavit_gradients_equal_plain_autograd(options, monkeypatch):
    """Every parameter gradient of a training step of a randomised tiny LaViT ('prob' attention, residual carry,
    odd input size, float64) with the shared products equals plain autograd's, and every stage gathered its
    layers' products (TINY_LAVIT: 1 VA + 1 or 2 LA layers per stage)."""
    model = build(**options).double().train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(('kernel_logits', 'gate_logits', 'head_mix_logits')):
                p.normal_()
    x = torch.randn(2, 3, 75, 90, dtype=torch.float64)

    def step(products):
        monkeypatch.setattr(attention_map, 'SharedMatrixProducts', products)
        model.zero_grad()
        outs = model(x)
        torch.manual_seed(3)
        loss = sum((o * torch.randn_like(o)).sum() for o in outs)
        loss = loss + sum(model.pop_auxiliary_losses().values(), torch.zeros((), dtype=torch.float64))
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    CountingProducts.gathered = []
    got = step(CountingProducts)
    gathered = list(CountingProducts.gathered)
    ref = step(lambda: None)
    assert got.keys() == ref.keys() and len(ref) > 50
    scale = max(g.abs().max() for g in ref.values())
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-9, atol=1e-12 * scale, msg=name)
    widths = []  # per VA layer: its product, and those of the LA layers that reuse its matrix, d channels each
    for stage in model.stages:
        d = stage.blocks[0].norm1.normalized_shape[0] // stage.blocks[0].attn.num_heads
        flags = [b.less_attention for b in stage.blocks]
        vanilla = flags.count(False)
        widths += [d] * (vanilla - 1) + [d * (1 + flags.count(True))]
    assert sorted(gathered) == sorted(widths)

