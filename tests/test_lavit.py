"""LaViT backbone: shapes, gradients, architecture rules, options, errors."""
import pytest
import torch
from conftest import TINY_LAVIT, randomised_lavit, tiny_lavit as build

from vitattn_mm import LaViT
from vitattn_mm.models.layers import LessAttention, SpatialReductionAttention


@pytest.mark.parametrize('hw', [(224, 224), (401, 613), (32, 33), (97, 64)])
def test_output_shapes_and_strides(hw):
    model = build().eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    assert len(outs) == 4
    size = list(hw)
    for i, (out, stride) in enumerate(zip(outs, (4, 8, 16, 32))):
        size = [-(-s // (4 if i == 0 else 2)) for s in size]  # ceil division, stage by stage
        assert out.shape == (2, TINY_LAVIT['embed_dims'][i], *size)
        assert size == [-(-s // stride) for s in hw]
        assert torch.isfinite(out).all()


def test_real_archs_build_and_sizes():
    params = {a: sum(p.numel() for p in LaViT(arch=a).parameters()) / 1e6 for a in ('t', 's', 'b')}
    assert params['s'] <= 25.4  # PVTv2-b2
    assert 10 < params['t'] < 16  # near PVTv2-b1 (14.0M)
    assert 35 < params['b'] < 46  # near PVTv2-b3 (45.2M)
    model = LaViT(arch='s').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 128, 160))
    assert [o.shape[1] for o in outs] == [64, 128, 320, 512] == model.out_channels


def test_gradients_reach_every_parameter():
    model = build(dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=1.0)).train()
    outs = model(torch.randn(2, 3, 96, 80))
    loss = sum(o.mean() for o in outs) + model.pop_auxiliary_losses()['loss_dp']
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []
    # the LA transforms and the attention downsampling are among them
    names = [n for n, _ in model.named_parameters()]
    assert any('attn.theta.kernel_logits' in n for n in names)
    assert any('attn.psi.kernel_logits' in n for n in names)
    assert any('attention_downsamples.0.gate_logits' in n for n in names)


def test_less_attention_layers_have_no_query_or_key():
    model = build()
    la = [m for m in model.modules() if isinstance(m, LessAttention)]
    va = [m for m in model.modules() if isinstance(m, SpatialReductionAttention)]
    assert len(la) == sum(d - v for d, v in zip(TINY_LAVIT['depths'], TINY_LAVIT['num_vanilla']))
    assert len(va) == sum(TINY_LAVIT['num_vanilla'])
    for layer in la:
        names = {n.split('.')[0] for n, _ in layer.named_parameters()}
        assert not {'q', 'k', 'qkv'} & names
        assert {'v', 'proj', 'theta', 'psi'} <= names
    for i, stage in enumerate(model.stages):
        kinds = [b.less_attention for b in stage.blocks]
        n_va = TINY_LAVIT['num_vanilla'][i]
        assert kinds == [False] * n_va + [True] * (len(kinds) - n_va)


def test_residual_attention_downsampling_changes_the_output():
    x = torch.randn(1, 3, 96, 128)
    with_res = build().eval()
    with torch.no_grad():
        for name, p in with_res.named_parameters():
            if name.endswith(('q.weight', 'k.weight')):
                p.mul_(20)  # peaked attention, far from the near-uniform attention of a fresh model
            if name.endswith('gate_logits'):
                p.fill_(1.0)  # carry a noticeable share of the previous stage's attention
    without = build(attention_residual=False).eval()
    missing, unexpected = without.load_state_dict(with_res.state_dict(), strict=False)
    assert not missing and all(k.startswith('attention_downsamples.') for k in unexpected)
    assert without.attention_downsamples is None
    with torch.no_grad():
        a, b = with_res(x), without(x)
    assert torch.equal(a[0], b[0])  # stage 1 has nothing carried into it
    for i in (1, 2, 3):
        assert (a[i] - b[i]).abs().max() > 1e-2


def test_logit_attention_kind_runs_and_differs():
    x = torch.randn(1, 3, 64, 64)
    prob = build().eval()
    logit = build(attention_kind='logit').eval()
    logit.load_state_dict(prob.state_dict())
    with torch.no_grad():
        a, b = prob(x), logit(x)
    assert a[3].shape == b[3].shape
    assert not torch.allclose(a[1], b[1])


def test_context_broadcast_option_changes_output():
    x = torch.randn(1, 3, 64, 64)
    plain = build().eval()
    cb = build(context_broadcast=True).eval()
    cb.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain(x)[0], cb(x)[0])


