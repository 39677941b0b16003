"""The stage carry's query pooling (vitattn_mm/models/layers/attention_map.py: ``average_pool_grid``): in inference
on the CPU a depthwise convolution with exact 1/f^2 taps where the windows are whole, ``avg_pool2d`` everywhere else;
the same values either way. (Bit for bit on the Intel Xeon we measured; another CPU's oneDNN kernel may add a
window's taps in another order, so the tests allow float32 rounding: relative 1e-6.)"""
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_lavit as build


def attention_rows_map(batch, channels, h, w):
    t = torch.rand(batch, h, w, channels)
    return (t / t.sum(-1, keepdim=True)).permute(0, 3, 1, 2)  # rows of an attention matrix, as pool_rows views them


@pytest.mark.parametrize('batch, channels, hw, factor', [(1, 30, (8, 12), 2), (2, 17, (16, 16), 4), (3, 64, (6, 10), 2),
                                                         (1, 5, (16, 8), 8)])
def test_convolution_pooling_equals_avg_pool2d(batch, channels, hw, factor):
    from vitattn_mm.models.layers.attention_map import average_pool_grid
    grid = attention_rows_map(batch, channels, *hw)
    with torch.no_grad():
        pooled = average_pool_grid(grid, factor)
    assert torch.allclose(pooled, F.avg_pool2d(grid, factor, factor, ceil_mode=True), rtol=1e-6, atol=1e-9)
    assert pooled.is_contiguous(memory_format=torch.channels_last)  # pool_rows reads it back as a view


def test_convolution_only_where_it_is_exact(monkeypatch):
    """Whole power-of-two windows in inference on the CPU: the convolution. Partial windows, other factors, training
    and autocast (bfloat16 convolution): avg_pool2d. Same values in every case."""
    from vitattn_mm.models.layers import attention_map
    calls = []
    conv2d = attention_map.F.conv2d
    monkeypatch.setattr(attention_map.F, 'conv2d', lambda *a, **k: calls.append(1) or conv2d(*a, **k))

    def convolved(grid, factor, grad=False, autocast=False):
        calls.clear()
        with torch.set_grad_enabled(grad), torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = attention_map.average_pool_grid(grid, factor)
        assert torch.allclose(out.float(), F.avg_pool2d(grid, factor, factor, ceil_mode=True).float(), rtol=1e-6,
                              atol=1e-9)
        return bool(calls)

    even, odd = attention_rows_map(2, 6, 8, 12), attention_rows_map(2, 6, 9, 12)
    assert convolved(even, 2) and convolved(even, 4)
    assert not convolved(odd, 2)  # a partial window in the last row
    assert not convolved(attention_rows_map(1, 6, 6, 6), 3)  # 1/9 is not exact in binary
    assert not convolved(even.requires_grad_(), 2, grad=True)
    assert not convolved(even.detach(), 2, autocast=True)
    assert not convolved(even.detach().double(), 2)  # measured and tested in float32 only


def test_lavit_outputs_are_the_same_with_either_pooling(monkeypatch):
    """The carried attention of every stage (grids 16x24 -> 8x12 -> 4x6 -> 2x3: whole windows) is pooled by the
    convolution, and the backbone's outputs equal those of the avg_pool2d path (exactly on the CPU we measured)."""
    from vitattn_mm.models.layers import attention_map
    model = build().eval()
    x = torch.randn(1, 3, 64, 96)
    pooled_grids = []
    original = attention_map.average_pool_grid
    monkeypatch.setattr(attention_map, 'average_pool_grid',
                        lambda grid, factor: pooled_grids.append(tuple(grid.shape[2:])) or original(grid, factor))
    with torch.no_grad():
        fast = model(x)
        assert pooled_grids == [(16, 24), (8, 12), (4, 6)]  # the three stage carries
        monkeypatch.setattr(attention_map, 'average_pool_grid',
                            lambda grid, factor: F.avg_pool2d(grid, factor, factor, ceil_mode=True))
        plain = model(x)
    for a, b in zip(fast, plain):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
