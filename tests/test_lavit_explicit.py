"""LaViT's fast attention paths against explicit float64 matrices built entry by entry: the factored LA layers,
every stage with several heads and random kernels, the residual carry and the DP loss's key-grid attentions."""
import pytest
import torch
from conftest import TINY_LAVIT, randomised_lavit, tiny_lavit as build


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


@pytest.mark.parametrize('kind, la_chain', [('prob', 'factored'), ('prob', 'explicit'), ('logit', 'auto')])
def test_every_attention_path_equals_explicit_matrices(kind, la_chain):
    """Every stage (1 to 8 heads), random kernels, an odd input size, both kinds, the 'prob' chains factored and
    explicit, with the residual carry: each layer's output and attention, the carried attention and the DP loss's
    key-grid attention (factored chains) equal explicit float64 matrix products to 1e-5."""
    arch = dict(TINY_LAVIT, depths=[3, 3, 4, 3])  # two LA layers in every stage: chains of 1, 2, 5 and 8 heads
    model = randomised_lavit(kind, arch=arch, la_chain=la_chain)
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
                assert amap.explicit == (la_chain == 'explicit')
                if amap.explicit:
                    assert not amap.psis  # the transforms are in the matrix; the DP loss never sees such a map
                else:
                    check_key_grid_attention(amap, model.sr_ratios[s], hw, key_hw, base, ref, chain, kind)
                    checked['dp'] += 1
            probs = ref if kind == 'prob' else ref.softmax(-1)
            assert torch.allclose(amap.probabilities().double(), probs, atol=1e-5)
            assert torch.allclose(amap.apply(v.float()).double(), probs @ v, atol=1e-5)
            assert torch.allclose(out.double(), layer_output(module, probs, v), atol=1e-5)
        if s < 3:
            # the carried attention: the stage's matrix with its queries pooled (for 'prob' the base attention P,
            # without the stage's factored LA transforms; for 'logit' the transformed logits), heads mixed
            down = model.attention_downsamples[s]
            pool, next_hw = dense_pool(hw, 2)
            d = pool @ (base if kind == 'prob' else ref)
            mix = (down.head_mix_logits.softmax(-1).double() if down.head_mix_logits is not None
                   else torch.ones(down.out_heads, 1, dtype=torch.float64))
            d = torch.einsum('og,bgqk->boqk', mix, d)
            got = down(amap, next_hw)
            assert torch.allclose(got.matrix.double(), d, atol=1e-5)
            carried = (d, down.gate_logits.sigmoid().double().view(1, -1, 1, 1))
            checked['carry'] += 1
    n_la = sum(d - v for d, v in zip(arch['depths'], arch['num_vanilla']))
    assert checked == dict(va=sum(arch['num_vanilla']), la=n_la, carry=3, dp=0 if la_chain == 'explicit' else n_la)


def check_key_grid_attention(amap, sr_ratio, hw, key_hw, base, ref, chain, kind):
    """The DP loss's key-grid attention: Psi applied after pooling onto the key grid (exact for logits)."""
    pool, khw = dense_pool(hw, sr_ratio)
    assert khw == key_hw
    if kind == 'prob':
        square = pool @ base
        for p_mod, _ in chain:
            square = per_head(p_mod, key_hw) @ square
        for _, t_mod in chain:
            square = square @ per_head(t_mod, key_hw)
    else:
        square = pool @ ref.softmax(-1)
    got = amap.key_grid_attention(sr_ratio)
    assert torch.allclose(got.double(), square, atol=1e-5)


@pytest.mark.parametrize('max_cells, layers', [(20, 2), (20, 8), (None, 3)])
def test_dp_key_grid_attentions_match_explicit_matrices(max_cells, layers):
    """The DP loss's key-grid attentions ``S_l = Psi_l ... Psi_1 pool(P) Theta_1 ... Theta_l`` of a chain of LA
    layers, checked against explicit float64 matrices (3 heads, random kernels, odd grid): exact keys (no
    ``max_cells``: the recurrence ``S_l = Psi_l S_(l-1) Theta_l``) and, above ``max_cells`` key cells, a coarser grid
    (queries pooled by factor x c, Psi on that grid, Theta exact on the full key axis, keys summed over c x c
    windows), for a short chain (Psis on the stack of coarsened partial products) and a long one (the recurrence on
    the uncoarsened keys)."""
    from vitattn_mm.models.layers.attention_map import AttentionMap, coarsening
    from vitattn_mm.models.layers.local_mix import ConvexLocalMix
    assert coarsening((16, 16), 300) == 1 and coarsening((25, 42), 300) == 2  # 512x512 exact, 1333x800 by 2
    assert coarsening((25, 42), None) == 1
    torch.manual_seed(3)
    query_hw, key_hw, factor, heads = (14, 18), (7, 9), 2, 3
    c = coarsening(key_hw, max_cells)  # 7 x 9 = 63 key cells; max_cells 20 -> c = 2: 4 x 5 = 20
    p = torch.randn(2, heads, 14 * 18, 7 * 9).mul(3).softmax(-1)
    mixes = [ConvexLocalMix(heads) for _ in range(2 * layers)]
    with torch.no_grad():
        for m in mixes:
            m.kernel_logits.normal_(0, 1.5)
    chain = list(zip(mixes[::2], mixes[1::2]))  # (Psi, Theta) of each LA layer
    amap = AttentionMap(p, query_hw, key_hw, 'prob')
    for psi, theta in chain:
        amap = amap.transformed(psi, theta)
    got = amap.key_grid_attentions(factor, max_cells=max_cells)

    pool, coarse_hw = dense_pool(query_hw, factor * c)
    members, cells_hw = dense_pool(key_hw, c)
    assert coarse_hw == cells_hw == ((4, 5) if c == 2 else key_hw)
    key_sum = (members > 0).double().T  # (63, cells): key j -> its c x c window
    cells = key_sum.shape[1]
    a = pool @ p.double()
    assert len(got) == layers
    for l, (_, theta) in enumerate(chain):
        a = a @ per_head(theta, key_hw)  # pool(P) Theta_1 ... Theta_l, exact on the full key axis
        square = a @ key_sum
        for psi, _ in chain[:l + 1]:  # Psi_l ... Psi_1 on the coarse grid
            square = per_head(psi, coarse_hw) @ square
        assert got[l].shape == (2, heads, cells, cells)
        assert torch.allclose(got[l].double(), square, atol=1e-5)
        assert torch.allclose(got[l].sum(-1), torch.ones(2, heads, cells), atol=1e-5)  # still distributions