def test_out_indices_frozen_stages_and_checkpointing():
    model = build(out_indices=(1, 3), frozen_stages=2)
    model.train()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64] == model.out_channels
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith('stages.0.') for n in frozen) and any(n.startswith('stages.1.') for n in frozen)
    assert any(n.startswith('attention_downsamples.0.') for n in frozen)
    assert not any(n.startswith('stages.2.') for n in frozen)
    assert not model.stages[0].training and model.stages[2].training

    ref = build(with_cp=False).train()
    cp = build(with_cp=True).train()
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(1)
    out_ref = sum(o.sum() for o in ref(x))
    torch.manual_seed(1)
    out_cp = sum(o.sum() for o in cp(x))
    out_ref.backward()
    out_cp.backward()
    assert torch.allclose(out_ref, out_cp, rtol=1e-5)
    g_ref = ref.stages[0].blocks[1].attn.theta.kernel_logits.grad
    g_cp = cp.stages[0].blocks[1].attn.theta.kernel_logits.grad
    assert torch.allclose(g_ref, g_cp, atol=1e-6)


def test_no_attention_is_kept_in_eval_or_without_dp_loss():
    model = build(dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.5)).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert model.pop_auxiliary_losses() == {}
    plain = build().train()
    plain(torch.randn(1, 3, 64, 64))
    assert plain.dp_loss is None and plain.pop_auxiliary_losses() == {}
    off = build(dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.0))
    assert off.dp_loss is None


def test_uncollected_dp_loss_is_an_error():
    model = build(dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.5)).train()
    model(torch.randn(1, 3, 64, 64))
    with pytest.raises(RuntimeError, match='AuxiliaryLossHook'):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='xl'), 'unknown LaViT arch'),
    (dict(arch=dict(TINY_LAVIT, num_vanilla=[0, 1, 1, 1])), 'num_vanilla'),
    (dict(arch=dict(TINY_LAVIT, depths=[1, 1, 1])), '4 values'),
    (dict(out_indices=(0, 4)), 'out_indices'),
    (dict(out_indices=()), 'out_indices'),
    (dict(frozen_stages=-2), 'frozen_stages'),
    (dict(attention_kind='sparse'), 'attention_kind'),
    (dict(la_chain='dense'), 'la_chain'),
    (dict(drop_path_rate=1.5), 'drop_path_rate'),
    (dict(la_kernel_size=4), 'kernel_size'),
    (dict(ffn_band_values=-1), 'band_values'),
    (dict(arch=dict(TINY_LAVIT, num_vanilla=[3, 2, 3, 2]), dp_loss=dict(type='DiagonalityPreservingLoss')),
     'no less-attention layer'),
])
def test_bad_config_values_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


@pytest.mark.parametrize('shape, match', [
    ((1, 1, 64, 64), 'input channels'),
    ((1, 3, 31, 64), 'at least 32x32'),
    ((3, 64, 64), r'\(B, C, H, W\)'),
])
def test_bad_inputs_are_rejected(shape, match):
    with pytest.raises(ValueError, match=match):
        build()(torch.randn(*shape))


