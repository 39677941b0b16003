"""CB-ViT: context broadcasting, timm equivalence, pyramid outputs, checkpoint loading."""
import pytest
import timm
import torch

from vitattn_mm import CBViT
from vitattn_mm.models.backbones.cbvit import resize_pos_embed
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


@pytest.mark.parametrize('hw', [(160, 208), (160, 288)])
def test_cb_off_matches_timm_dynamic_img_size_at_other_sizes(hw):
    """Non-square, non-224 inputs against timm's own ``dynamic_img_size`` path, which resamples the 14x14 position
    embedding for every input (bicubic, antialiased). 160x208 shrinks both sides (10x13), 160x288 shrinks one and
    enlarges the other (10x18). The position embedding is made large so that a resampling that is not timm's
    (e.g. without antialiasing, checked here to differ) shows far above the tolerance."""
    ref = timm.create_model('vit_tiny_patch16_224', pretrained=False, dynamic_img_size=True).eval()
    with torch.no_grad():
        ref.pos_embed.normal_(0, 1.0)
    ours = CBViT(arch='deit-t', context_broadcast=False, drop_path_rate=0.0)
    ours.load_state_dict(ours.convert_pretrained(ref.state_dict()), strict=False)
    ours.eval()
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        expected = ref.forward_features(x)[:, 1:]
        tokens, grid = ours.forward_tokens(x)
    assert grid == (hw[0] // 16, hw[1] // 16)
    assert tokens.shape == expected.shape
    assert torch.allclose(tokens, expected, atol=1e-5), (tokens - expected).abs().max()

    # the resampling matters: timm's resampled table equals ours, and one without antialiasing does not
    table = resize_pos_embed(ours.pos_embed, grid)
    assert torch.allclose(table, timm.layers.resample_abs_pos_embed(ref.pos_embed, list(grid), num_prefix_tokens=1),
                          atol=1e-6)
    patches = ours.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    plain = torch.nn.functional.interpolate(patches, size=grid, mode='bicubic', align_corners=False)
    assert (plain.flatten(2).transpose(1, 2) - table[:, 1:]).abs().max() > 1e-2


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


@pytest.mark.parametrize('hw', [(224, 224), (401, 613), (32, 48), (33, 95)])
def test_pyramid_levels_cover_the_image_not_the_padding(hw):
    """Every level at stride s has ceil(H/s) x ceil(W/s) cells, e.g. 101x154 (not the padded 104x156) at stride 4
    for 401x613."""
    model = CBViT(arch='deit-t').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    for out, c, stride in zip(outs, (48, 96, 192, 192), (4, 8, 16, 32)):
        assert tuple(out.shape) == (1, c, -(-hw[0] // stride), -(-hw[1] // stride))
    assert model.out_channels == [48, 96, 192, 192]


def test_levels_of_a_padded_input_are_the_top_left_cells():
    """An image that needs padding gives the top-left cells of the levels of the same image padded by hand (the
    cells that cover it): no shift, no resampling. Sides 72x104 pad to 80x112."""
    model = CBViT(arch=dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2.0), drop_path_rate=0.0).eval()
    model.init_weights()
    x = torch.randn(2, 3, 72, 104)
    padded = torch.nn.functional.pad(x, (0, 8, 0, 8))
    with torch.no_grad():
        outs, ref = model(x), model(padded)
    for out, full, stride in zip(outs, ref, (4, 8, 16, 32)):
        h, w = -(-72 // stride), -(-104 // stride)
        assert out.shape[2:] == (h, w) and full.shape[2:] == (-(-80 // stride), -(-112 // stride))
        assert torch.allclose(out, full[:, :, :h, :w], atol=1e-6)
    # out_indices: only those levels are computed, the same ones
    some = CBViT(arch=dict(embed_dims=32, depth=2, num_heads=2, mlp_ratio=2.0), out_indices=(3, 1)).eval()
    some.load_state_dict(model.state_dict())
    with torch.no_grad():
        picked = some(x)
    assert some.out_channels == [16, 32] and len(picked) == 2
    assert torch.equal(picked[0], outs[1]) and torch.equal(picked[1], outs[3])


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


# --- UperNet on an image that needs padding: the prediction has the image's extent ---------------------------------
UPERNET_CONFIG = 'configs/cbvit/upernet_cbvit_s_ade20k.py'
TRAIN_HW = (64, 96)  # a multiple of 32: no padding while learning
CROP_HW = (52, 84)  # sides of 13 and 21 stride-4 cells, padded by CB-ViT to 64x96
BLOB = (slice(32, 52), slice(56, 84))  # rows, columns of a blob ending at the bottom-right corner of the crop
# Learning and thresholds, measured (Intel Xeon, 2 threads, ~1.3 s per run): after 60 steps, seeds 0-4 gave IoU
# 0.84 / 0.81 / 0.78 / 0.55 / 0.79 and a largest centre shift of 1.3 / 1.5 / 2.2 / 3.8 / 1.8 px with cropped levels
# (the test runs seed 0). With the padded levels of before the geometry alone moves the centre by ~8 px here; in a
# 56x88-crop variant the old code gave IoU 0.44-0.65 and shifts of 3.7-13 px. The shift is the criterion; the IoU
# only checks that the blob was found.
STEPS, MIN_IOU, MAX_SHIFT = 60, 0.5, 4.5


def tiny_upernet():
    """mmseg's EncoderDecoder from the CB-ViT UperNet config, with a tiny CB-ViT and narrow heads (GroupNorm: no
    running statistics to settle in a few steps)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(UPERNET_CONFIG).model
    dim = 64
    channels = [dim // 4, dim // 2, dim, dim]
    gn = dict(type='GN', num_groups=8, requires_grad=True)
    cfg.pretrained = None
    cfg.backbone.update(arch=dict(embed_dims=dim, depth=2, num_heads=2, mlp_ratio=2.0), init_cfg=None,
                        drop_path_rate=0.0)
    cfg.decode_head.update(in_channels=channels, channels=32, num_classes=2, norm_cfg=gn)
    cfg.auxiliary_head.update(in_channels=channels[2], channels=16, num_classes=2, norm_cfg=gn)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg)
    model.init_weights()
    return model


def bright_boxes(generator, hw=TRAIN_HW, boxes=3):
    """A dark noisy image with bright boxes at random places, and its label map (1 on the boxes)."""
    h, w = hw
    image = -1.0 + 0.1 * torch.randn(3, h, w, generator=generator)
    label = torch.zeros(h, w, dtype=torch.long)
    for _ in range(boxes):
        bh, bw = torch.randint(12, 32, (2, ), generator=generator).tolist()
        y = torch.randint(0, h - bh + 1, (1, ), generator=generator).item()
        x = torch.randint(0, w - bw + 1, (1, ), generator=generator).item()
        image[:, y:y + bh, x:x + bw] += 2.0
        label[y:y + bh, x:x + bw] = 1
    return image, label


def segment_sample(hw, label=None):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(img_shape=hw, ori_shape=hw))
    if label is not None:
        sample.gt_sem_seg = PixelData(data=label[None])
    return sample


def blob_prediction(seed=0, steps=STEPS):
    """Trains the tiny UperNet to segment bright boxes at TRAIN_HW, then predicts a CROP_HW image whose only blob is
    in its bottom-right corner; returns the blob's IoU and the shift (rows, columns) of its centre."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = tiny_upernet().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        images, labels = zip(*(bright_boxes(generator) for _ in range(2)))
        samples = [segment_sample(TRAIN_HW, label) for label in labels]
        loss, _ = model.parse_losses(model.loss(torch.stack(images), samples))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    image = -1.0 + 0.1 * torch.randn(3, *CROP_HW, generator=generator)
    image[:, BLOB[0], BLOB[1]] += 2.0
    truth = torch.zeros(CROP_HW, dtype=torch.bool)
    truth[BLOB] = True
    model.eval()
    with torch.no_grad():
        found = model.predict(image[None], [segment_sample(CROP_HW)])[0].pred_sem_seg.data[0].bool()
    assert found.shape == truth.shape
    iou = (found & truth).sum().item() / (found | truth).sum().item()
    centre = [c.float().mean().item() for c in found.nonzero(as_tuple=True)]
    true_centre = [c.float().mean().item() for c in truth.nonzero(as_tuple=True)]
    return iou, (centre[0] - true_centre[0], centre[1] - true_centre[1])


def test_upernet_prediction_on_a_padded_image_is_not_stretched():
    """A tiny CB-ViT UperNet (mmseg's EncoderDecoder, the CB-ViT UperNet config) learns to segment bright boxes at
    64x96, then predicts a 52x84 image, which CB-ViT pads to 64x96, with a blob in its bottom-right corner. With
    pyramid levels of the padded size, mmseg resizes 16x24 logits (64x96 pixels) onto 52x84, shrinking everything
    towards the top-left: the blob's centre moves by ~8 px. With levels cropped to the image, the predicted blob is
    where the blob is."""
    iou, shift = blob_prediction()
    assert iou > MIN_IOU and max(abs(s) for s in shift) < MAX_SHIFT, (iou, shift)
