"""An attention matrix carried from one layer to the next (and from one stage to the next) in LaViT."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..utils.tokens import head_matmul, map_to_tokens, merge_heads, split_heads, tokens_as_map
from .local_mix import ConvexLocalMix
from .shared_matrix_product import SharedMatrixProducts

ATTENTION_KINDS = ('prob', 'logit')


def pool_rows(t: torch.Tensor, hw: Tuple[int, int], factor: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Average-pool the rows of ``t`` (B, heads, N, X), whose axis N lies on grid ``hw``, by ``factor``.

    One channels-last pooling call for all heads (heads folded into the batch, or into the channels for a
    heads-inner tensor; no copy either way); the result keeps ``t``'s layout. ``ceil_mode`` makes the pooled grid
    ``ceil(H / factor) x ceil(W / factor)``, the grid that our patch embeddings and key reductions produce, and
    averages partial windows over their in-grid part only, so pooled rows of a row-stochastic matrix stay
    row-stochastic. (:func:`average_pool_grid` runs the pooling.)
    """
    if factor == 1:
        return t, hw
    b, heads, n, x = t.shape
    h, w = hw
    if t.is_contiguous():
        grid = t.view(b * heads, h, w, x).permute(0, 3, 1, 2)
        out = average_pool_grid(grid, factor)
        return out.permute(0, 2, 3, 1).reshape(b, heads, -1, x), (out.shape[2], out.shape[3])
    inner = t.transpose(1, 2)
    if not inner.is_contiguous():
        return pool_rows(t.contiguous(), hw, factor)
    grid = inner.view(b, h, w, heads * x).permute(0, 3, 1, 2)
    out = average_pool_grid(grid, factor)
    new_hw = (out.shape[2], out.shape[3])
    return out.permute(0, 2, 3, 1).reshape(b, -1, heads, x).transpose(1, 2), new_hw


def average_pool_grid(grid: torch.Tensor, factor: int) -> torch.Tensor:
    """``avg_pool2d(grid, factor, factor, ceil_mode=True)`` of a channels-last (B, C, H, W) map.

    In inference on the CPU, when ``factor`` is a power of two that divides H and W (no partial windows), the same
    averages come from oneDNN's depthwise convolution with ``1 / factor**2`` in every tap: scaling by a power of two
    is exact, so the values differ at most by the order in which a window's taps are added (none on the Intel Xeon
    we measured: bit for bit; tested to float32 rounding), and it is faster
    than ATen's channels-last ``avg_pool2d`` at the stage carry's sizes (LaViT-S, stage 1 -> 2 at 1333x800, the
    66,800 x 1,050 matrix: 28 against 37-38 ms, two threads, Intel Xeon; docs/benchmarks.md, "The stage carry's
    pooling"). Training (autograd), autocast (which would run the convolution in bfloat16), other dtypes than float32
    (measured and tested in float32 only), partial windows and other devices keep ``avg_pool2d``.
    """
    h, w = grid.shape[-2:]
    whole_windows = (factor & (factor - 1)) == 0 and h % factor == 0 and w % factor == 0
    if (torch.is_grad_enabled() or grid.device.type != 'cpu' or grid.dtype != torch.float32 or not whole_windows
            or torch.is_autocast_enabled('cpu') or not torch.backends.mkldnn.is_available()):
        return F.avg_pool2d(grid, factor, factor, ceil_mode=True)
    channels = grid.shape[1]
    weight = grid.new_full((channels, 1, factor, factor), 1.0 / (factor * factor))
    return F.conv2d(grid, weight, stride=factor, groups=channels)