# --- the optimised attention paths against explicit matrices ---------------------------------------------------------
def test_logit_kind_trains_with_dp_loss_residual_and_checkpointing():
    """The paper's 'logit' form: finite outputs, gradients to every parameter (and to the LA kernels and carry
    gates from the DP loss alone), a bounded DP loss, a residual merge that matters, and with_cp giving the same
    values and gradients."""
    dp = dict(type='DiagonalityPreservingLoss', loss_weight=0.5)
    x = torch.randn(1, 3, 48, 64)
    ref = build(attention_kind='logit', dp_loss=dp).train()
    cp = build(attention_kind='logit', dp_loss=dp, with_cp=True).train()
    cp.load_state_dict(ref.state_dict())
    results = []
    for model in (ref, cp):
        outs = model(x)
        assert all(torch.isfinite(o).all() for o in outs)
        loss_dp = model.pop_auxiliary_losses()['loss_dp']
        assert 0 <= loss_dp.item() <= 0.5
        loss_dp.backward(retain_graph=True)
        from_dp = {n: p.grad.abs().sum().item() for n, p in model.named_parameters()
                   if n.endswith(('kernel_logits', 'gate_logits')) and p.grad is not None}
        model.zero_grad()
        (sum(o.mean() for o in outs) + loss_dp).backward()
        results.append((outs, loss_dp, from_dp, {n: p.grad for n, p in model.named_parameters()}))
    (outs, loss_dp, from_dp, grads), (outs_cp, loss_cp, _, grads_cp) = results
    n_kernels = 2 * sum(d - v for d, v in zip(TINY_LAVIT['depths'], TINY_LAVIT['num_vanilla']))
    assert sum(n.endswith('kernel_logits') for n in from_dp) == n_kernels
    assert all(v > 0 for n, v in from_dp.items() if n.endswith('kernel_logits'))
    # the carried attention enters the next stage's attention, which the next stage's LA layers (the loss) see
    assert any(n.endswith('gate_logits') and v > 0 for n, v in from_dp.items())
    assert [n for n, g in grads.items() if g is None or g.abs().sum() == 0] == []
    for a, b in zip(outs, outs_cp):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(loss_dp, loss_cp, atol=1e-6)
    for n, g in grads.items():
        assert torch.allclose(g, grads_cp[n], atol=1e-5), n
    # the residual merge changes what the later stages compute (peaked attention, as in the 'prob' test above)
    with_res = randomised_lavit('logit')
    no_res = build(attention_kind='logit', attention_residual=False).eval()
    no_res.load_state_dict(with_res.state_dict(), strict=False)
    with torch.no_grad():
        for down in with_res.attention_downsamples:
            down.gate_logits.fill_(2.0)
        a, b = with_res(x), no_res(x)
    assert torch.equal(a[0], b[0]) and all((a[i] - b[i]).abs().max() > 1e-3 for i in (1, 2, 3))


def test_bfloat16_autocast_forward_and_backward(kind='prob'):
    """Under CPU bf16 autocast (with the residual carry in play): finite, close to fp32, 'prob' rows still sum to 1,
    and the DP loss backpropagates."""
    model = build(attention_kind=kind, dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.5))
    with torch.no_grad():
        for down in model.attention_downsamples:
            down.gate_logits.fill_(1.0)
    maps = []
    model.stages[1].blocks[1].attn.register_forward_hook(lambda m, a, o: maps.append(o[1]))
    x = torch.randn(1, 3, 40, 48)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)
            rows = maps[-1].probabilities().float().sum(-1)
    for a, b in zip(ref, out):
        assert torch.isfinite(b).all() and (a - b.float()).abs().max() < 0.15
    assert (rows - 1).abs().max() < 2e-2
    model.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
        loss = sum(o.float().mean() for o in outs) + model.pop_auxiliary_losses()['loss_dp']
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.endswith('kernel_logits')]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_inference_frees_a_stages_attention_once_it_is_carried():
    """The stage's full-size matrix is released by the downsampling (peak memory at detection sizes), unless a
    forward hook holds the stage's attention, which then stays readable."""
    import weakref
    model = build().eval()
    matrix, alive = [], []
    model.stages[0].blocks[-1].attn.register_forward_hook(lambda m, a, o: matrix.append(weakref.ref(o[1].matrix)))
    model.attention_downsamples[0].register_forward_hook(lambda m, a, o: alive.append(matrix[-1]() is not None))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
    assert alive == [False]
    held = []
    model.stages[0].blocks[-1].attn.register_forward_hook(lambda m, a, o: held.append(o[1]))
    with torch.no_grad():
        model(x)
    assert alive == [False, True] and held[0].probabilities().shape[-2:] == (16 * 16, 2 * 2)


