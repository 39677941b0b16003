"""frozen_stages: frozen weights stay unchanged by an optimizer step, everything else trains; bad values are errors."""
import pytest
import torch
import torch.nn as nn
from conftest import TINY_LAVIT

from vitattn_mm import CBViT, LaViT

TINY_CBVIT = dict(embed_dims=32, depth=4, num_heads=2, mlp_ratio=2.0)  # 4 blocks, so that 4 freezes all of them


def build(kind, frozen_stages):
    if kind == 'lavit':
        model = LaViT(arch=TINY_LAVIT, frozen_stages=frozen_stages, drop_path_rate=0.1,
                      dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=1.0))
    else:
        model = CBViT(arch=TINY_CBVIT, frozen_stages=frozen_stages, drop_path_rate=0.1, cb_learnable_scale=True)
    model.init_weights()
    return model


def expected_frozen(kind, k, name):
    """Whether parameter ``name`` must be frozen, by the documented rule (written out independently of the
    backbones' ``frozen_modules``)."""
    if k < 0:
        return False
    if kind == 'lavit':
        # 0: the first patch embedding; k >= 1: stages 0..k-1 with the attention downsampling into them
        if name.startswith('stages.0.patch_embed.'):
            return True
        if name.startswith('stages.'):
            return int(name.split('.')[1]) < k
        if name.startswith('attention_downsamples.'):
            return int(name.split('.')[1]) + 1 < k
        raise AssertionError(f'unexpected LaViT parameter {name}')
    # CB-ViT: embeddings; blocks 0..k-1; the final norm once every block is frozen; never the pyramid
    if name.startswith(('patch_embed.', 'cls_token', 'pos_embed')):
        return True
    if name.startswith('blocks.'):
        return int(name.split('.')[1]) < k
    if name.startswith('norm.'):
        return k == TINY_CBVIT['depth']
    assert name.startswith('pyramid.'), name
    return False


@pytest.mark.parametrize('kind', ['lavit', 'cbvit'])
@pytest.mark.parametrize('k', [0, 1, 4])
def test_frozen_weights_do_not_change_in_an_optimizer_step(kind, k):
    model = build(kind, k)
    frozen = {n for n, _ in model.named_parameters() if expected_frozen(kind, k, n)}
    # frozen at construction, before any train(): optimizers and DDP are built before the first train()
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen
    neck = nn.ModuleList(nn.Conv2d(c, 8, 1) for c in model.out_channels)  # something trainable after the backbone
    # as mmengine builds it: every parameter, weight decay on (AdamW changes any weight it updates)
    optimizer = torch.optim.AdamW([*model.parameters(), *neck.parameters()], lr=1e-2, weight_decay=0.05)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen
    outs = model(torch.randn(2, 3, 64, 96))
    loss = sum((conv(o) ** 2).mean() for conv, o in zip(neck, outs))
    loss = loss + sum(model.pop_auxiliary_losses().values()) if kind == 'lavit' else loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed.isdisjoint(frozen), sorted(changed & frozen)
    assert changed == set(before) - frozen, sorted(set(before) - frozen - changed)
    # frozen modules stay in eval mode in training (no drop path, no norm statistics updates)
    for module in model.frozen_modules():
        assert not module.training
    if kind == 'lavit' and k == 4:
        assert frozen == set(before)  # all four stages: the whole backbone


@pytest.mark.parametrize('kind', ['lavit', 'cbvit'])
@pytest.mark.parametrize('value', [5, -2, 1.5, True])
def test_out_of_range_frozen_stages_is_an_error(kind, value):
    with pytest.raises(ValueError, match=r'frozen_stages .*must be -1 \(nothing frozen\) or a stage count 0\.\.4'):
        build(kind, value)


def test_cbvit_frozen_stages_range_follows_depth():
    CBViT(arch='deit-t', frozen_stages=12)
    with pytest.raises(ValueError, match=r'0\.\.12, got 13'):
        CBViT(arch='deit-t', frozen_stages=13)
