"""LaViT backbone: shapes, gradients, architecture rules, options, errors."""
import pytest
import torch
from conftest import TINY_LAVIT

from vitattn_mm import LaViT
from vitattn_mm.models.layers import LessAttention, SpatialReductionAttention


def build(**kw):
    kw.setdefault('arch', TINY_LAVIT)
    kw.setdefault('drop_path_rate', 0.0)
    model = LaViT(**kw)
    model.init_weights()
    return model


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


def test_factored_attention_equals_explicit_matrix():
    """LA layers compute A V in factored form; it must equal the explicit transformed matrix times V."""
    model = build().eval()
    for m in model.modules():
        if hasattr(m, 'kernel_logits'):
            m.kernel_logits.data.normal_()
    captured = []
    block = model.stages[0].blocks[2]  # the second LA layer of stage 1

    def grab(module, args, output):
        captured.append((args[2], output[1]))

    block.attn.register_forward_hook(grab)
    with torch.no_grad():
        model(torch.randn(1, 3, 75, 90))
    _, attn = captured[0]
    v = torch.randn(1, attn.num_heads, attn.matrix.shape[-1], 4)
    explicit = attn.probabilities()
    assert torch.allclose(explicit.sum(-1), torch.ones_like(explicit[..., 0]), atol=1e-5)
    assert (explicit >= 0).all()
    assert torch.allclose(attn.apply(v), explicit @ v, atol=1e-5)


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
    (dict(drop_path_rate=1.5), 'drop_path_rate'),
    (dict(la_kernel_size=4), 'kernel_size'),
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
def dense_mix(kernel: torch.Tensor, hw) -> torch.Tensor:
    """The explicit N x N matrix of a ConvexLocalMix kernel (k x k) on grid hw, built entry by entry (float64)."""
    h, w = hw
    r = kernel.shape[-1] // 2
    t = torch.zeros(h * w, h * w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        t[y * w + x, (y + dy) * w + x + dx] = kernel[dy + r, dx + r].double()
    return t / t.sum(dim=1, keepdim=True)


def dense_pool(hw, factor: int) -> torch.Tensor:
    """Explicit average pooling of grid hw by factor (ceil mode, partial windows averaged over their in-grid part)."""
    h, w = hw
    ph, pw = -(-h // factor), -(-w // factor)
    p = torch.zeros(ph * pw, h * w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            p[(y // factor) * pw + x // factor, y * w + x] = 1
    return p / p.sum(dim=1, keepdim=True), (ph, pw)


def per_head(module, hw):
    """(heads, N, N) explicit matrices of a ConvexLocalMix on grid hw."""
    kernel = module.kernel().detach()
    return torch.stack([dense_mix(kernel[g, 0], hw) for g in range(kernel.shape[0])])


def randomised_lavit(kind: str):
    model = build(attention_kind=kind).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('kernel_logits'):
                p.normal_(0, 1.5)  # random, far from the near-identity initialisation
            elif name.endswith(('q.weight', 'k.weight')):
                p.mul_(10)  # peaked attention
            elif name.endswith(('gate_logits', 'head_mix_logits')):
                p.normal_()  # a large share of the carried attention, uneven head mixing
    return model


@pytest.mark.parametrize('kind', ['prob', 'logit'])
def test_every_attention_path_equals_explicit_matrices(kind):
    """Every stage (1 to 8 heads), random kernels, an odd input size, both kinds, with the residual carry: each
    layer's output and attention, the carried attention and the DP loss's key-grid attention equal explicit
    float64 matrix products to 1e-5."""
    model = randomised_lavit(kind)
    records = []

    def grab(module, args, output):
        records.append((module, args, output))

    for stage in model.stages:
        for block in stage.blocks:
            block.attn.register_forward_hook(grab)
    with torch.no_grad():
        model(torch.randn(2, 3, 75, 97))

    def values(module, x, hw):
        keys, _ = module.reduce(x, hw)
        return split(module.v(keys), module.num_heads).double()

    def split(t, heads):
        b, n, c = t.shape
        return t.view(b, n, heads, c // heads).transpose(1, 2)

    def layer_output(module, a_probs, v):
        z = (a_probs @ v).transpose(1, 2).reshape(v.shape[0], a_probs.shape[2], -1)
        return module.proj(z.float()).double()

    it = iter(records)
    carried = None  # explicit residual for the next stage's first layer: (matrix, gate)
    checked = dict(va=0, la=0, carry=0, dp=0)
    for s, stage in enumerate(model.stages):
        chain = []  # (psi, theta) modules since the last VA layer
        for j, block in enumerate(stage.blocks):
            module, (x, hw, attn_in), (out, amap) = next(it)
            v = values(module, x, hw)
            if not block.less_attention:
                q = split(module.q(x), module.num_heads).double()
                keys, key_hw = module.reduce(x, hw)
                k = split(module.k(keys), module.num_heads).double()
                ref = q @ k.transpose(-2, -1) * module.scale
                if kind == 'prob':
                    ref = ref.softmax(-1)
                if j == 0 and carried is not None:
                    d, gate = carried
                    ref = (1 - gate) * ref + gate * d if kind == 'prob' else ref + gate * d
                base, chain = ref, []
                checked['va'] += 1
            else:
                chain.append((module.psi, module.theta))
                psi, theta = per_head(module.psi, hw), per_head(module.theta, key_hw)
                ref = psi @ ref @ theta
                checked['la'] += 1
                # the DP loss's key-grid attention: Psi applied after pooling onto the key grid (exact for logits)
                pool, khw = dense_pool(hw, model.sr_ratios[s])
                assert khw == key_hw
                if kind == 'prob':
                    square = pool @ base
                    for p_mod, _ in chain:
                        square = per_head(p_mod, key_hw) @ square
                    for _, t_mod in chain:
                        square = square @ per_head(t_mod, key_hw)
                else:
                    square = pool @ ref.softmax(-1)
                got = amap.key_grid_attention(model.sr_ratios[s])
                assert torch.allclose(got.double(), square, atol=1e-5)
                checked['dp'] += 1
            probs = ref if kind == 'prob' else ref.softmax(-1)
            assert torch.allclose(amap.probabilities().double(), probs, atol=1e-5)
            assert torch.allclose(amap.apply(v.float()).double(), probs @ v, atol=1e-5)
            assert torch.allclose(out.double(), layer_output(module, probs, v), atol=1e-5)
        if s < 3:
            # the carried attention: pool the queries, Psi on the pooled grid, Theta on the keys, mix the heads
            down = model.attention_downsamples[s]
            pool, next_hw = dense_pool(hw, 2)
            d = pool @ (base if kind == 'prob' else ref)
            if kind == 'prob':
                for p_mod, _ in chain:
                    d = per_head(p_mod, next_hw) @ d
                for _, t_mod in chain:
                    d = d @ per_head(t_mod, key_hw)
            mix = (down.head_mix_logits.softmax(-1).double() if down.head_mix_logits is not None
                   else torch.ones(down.out_heads, 1, dtype=torch.float64))
            d = torch.einsum('og,bgqk->boqk', mix, d)
            got = down(amap, next_hw)
            assert torch.allclose(got.matrix.double(), d, atol=1e-5)
            carried = (d, down.gate_logits.sigmoid().double().view(1, -1, 1, 1))
            checked['carry'] += 1
    n_la = sum(d - v for d, v in zip(TINY_LAVIT['depths'], TINY_LAVIT['num_vanilla']))
    assert checked == dict(va=sum(TINY_LAVIT['num_vanilla']), la=n_la, carry=3, dp=n_la)


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


def test_dp_key_grid_coarsened_above_max_cells_matches_explicit_matrices():
    """Above ``max_cells`` key cells the DP loss's key-grid attentions are computed on a coarser grid: queries
    pooled by factor x c, Psi on that grid, Theta exact on the full key axis, keys summed over c x c windows.
    Checked against explicit float64 matrices (3 heads, random kernels, odd grid, a chain of 2 LA layers)."""
    from vitattn_mm.models.layers.attention_map import AttentionMap, coarsening
    from vitattn_mm.models.layers.local_mix import ConvexLocalMix
    assert coarsening((16, 16), 300) == 1 and coarsening((25, 42), 300) == 2  # 512x512 exact, 1333x800 by 2
    assert coarsening((25, 42), None) == 1
    torch.manual_seed(3)
    query_hw, key_hw, factor, heads = (14, 18), (7, 9), 2, 3
    max_cells = 20  # 7 x 9 = 63 key cells -> c = 2: 4 x 5 = 20
    p = torch.randn(2, heads, 14 * 18, 7 * 9).mul(3).softmax(-1)
    mixes = [ConvexLocalMix(heads) for _ in range(4)]
    with torch.no_grad():
        for m in mixes:
            m.kernel_logits.normal_(0, 1.5)
    amap = AttentionMap(p, query_hw, key_hw, 'prob')
    for psi, theta in ((mixes[0], mixes[1]), (mixes[2], mixes[3])):
        amap = amap.transformed(psi, theta)
    got = amap.key_grid_attentions(factor, max_cells=max_cells)

    pool, coarse_hw = dense_pool(query_hw, factor * 2)
    assert coarse_hw == (4, 5)
    members, _ = dense_pool(key_hw, 2)
    key_sum = (members > 0).double().T  # (63, 20): key j -> its 2 x 2 window
    a = pool @ p.double()
    for l, (psi, theta) in enumerate(((mixes[0], mixes[1]), (mixes[2], mixes[3]))):
        a = a @ per_head(theta, key_hw)
        square = a @ key_sum
        for psi_l, _ in ((mixes[0], None), (mixes[2], None))[:l + 1]:
            square = per_head(psi_l, coarse_hw) @ square
        assert got[l].shape == (2, heads, 20, 20)
        assert torch.allclose(got[l].double(), square, atol=1e-5)
        assert torch.allclose(got[l].sum(-1), torch.ones(2, heads, 20), atol=1e-5)  # still distributions
