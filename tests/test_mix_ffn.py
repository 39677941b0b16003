"""PVTv2's feed-forward as LaViT runs it in inference: in bands of grid rows (vitattn_mm/models/layers/mlp.py), with
the same outputs as one pass, fewer operator calls per band and each band's memory handed to the next."""
import pytest
import torch
from conftest import tiny_lavit as build


@pytest.mark.parametrize('hw, batch', [((13, 9), 1), ((7, 5), 2), ((33, 17), 3)])
def test_mix_ffn_in_bands_equals_one_pass(hw, batch):
    """Inference in bands of grid rows (halo for the 3x3 convolution) gives the one-pass result, down to one row
    per band, at odd sizes and batch sizes; training is one pass whatever the setting."""
    from vitattn_mm.models.layers.mlp import MixFFN
    ffn = MixFFN(8, 24, band_values=None).eval()
    x = torch.randn(batch, hw[0] * hw[1], 8)
    with torch.no_grad():
        ref = ffn(x, hw)
        for values in (1, 24 * hw[1] * 2, 24 * hw[1] * 3):  # bands of 1, 2 and 3 rows of each image
            ffn.band_values = values
            assert ffn._band_rows(24, hw) < hw[0]
            assert torch.allclose(ffn(x, hw), ref, atol=1e-6), values
    assert torch.allclose(ffn.train()(x, hw), ref, atol=1e-6)


def test_mix_ffn_runs_in_one_pass_when_two_bands_would_do():
    """Bands only when the hidden layer needs more than MIN_BANDS of them (two bands were no faster than one pass)."""
    from vitattn_mm.models.layers.mlp import MIN_BANDS, MixFFN
    ffn = MixFFN(8, 24, band_values=24 * 10 * 4).eval()  # 4 rows of a 10-wide grid per band
    assert MIN_BANDS == 2
    assert ffn._band_rows(24, (8, 10)) == 8  # two bands' worth: one pass
    assert ffn._band_rows(24, (9, 10)) == 3  # three bands of 3 rows
    assert ffn._band_rows(24, (12, 10)) == 4


def test_mix_ffn_bands_are_for_the_cpu_only(monkeypatch):
    """Bands keep the hidden layer in CPU caches; on another device (here 'meta', which runs shapes only) the same
    module runs in one pass."""
    from vitattn_mm.models.layers.mlp import MixFFN
    ffn = MixFFN(8, 24, band_values=24 * 10).eval()  # one row of a 10-wide grid per band
    banded = []
    original = MixFFN._forward_in_bands
    monkeypatch.setattr(MixFFN, '_forward_in_bands', lambda self, *a: banded.append(a[0].device.type) or
                        original(self, *a))
    with torch.no_grad():
        assert ffn(torch.randn(1, 80, 8), (8, 10)).shape == (1, 80, 8)
        assert ffn.to('meta')(torch.randn(1, 80, 8, device='meta'), (8, 10)).shape == (1, 80, 8)
    assert banded == ['cpu']


def test_strided_views_of_the_banded_mix_ffn_match_permute_and_reshape():
    """The one-call views used by the bands equal the permute/reshape views they replace, and a map that is not
    channels-last is read by the copying path."""
    from vitattn_mm.models.utils.tokens import channels_last_grid, grid_rows_as_tokens
    tokens = torch.randn(5 * 7, 6)
    grid = channels_last_grid(tokens, 5, 7)
    assert torch.equal(grid, tokens.view(1, 5, 7, 6).permute(0, 3, 1, 2))
    expected = grid.permute(0, 2, 3, 1).reshape(-1, 6)[2 * 7:4 * 7]
    assert torch.equal(grid_rows_as_tokens(grid, 2, 4), expected)
    assert torch.equal(grid_rows_as_tokens(grid.contiguous(), 2, 4), expected)
    assert torch.equal(grid_rows_as_tokens(grid[..., 1:, :], 1, 3), grid.permute(0, 2, 3, 1)[0, 2:4].reshape(-1, 6))


def test_mix_ffn_band_releases_its_hidden_layer_before_the_next_band_allocates(monkeypatch):
    """Each band's convolution output (and every view of it) is dead when the next band's convolution runs, so the
    allocator can hand its memory back instead of fresh pages (docs/benchmarks.md, "A band's memory")."""
    import weakref
    from vitattn_mm.models.layers import mlp
    outputs, earlier_alive = [], []
    conv2d = mlp.F.conv2d

    def recording_conv2d(*args, **kwargs):
        earlier_alive.append([ref() is not None for ref in outputs])
        out = conv2d(*args, **kwargs)
        outputs.append(weakref.ref(out))
        return out

    monkeypatch.setattr(mlp.F, 'conv2d', recording_conv2d)
    ffn = mlp.MixFFN(8, 24, band_values=24 * 9 * 2).eval()  # bands of 2 rows
    with torch.no_grad():
        ffn(torch.randn(2, 7 * 9, 8), (7, 9))
    assert len(outputs) == 8  # 4 bands per image, 2 images
    assert earlier_alive == [[False] * i for i in range(8)]


def test_backbone_output_is_the_same_with_and_without_ffn_bands():
    banded, plain = build(ffn_band_values=512).eval(), build(ffn_band_values=None).eval()
    plain.load_state_dict(banded.state_dict())
    x = torch.randn(1, 3, 75, 90)
    with torch.no_grad():
        for a, b in zip(banded(x), plain(x)):
            assert torch.allclose(a, b, atol=1e-5)