def coarsening(hw: Tuple[int, int], max_cells: Optional[int]) -> int:
    """The smallest integer factor c with ``ceil(H / c) * ceil(W / c) <= max_cells`` (1 without a limit)."""
    if not max_cells:
        return 1
    c = 1
    while -(-hw[0] // c) * -(-hw[1] // c) > max_cells:
        c += 1
    return c


def sum_pool_columns(t: torch.Tensor, hw: Tuple[int, int], factor: int) -> torch.Tensor:
    """Sum the columns of ``t`` (B, heads, R, N), whose axis N lies on grid ``hw``, over ``factor x factor``
    windows (ceil mode: partial windows sum their in-grid part), so rows that are distributions stay ones."""
    b, heads, r, n = t.shape
    grid = t.contiguous().view(b * heads * r, 1, *hw)
    out = F.avg_pool2d(grid, factor, factor, ceil_mode=True, divisor_override=1)
    return out.view(b, heads, r, -1)


def explicit_chain_is_cheaper(layers: int, query_hw: Tuple[int, int], key_hw: Tuple[int, int], heads: int,
                              channels: int) -> bool:
    """Whether a chain of ``layers`` less-attention layers costs fewer multiply-adds with explicit matrices
    (:meth:`AttentionMap.with_explicit_chain`) than factored. Each transform is a 3x3-style depthwise convolution,
    so its cost is proportional to the elements it touches: factored, the l-th layer transforms its values
    (Nk x C) and output (Nq x C) l times each; explicit, every layer transforms the (heads x Nq x Nk) matrix twice.
    (Both do one ``A V`` product per layer.) Explicit wins only for long chains over small matrices: LaViT-B's
    third stage (14 LA layers) at 512x512 or less, no stage of LaViT-T/S at 512x512 or more."""
    nq, nk = query_hw[0] * query_hw[1], key_hw[0] * key_hw[1]
    factored = layers * (layers + 1) // 2 * (nq + nk) * channels
    explicit = layers * 2 * nq * nk * heads
    return explicit < factored


class AttentionMap:
    """Attention of one layer over (queries x keys), shape (B, heads, Nq, Nk), with its grids.

    ``kind='prob'`` (our default): ``matrix`` holds softmax probabilities ``P`` of the last vanilla-attention
    layer, and the less-attention transforms applied since then are kept *factored*: the effective attention
    is ``A = Psi_n ... Psi_1 P Theta_1 ... Theta_n``. Every ``Psi``/``Theta`` is row-stochastic, so ``A`` stays a
    probability matrix and needs no softmax, and ``A @ V`` is computed as
    ``Psi_n(...Psi_1(P @ Theta_1(...Theta_n(V))))``: the transforms act on ``V`` (Nk x d) and on the output
    (Nq x d), never on the Nq x Nk matrix, and on all heads at once (token layout, heads in the channels).
    A less-attention layer then costs one ``P @ V`` product, with neither ``Q K^T`` nor softmax. The l-th layer of a
    chain applies 2 l transforms, so for long chains over small matrices (LaViT-B's 14 LA layers at 512x512) the
    backbone switches a stage to an *explicit* chain in inference (:meth:`with_explicit_chain`): each layer applies
    its two transforms to the Nq x Nk matrix itself.

    ``kind='logit'`` (the paper's form): ``matrix`` holds pre-softmax logits ``L``; a less-attention layer
    computes ``L_l = Psi L_{l-1} Theta`` explicitly over the Nq x Nk matrix and then ``softmax(L_l) V``.
    It skips only ``Q K^T`` and exists for comparison (``tools/analysis/benchmark_backbones.py``).

    ``matrix`` may be a view of a heads-inner tensor (see :class:`~.local_mix.GridMix`); only its logical shape
    (B, heads, Nq, Nk) matters to users. The ``psis``/``thetas`` are the :class:`ConvexLocalMix` modules of the
    factored chain; they are prepared on their grids once per layer (:meth:`transformed`). In training the products
    of one probability matrix by the values of its layers go through one :class:`SharedMatrixProducts`, which
    gathers the matrix's gradient from all of them into one GEMM.
    """

    def __init__(self, matrix: torch.Tensor, query_hw: Tuple[int, int], key_hw: Tuple[int, int],
                 kind: str = 'prob', psis: Sequence[ConvexLocalMix] = (),
                 thetas: Sequence[ConvexLocalMix] = (), _grids: Optional[tuple] = None,
                 _pooled: Optional[dict] = None, _products: Optional[SharedMatrixProducts] = None,
                 _base: Optional[torch.Tensor] = None):
        if kind not in ATTENTION_KINDS:
            raise ValueError(f'attention kind must be one of {ATTENTION_KINDS}, got {kind!r}')
        self.matrix = matrix
        # an explicit chain (see with_explicit_chain): the base attention P, which the stage carry pools
        self._base = _base
        self.query_hw = tuple(query_hw)
        self.key_hw = tuple(key_hw)
        self.kind = kind
        self.psis = tuple(psis)
        self.thetas = tuple(thetas)
        if _grids is None:
            _grids = (tuple(p.on_grid(self.query_hw) for p in self.psis),
                      tuple(t.on_grid(self.key_hw) for t in self.thetas))
        self._psi_grids, self._theta_grids = _grids
        self._probs: Optional[torch.Tensor] = None
        # rows pooled by a factor, kept by the DP loss's key-grid pooling for the stage carry (see key_grid_attentions)
        self._pooled = {} if _pooled is None else _pooled
        if (_products is None and kind == 'prob' and torch.is_grad_enabled() and matrix.requires_grad
                and not (torch.compiler.is_compiling() or torch.jit.is_tracing())):
            # (a compiler or tracer sees the plain products: the hand-over is Python-side state of the backward)
            _products = SharedMatrixProducts()
        self._products = _products

    @property
    def num_heads(self) -> int:
        return self.matrix.shape[1]

    def handover(self) -> 'AttentionMap':
        """A second map object over the same matrix (no copy), for a consumer that releases it
        (``carried(..., release=True)``) while this map stays usable for whoever still holds it."""
        return AttentionMap(self.matrix, self.query_hw, self.key_hw, self.kind, self.psis, self.thetas,
                            _grids=(self._psi_grids, self._theta_grids), _pooled=self._pooled,
                            _products=self._products, _base=self._base)

    @property
    def explicit(self) -> bool:
        """Probabilities whose less-attention transforms are applied to the matrix layer by layer
        (:meth:`with_explicit_chain`) instead of being kept factored."""
        return self._base is not None

    def with_explicit_chain(self) -> 'AttentionMap':
        """This probability map (a vanilla layer's, no transforms yet) for a chain of less-attention layers that
        apply their Psi and Theta to the Nq x Nk matrix, ``A_l = Psi_l A_(l-1) Theta_l``, two transforms per layer,
        instead of keeping them factored, where the l-th layer applies 2 l transforms to its values and output.
        The same attention (up to rounding); cheaper for long chains over small matrices (LaViT-B's third stage at
        512x512; see :func:`explicit_chain_is_cheaper`). Inference only: the DP loss and the shared products of
        training work on the factored chain. The stage carry still pools the base matrix ``P`` (:meth:`carried`).
        """
        if self.kind != 'prob' or self.psis or torch.is_grad_enabled():
            raise RuntimeError('an explicit chain starts from a vanilla layer\'s probabilities, in inference')
        return AttentionMap(self.matrix, self.query_hw, self.key_hw, 'prob', _base=self.matrix)

    def transformed(self, psi: ConvexLocalMix, theta: ConvexLocalMix) -> 'AttentionMap':
        """The attention of a less-attention layer: ``Psi A Theta``."""
        psi_grid, theta_grid = psi.on_grid(self.query_hw), theta.on_grid(self.key_hw)
        if self.kind == 'prob' and not self.explicit:
            return AttentionMap(self.matrix, self.query_hw, self.key_hw, 'prob', self.psis + (psi, ),
                                self.thetas + (theta, ),
                                _grids=(self._psi_grids + (psi_grid, ), self._theta_grids + (theta_grid, )),
                                _products=self._products)
        matrix = theta_grid.columns(psi_grid.rows(self.matrix), overwrite=True)
        return AttentionMap(matrix, self.query_hw, self.key_hw, self.kind, _base=self._base)

    def apply_tokens(self, v: torch.Tensor) -> torch.Tensor:
        """``A @ V`` in token layout: values (B, Nk, heads * d) -> output (B, Nq, heads * d)."""
        heads = self.num_heads
        if self.kind == 'logit':
            return merge_heads(head_matmul(self._probabilities_of_logits(), split_heads(v, heads)))
        if self._theta_grids:
            grid = tokens_as_map(v, self.key_hw)
            for theta in reversed(self._theta_grids):
                grid = theta.map(grid)
            v = map_to_tokens(grid)[0]
        z = merge_heads(self._times(split_heads(v, heads)))
        if self._psi_grids:
            grid = tokens_as_map(z, self.query_hw)
            for psi in self._psi_grids:
                grid = psi.map(grid)
            z = map_to_tokens(grid)[0]
        return z

    def _times(self, v: torch.Tensor) -> torch.Tensor:
        """``matrix @ v`` for (B, heads, Nk, d) values: one ``bmm``; in training through the shared products."""
        if self._products is None or not torch.is_grad_enabled():
            return head_matmul(self.matrix, v)
        b, heads, n, k = self.matrix.shape
        out = self._products.product(self.matrix.reshape(b * heads, n, k), v.reshape(b * heads, k, v.shape[-1]))
        return out.view(b, heads, n, -1)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``A @ v`` for values ``v`` of shape (B, heads, Nk, d)."""
        return split_heads(self.apply_tokens(merge_heads(v)), self.num_heads)

    def _probabilities_of_logits(self) -> torch.Tensor:
        """``softmax(L)``; kept for :meth:`key_grid_attention` only in training (where autograd keeps it anyway)."""
        if self._probs is not None:
            return self._probs
        probs = self.matrix.softmax(dim=-1)
        if torch.is_grad_enabled():
            self._probs = probs
        return probs

    def probabilities(self) -> torch.Tensor:
        """The explicit row-stochastic matrix A (B, heads, Nq, Nk). Costly at full resolution: analysis only."""
        return self.pooled(1).matrix if self.kind == 'prob' else self.matrix.softmax(dim=-1)

    def pooled(self, factor: int) -> 'AttentionMap':
        """The attention with its query grid average-pooled by ``factor``, all transforms applied (exact).

        For probabilities: ``pool(Psi_n ... Psi_1 P) Theta_1 ... Theta_n`` (the Psi act before pooling, the
        Theta after it, on the smaller matrix). For logits the logits are pooled. Applies the Psi over the full
        Nq x Nk matrix: for analysis; the DP loss uses :meth:`key_grid_attentions`.
        """
        a = self.matrix
        for psi in self._psi_grids:
            a = psi.rows(a)
        a, hw = pool_rows(a, self.query_hw, factor)
        for theta in self._theta_grids:
            a = theta.columns(a, overwrite=a is not self.matrix)
        return AttentionMap(a, hw, self.key_hw, self.kind)

    def carried(self, factor: int, release: bool = False) -> 'AttentionMap':
        """The attention handed to the next stage: the stage's own matrix with its queries average-pooled by
        ``factor`` (one pooling call over the full matrix, all heads at once), as a map without transforms.

        For logits the less-attention transforms are explicit in the matrix, so they are carried. For
        probabilities the matrix is the stage's base attention ``P`` (its last vanilla attention, merged with the
        residual it received) and the factored Psi/Theta of the stage's LA layers are *not* applied to the carried
        copy (our design): they are local 3x3 convex smoothings, and applying them to the pooled 16,700 x 1,050
        matrix of LaViT-S at 1333x800 (two Psi and two Theta) made the carry 5x as costly as the pooling alone
        (165 vs 33 ms, Intel Xeon; docs/benchmarks.md). :meth:`pooled` gives the exact pooled transformed
        attention for analysis.

        ``release``: the caller reads this map no more; its full-size matrix is dropped as soon as it is pooled, so
        that in inference it is freed before the next stage allocates its own (the map is unusable afterwards).
        """
        kept = self._pooled.pop(factor, None)  # pooled already for the DP loss (training)
        base = self.matrix if self._base is None else self._base
        a, hw = kept if kept is not None else pool_rows(base, self.query_hw, factor)
        if release:
            self.matrix = self._base = None
        return AttentionMap(a, hw, self.key_hw, self.kind)

    def key_grid_attention(self, factor: int) -> torch.Tensor:
        """This layer's attention with its queries pooled onto the key grid: a row-stochastic (B, heads, K, K)
        matrix for the diagonality-preserving loss (``factor`` = the stage's key reduction ratio).

        For logits: ``pool(softmax(L))`` (exact; the softmax is shared with :meth:`apply_tokens`). For
        probabilities see :meth:`key_grid_attentions` (this is its last entry).
        """
        if self.kind == 'logit':
            return pool_rows(self._probabilities_of_logits(), self.query_hw, factor)[0]
        return self.key_grid_attentions(factor)[-1]

    def key_grid_attentions(self, factor: int, max_cells: Optional[int] = None,
                            carry_factor: Optional[int] = None) -> List[torch.Tensor]:
        """For probabilities: the key-grid attention of every less-attention layer of the chain, ``S_1 ... S_n``.

        We make the same approximation as :meth:`carried`: ``Psi_l ... Psi_1`` act *after* pooling, on the key grid,
        and ``Theta_1 ... Theta_l`` on the key axis (exact for Theta):
        ``S_l = Psi_l^K ... Psi_1^K pool(P) Theta_1 ... Theta_l``, where ``Psi^K`` is the same learned kernel on the
        K-cell grid (its neighbourhood spans ``factor x factor`` times the area it covers on the query grid).
        ``pool(P)`` is computed once and then ``S_l = Psi_l^K S_(l-1) Theta_l`` (rows and columns are transformed
        independently), so a chain of n layers costs n row and n column transforms of K x K matrices and never a Psi
        over the full Nq x Nk matrix. ``S_l`` is a product of row-stochastic matrices, so the loss on it stays in
        [0, loss_weight].

        ``max_cells`` (our choice, for large inputs): when the key grid has more cells, both axes of ``S_l`` are
        coarsened by the smallest integer factor ``c`` that brings the grid within it: the queries are pooled by
        ``factor * c`` (and the Psi act on that grid), the Thetas still act exactly on the full key axis, and then
        the keys are summed over c x c windows (rows stay distributions). At 1333x800 every LaViT stage has a
        25 x 42 key grid (1,050 cells), and stacks of 1,050 x 1,050 matrices made the loss 42% of a training step.
        For a short chain (``n + 1 <= 2 c^2``, every stage of LaViT-T/S and all but LaViT-B's third) the partial
        products ``pool(P) Theta_1 ... Theta_l`` are coarsened first and the Psis applied to the stack of the
        remaining layers (n (n + 1) / 2 row transforms of K_c x K_c matrices); for a longer one, the recurrence above
        on the K_c x K matrices, coarsened at the end of each step.

        ``carry_factor``: the stage carry will pool the queries by this factor (:meth:`carried`). When it divides
        the pooling factor and both sides of the query grid, the rows are pooled by it first, kept for the carry,
        and pooled further from there: the same averages (every first-level window is full), and one pass over the
        full matrix (and its gradient) instead of two.
        """
        if self.kind != 'prob' or not self.psis:
            raise RuntimeError('key_grid_attentions needs a probability attention with less-attention transforms')
        coarse = coarsening(self.key_hw, max_cells)
        total = factor * coarse
        c = carry_factor
        if c and total % c == 0 and self.query_hw[0] % c == 0 and self.query_hw[1] % c == 0:
            if c not in self._pooled:
                self._pooled[c] = pool_rows(self.matrix, self.query_hw, c)
            pooled, hw = pool_rows(*self._pooled[c], total // c)
        else:
            pooled, hw = pool_rows(self.matrix, self.query_hw, total)
        n = len(self.psis)
        if coarse == 1 or n + 1 > 2 * coarse ** 2:
            # T_l = Psi_l T_(l-1) Theta_l (Psi acts on the rows, Theta on the columns), S_l = T_l with its keys
            # summed over c x c windows: n row and n column transforms of K_c x K matrices
            squares, t = [], pooled
            for psi, theta in zip(self.psis, self._theta_grids):
                t = theta.columns(psi.on_grid(hw).rows(t))
                squares.append(t if coarse == 1 else sum_pool_columns(t, self.key_hw, coarse))
            return squares
        # short chains on coarsened keys: the partial products pool(P) Theta_1 ... Theta_l are coarsened first and
        # the Psis applied to the stack of the remaining layers: n (n + 1) / 2 row transforms of K_c x K_c matrices,
        # fewer elements than n of the c^2 times wider K_c x K ones while n + 1 <= 2 c^2
        cols, a = [], pooled
        for theta in self._theta_grids:  # pool(P) Theta_1 ... Theta_l for every l
            a = theta.columns(a)  # each partial product is kept: not overwritten
            cols.append(sum_pool_columns(a, self.key_hw, coarse))
        b, heads, k, _ = pooled.shape
        tail = torch.stack(cols).view(-1, heads, k, k)  # (n * B, heads, K, K)
        squares = []
        for psi in self.psis:
            tail = psi.on_grid(hw).rows(tail)
            squares.append(tail[:b])
            tail = tail[b:]
        return squares


class AttentionResidual:
    """The previous stage's downsampled attention ``D``, to be merged into a stage's first attention.

    Probabilities: ``(1 - g) * P + g * D`` (a convex combination, so rows stay distributions);
    logits: ``L + g * D``. ``g`` is a per-head gate in [0, 1]. In inference the merge overwrites the stage's fresh
    attention instead of allocating a second full-size matrix.
    """

    def __init__(self, matrix: torch.Tensor, gate: torch.Tensor, kind: str):
        self.matrix = matrix
        self.gate = gate.view(1, -1, 1, 1)
        self.kind = kind

    def merge_into(self, current: torch.Tensor) -> torch.Tensor:
        if current.shape != self.matrix.shape:
            raise RuntimeError(f'carried attention {tuple(self.matrix.shape)} does not match the stage attention '
                               f'{tuple(current.shape)}: query and key grids of consecutive stages must align')
        # the stage's own dtype (under autocast the carried matrix and the gate may differ from it)
        matrix, gate = self.matrix.to(current.dtype), self.gate.to(current.dtype)
        in_place = not (torch.is_grad_enabled() and (current.requires_grad or matrix.requires_grad
                                                     or gate.requires_grad))
        if self.kind == 'prob':
            return current.lerp_(matrix, gate) if in_place else torch.lerp(current, matrix, gate)
        return current.addcmul_(matrix, gate) if in_place else torch.addcmul(current, matrix, gate)
