"""CB-ViT: context broadcasting, timm equivalence, pyramid outputs, checkpoint loading."""
import pytest
import timm
import torch

from vitattn_mm import CBViT
from vitattn_mm.models.layers import ContextBroadcast
from vitattn_mm.models.utils import CheckpointMismatchError


def test_context_broadcast_is_exact():
    x = torch.randn(2, 7, 5)
    out = ContextBroadcast()(x)
    expected = 0.5 * x + 0.5 * x.mean(dim=1, keepdim=True)
    assert torch.equal(out, expected)
    # uniform attention: all tokens move half way to their mean; the mean itself is unchanged
    assert torch.allclose(out.mean(1), x.mean(1), atol=1e-6)
    scaled = ContextBroadcast(5, learnable_scale=True)
    assert torch.allclose(scaled(x), expected)  # starts as plain CB
    with torch.no_grad():
        scaled.scale.copy_(torch.arange(5.))
    assert torch.allclose(scaled(x), 0.5 * x + 0.5 * torch.arange(5.) * x.mean(1, keepdim=True))
    with pytest.raises(ValueError, match='dim'):
        ContextBroadcast(learnable_scale=True)


def timm_vit_s():
    return timm.create_model('vit_small_patch16_224', pretrained=False, num_classes=1000).eval()


def test_cb_off_matches_timm_vit_small_with_same_weights():
    ref = timm_vit_s()
    ours = CBViT(arch='deit-s', context_broadcast=False, drop_path_rate=0.0)
    ours.load_state_dict(ours.convert_pretrained(ref.state_dict()), strict=False)
    ours.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref.forward_features(x)[:, 1:]
        tokens, hw = ours.forward_tokens(x)
    assert hw == (14, 14)
    assert torch.allclose(tokens, expected, atol=1e-5)
    # with CB on (no extra parameters, same weights) the features differ
    cb = CBViT(arch='deit-s', context_broadcast=True, drop_path_rate=0.0)
    cb.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert not torch.allclose(cb.eval().forward_tokens(x)[0], expected, atol=1e-3)


def test_timm_state_dict_has_exactly_our_keys_plus_head():
    ours = set(CBViT(arch='deit-s', context_broadcast=True).state_dict())
    theirs = set(timm_vit_s().state_dict())
    backbone_only = {k for k in ours if not k.startswith('pyramid.')}
    assert backbone_only == {k for k in theirs if not k.startswith('head.')}


def test_per_layer_cb_switch_and_validation():
    model = CBViT(arch='deit-t', context_broadcast=[True, False] * 6)
    kinds = [isinstance(b.cb, ContextBroadcast) for b in model.blocks]
    assert kinds == [True, False] * 6
    with pytest.raises(ValueError, match='one per layer'):
        CBViT(arch='deit-t', context_broadcast=[True] * 3)


@pytest.mark.parametrize('hw', [(224, 224), (401, 613), (32, 48)])
def test_pyramid_outputs_at_odd_sizes(hw):
    model = CBViT(arch='deit-t').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    grid = [-(-s // 16) for s in hw]
    expected = [(48, 4), (96, 2), (192, 1), (192, 0.5)]
    for out, (c, f) in zip(outs, expected):
        assert out.shape[:2] == (1, c)
        assert list(out.shape[2:]) == [int(-(-g * f // 1)) for g in grid]
    assert model.out_channels == [48, 96, 192, 192]


def test_gradients_reach_every_parameter():
    model = CBViT(arch='deit-t', cb_learnable_scale=True).train()
    sum(o.mean() for o in model(torch.randn(2, 3, 64, 80))).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0] == []


def test_pretrained_checkpoint_loading(tmp_path):
    ref = timm.create_model('vit_tiny_patch16_224', pretrained=False).eval()
    ckpt = tmp_path / 'deit_t.pth'
    torch.save({'model': ref.state_dict()}, ckpt)
    model = CBViT(arch='deit-t', img_size=384, context_broadcast=False,
                  init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    model.init_weights()  # 14x14 position embedding resized to 24x24
    assert torch.equal(model.blocks[3].attn.qkv.weight, ref.blocks[3].attn.qkv.weight)
    assert model.pos_embed.shape[1] == 1 + 24 * 24

    wrong = tmp_path / 'wrong.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}}, wrong)
    bad = CBViT(arch='deit-t', init_cfg=dict(type='Pretrained', checkpoint=str(wrong)))
    with pytest.raises(CheckpointMismatchError, match='has no key of CBViT'):
        bad.init_weights()

    small = tmp_path / 'small.pth'
    torch.save(timm.create_model('vit_small_patch16_224', pretrained=False).state_dict(), small)
    mismatch = CBViT(arch='deit-t', init_cfg=dict(type='Pretrained', checkpoint=str(small)))
    with pytest.raises(CheckpointMismatchError, match='shapes differ'):
        mismatch.init_weights()


def test_bad_values():
    with pytest.raises(ValueError, match='unknown CBViT arch'):
        CBViT(arch='vit-h')
    with pytest.raises(ValueError, match='input channels'):
        CBViT(arch='deit-t')(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match='at least 32x32'):
        CBViT(arch='deit-t')(torch.randn(1, 3, 16, 64))