def test_auto_la_chain_is_explicit_only_for_long_chains_over_small_matrices():
    """``la_chain='auto'``: explicit matrices for LaViT-B's 14-layer third stage at 512x512, factored for every
    other stage of T/S/B at 512x512 and 1333x800; the backbone follows the rule per stage, in inference only."""
    from vitattn_mm import LaViT
    from vitattn_mm.models.layers.attention_map import explicit_chain_is_cheaper

    def explicit_stages(arch, hw):
        a = LaViT.arch_zoo[arch]
        keys = (-(-hw[0] // 32), -(-hw[1] // 32))
        grids = [(-(-hw[0] // 2 ** (i + 2)), -(-hw[1] // 2 ** (i + 2))) for i in range(4)]
        return [i for i in range(4) if explicit_chain_is_cheaper(a['depths'][i] - a['num_vanilla'][i], grids[i],
                                                                 keys, a['num_heads'][i], a['embed_dims'][i])]

    assert {(arch, hw): explicit_stages(arch, hw) for arch in 'tsb' for hw in ((512, 512), (800, 1333))} == {
        ('t', (512, 512)): [], ('s', (512, 512)): [], ('b', (512, 512)): [2],
        ('t', (800, 1333)): [], ('s', (800, 1333)): [], ('b', (800, 1333)): []}

    model = build(arch=dict(TINY_LAVIT, depths=[3, 3, 4, 3]))
    flags = {}
    for i, stage in enumerate(model.stages):
        stage.blocks[-1].attn.register_forward_hook(lambda m, a, o, i=i: flags.__setitem__(i, o[1].explicit))
    x = torch.randn(1, 3, 96, 128)
    model(x)
    assert flags == {i: False for i in range(4)}  # training: factored
    with torch.no_grad():
        model.eval()(x)
    a = model.arch
    rule = {i: explicit_chain_is_cheaper(a['depths'][i] - a['num_vanilla'][i], (24 // 2 ** i, 32 // 2 ** i), (3, 4),
                                         a['num_heads'][i], a['embed_dims'][i]) for i in range(4)}
    assert flags == rule and set(rule.values()) == {False, True}  # both forms occur at this size


def test_prepared_transforms_are_reused_only_while_the_kernel_is_unchanged():
    """Inference keeps a ConvexLocalMix's prepared grid for the next call on the same grid; a changed kernel (an
    optimizer step, load_state_dict), another grid, autograd or autocast prepare it anew, and a model whose weights
    changed between two inference passes gives the same output as a fresh copy with those weights."""
    import copy
    from vitattn_mm.models.layers.local_mix import ConvexLocalMix
    mix = ConvexLocalMix(2)
    with torch.no_grad():
        first = mix.on_grid((5, 7))
        assert mix.on_grid((5, 7)) is first and mix.on_grid((7, 5)) is not first
        again = mix.on_grid((5, 7))
        mix.kernel_logits[:, 0] += 1.0
        changed = mix.on_grid((5, 7))
        assert changed is not again and not torch.equal(changed.kernel, again.kernel)
        mix.load_state_dict({'kernel_logits': torch.randn(2, 9)})
        assert torch.equal(mix.on_grid((5, 7)).kernel, mix.kernel())
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert mix.on_grid((5, 7)) is not mix.on_grid((5, 7))
    assert mix.on_grid((5, 7)) is not mix.on_grid((5, 7))  # autograd on

    model = build().eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        model(x)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    sum(o.mean() for o in model(x)).backward()
    optimizer.step()
    model.eval()
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        if isinstance(m, ConvexLocalMix):
            m._prepared = None
    with torch.no_grad():
        for a, b in zip(model(x), fresh(x)):
            assert torch.equal(a, b)


@pytest.mark.parametrize('heads, per_head, hw', [(1, 64, (40, 40)), (2, 64, (20, 20)), (5, 64, (13, 11))])
def test_border_normalisation_is_the_same_in_inference_and_training(heads, per_head, hw):
    """Inference multiplies the whole map by the mass of each token and head (exactly 1 inside), training the border
    ring alone: bit for bit the same values, so a model computes the same numbers in both modes."""
    from vitattn_mm.models.layers.local_mix import ConvexLocalMix
    mix = ConvexLocalMix(heads)
    x = torch.randn(2, heads * per_head, *hw).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        inference = mix.on_grid(hw).map(x.clone())
    training = mix.on_grid(hw).map(x.clone().requires_grad_())
    assert training.requires_grad and torch.equal(inference, training.detach())