@pytest.mark.parametrize('query_hw, max_cells, shared', [((16, 20), None, True), ((16, 20), 6, True),
                                                          ((15, 20), None, False)])
def test_dp_pooling_shared_with_the_carry_changes_nothing(query_hw, max_cells, shared):
    """With ``carry_factor`` the DP loss pools the queries by the carry's factor first (when it divides the grid)
    and keeps that for the stage carry: the key-grid attentions and the carried matrix are as without it."""
    from vitattn_mm.models.layers.attention_map import AttentionMap, pool_rows
    from vitattn_mm.models.layers.local_mix import ConvexLocalMix
    torch.manual_seed(4)
    key_hw, heads = (4, 5), 2
    p = torch.randn(2, heads, query_hw[0] * query_hw[1], 20).mul(3).softmax(-1)
    mixes = [ConvexLocalMix(heads) for _ in range(4)]
    with torch.no_grad():
        for m in mixes:
            m.kernel_logits.normal_(0, 1.5)

    def stage_end():
        amap = AttentionMap(p, query_hw, key_hw, 'prob')
        return amap.transformed(mixes[0], mixes[1]).transformed(mixes[2], mixes[3])

    plain = stage_end().key_grid_attentions(4, max_cells)
    amap = stage_end()
    shared_squares = amap.key_grid_attentions(4, max_cells, carry_factor=2)
    for a, b in zip(plain, shared_squares):
        assert torch.allclose(a, b, atol=1e-6)
    assert (2 in amap._pooled) == shared
    carried = amap.handover().carried(2, release=True)
    assert torch.allclose(carried.matrix, pool_rows(p, query_hw, 2)[0], atol=1e-7)
    assert amap._pooled == {}  # the carry took it


@pytest.mark.parametrize('hw', [(5, 7), (2, 6), (1, 1)])
def test_training_transform_scales_only_the_border_and_keeps_exact_gradients(hw):
    """In training a transform scales the border ring alone (the interior's 1 / m is exactly 1): values equal the
    explicit row-stochastic matrix, and the gradients for the input and the kernel logits pass torch's numerical
    check (float64), on grids with an interior and on grids that are all border."""
    from vitattn_mm.models.layers.local_mix import GridMix
    torch.manual_seed(0)
    heads, per_head = 2, 3
    logits = torch.randn(heads, 9, dtype=torch.float64).mul(1.5).requires_grad_()
    x = torch.randn(2, heads * per_head, *hw, dtype=torch.float64).contiguous(memory_format=torch.channels_last)

    def transform(x, logits):
        return GridMix(logits.softmax(-1).view(heads, 1, 3, 3), hw).map(x)

    inv = GridMix(logits.softmax(-1).view(heads, 1, 3, 3), hw).inv_mass.detach()[0]
    inside = torch.zeros(hw, dtype=torch.bool)
    inside[1:hw[0] - 1, 1:hw[1] - 1] = True
    assert (inv[:, inside] == 1).all() and (inv[:, ~inside] > 1).all()
    kernel = logits.detach().softmax(-1).view(heads, 3, 3)
    dense = torch.stack([dense_mix(kernel[g], hw) for g in range(heads)])
    ref = torch.einsum('gnm,bgcm->bgcn', dense, x.reshape(2, heads, per_head, -1))
    from torch.utils._python_dispatch import TorchDispatchMode

    class Products(TorchDispatchMode):
        sizes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.mul, torch.ops.aten.mul_):
                Products.sizes.append(args[0].numel())
            return func(*args, **(kwargs or {}))

    with Products():
        out = transform(x.clone().requires_grad_(), logits)
    assert out.requires_grad and torch.allclose(out.reshape(2, heads, per_head, -1), ref, atol=1e-12)
    if inside.any():  # the products touch the border ring only (its longest side: a full row), not the map
        assert max(Products.sizes) <= x.shape[0] * x.shape[1] * max(hw) < x.numel()
    assert torch.autograd.gradcheck(transform, (x.clone().requires_grad_(), logits))
