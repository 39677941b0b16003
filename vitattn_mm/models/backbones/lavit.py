"""LaViT: "You Only Need Less Attention at Each Stage in Vision Transformers" (Zhang, Liu, Lin, He; CVPR 2024)."""
import copy
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from timm.layers import DropPath

from ...registry import MODELS, register_model
from ..layers.attention import SpatialReductionAttention
from ..layers.attention_downsample import ResidualAttentionDownsample
from ..layers.attention_map import ATTENTION_KINDS, AttentionMap, AttentionResidual, explicit_chain_is_cheaper
from ..layers.context_broadcast import ContextBroadcast
from ..layers.less_attention import LessAttention
from ..layers.mlp import BAND_VALUES as FFN_BAND_VALUES
from ..layers.mlp import MixFFN
from ..layers.patch_embed import OverlapPatchEmbed
from ..utils.checkpoint import StateDict
from ..utils.pvtv2_weights import convert_pvtv2_for_lavit, describe
from ..utils.tokens import tokens_to_map
from .base import PyramidBackbone, drop_path_rates, maybe_checkpoint

ARCH_KEYS = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'num_vanilla')
# PVTv2's epsilon of the block and stage norms (its patch-embedding and key-reduction norms keep torch's 1e-5), so
# that PVTv2 ImageNet weights give PVTv2's features (see ..utils.pvtv2_weights)
NORM_EPS = 1e-6
LA_CHAINS = ('auto', 'factored', 'explicit')


class LaViTBlock(nn.Module):
    """Pre-norm transformer block whose attention is either vanilla (VA) or less-attention (LA).

    ``x = x + DropPath(Attn(LN(x)))``; ``x = x + DropPath(MixFFN(LN(x)))``; then optional context broadcasting.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, less_attention: bool,
                 attention_kind: str, la_kernel_size: int, qkv_bias: bool, drop_path: float,
                 context_broadcast: bool, ffn_band_values: Optional[int] = FFN_BAND_VALUES):
        super().__init__()
        self.less_attention = less_attention
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        if less_attention:
            self.attn = LessAttention(dim, num_heads, sr_ratio, la_kernel_size, qkv_bias)
        else:
            self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias, attention_kind)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), ffn_band_values)
        self.cb = ContextBroadcast() if context_broadcast else nn.Identity()

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                attn_in: Union[AttentionMap, AttentionResidual, None]) -> Tuple[torch.Tensor, AttentionMap]:
        if not self.less_attention and not isinstance(attn_in, AttentionResidual):
            attn_in = None  # a VA layer computes its own attention; it only merges a carried residual
        y, attn = self.attn(self.norm1(x), hw, attn_in)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x), hw))
        return self.cb(x), attn


class LaViTStage(nn.Module):
    """Patch embedding, ``num_vanilla`` VA blocks, LA blocks, final LayerNorm."""

    def __init__(self, in_channels: int, dim: int, patch_kernel: int, stride: int, blocks: List[LaViTBlock]):
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, patch_kernel, stride)
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)


@register_model
class LaViT(PyramidBackbone):
    """Less-attention vision transformer: a four-stage pyramid (strides 4, 8, 16, 32).

    In each stage the first ``num_vanilla`` blocks compute multi-head attention over a reduced key grid (VA) and
    the remaining blocks are less-attention (LA) blocks that transform the previous block's attention instead of
    computing queries and keys (:class:`LessAttention`). With ``attention_residual`` the last attention of a stage
    is downsampled and merged into the first attention of the next (:class:`ResidualAttentionDownsample`). Key
    grids are reduced by 8, 4, 2, 1 so that all stages share the ``ceil(H/32) x ceil(W/32)`` key grid.

    Args:
        arch: ``'t'``, ``'s'``, ``'b'`` or a dict with ``embed_dims``, ``depths``, ``num_heads``, ``mlp_ratios``
            and ``num_vanilla`` (four entries each; ``1 <= num_vanilla[i] <= depths[i]``).
        in_channels: image channels.
        out_indices: stages whose outputs are returned (0..3).
        attention_residual: carry attention across stages (off for the ablation).
        attention_kind: ``'prob'`` (LA transforms probabilities, no softmax; default) or ``'logit'`` (the paper's
            form: LA transforms logits and applies softmax). See :class:`AttentionMap`.
        la_kernel_size: neighbourhood of the LA transforms Theta and Psi.
        qkv_bias: bias in q/k/v projections.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        context_broadcast: add context broadcasting (CB) after every block's MLP (LaViT + CB).
        dp_loss: config of the diagonality-preserving loss (e.g. ``dict(type='DiagonalityPreservingLoss',
            loss_weight=0.1)``); ``None`` or weight 0: off. The loss is computed in training only and handed to
            the detector/segmentor by :class:`~vitattn_mm.engine.AuxiliaryLossHook` as ``loss_dp``.
        frozen_stages: -1 freezes nothing; 1 <= k <= 4 freezes stages 1..k (with their patch embeddings and the
            attention downsampling into them); 0 freezes only the first patch embedding.
        norm_eval: keep BatchNorm layers in eval mode (LaViT itself uses LayerNorm only; for config parity).
        with_cp: activation checkpointing per block.
        la_chain: how the less-attention layers of a stage evaluate their attention in inference: ``'factored'``
            (the transforms act on values and outputs, see :class:`AttentionMap`), ``'explicit'`` (on the attention
            matrix, layer by layer) or ``'auto'``: per stage, whichever costs fewer multiply-adds at the input's size
            (:func:`explicit_chain_is_cheaper`). The same attention up to rounding. Training is always factored.
        ffn_band_values: in inference on the CPU each Mix-FFN computes its hidden layer in bands of grid rows of
            about this many values (same results; faster and less memory at detection sizes, see :class:`MixFFN`);
            ``None``: one pass.
        init_cfg: e.g. ``dict(type='Pretrained', checkpoint='...', prefix='backbone.')``.
    """

    arch_zoo = {
        # near PVTv2-b1 (14.0M)
        't': dict(embed_dims=[64, 128, 320, 512], depths=[2, 2, 2, 2], num_heads=[1, 2, 5, 8],
                  mlp_ratios=[8, 8, 4, 4], num_vanilla=[1, 1, 1, 1]),
        # at most PVTv2-b2 (25.4M)
        's': dict(embed_dims=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_heads=[1, 2, 5, 8],
                  mlp_ratios=[8, 8, 4, 4], num_vanilla=[1, 1, 2, 1]),
        # near PVTv2-b3 (45.2M)
        'b': dict(embed_dims=[64, 128, 320, 512], depths=[3, 4, 18, 3], num_heads=[1, 2, 5, 8],
                  mlp_ratios=[8, 8, 4, 4], num_vanilla=[1, 1, 4, 1]),
    }
    sr_ratios = (8, 4, 2, 1)
    patch_kernels = (7, 3, 3, 3)
    strides = (4, 2, 2, 2)

    def __init__(self,
                 arch: Union[str, dict] = 's',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 attention_residual: bool = True,
                 attention_kind: str = 'prob',
                 la_kernel_size: int = 3,
                 qkv_bias: bool = True,
                 drop_path_rate: float = 0.1,
                 context_broadcast: bool = False,
                 dp_loss: Optional[dict] = None,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 la_chain: str = 'auto',
                 ffn_band_values: Optional[int] = FFN_BAND_VALUES,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = self._resolve_arch(arch)
        if attention_kind not in ATTENTION_KINDS:
            raise ValueError(f'attention_kind must be one of {ATTENTION_KINDS}, got {attention_kind!r}')
        self.attention_kind = attention_kind
        if la_chain not in LA_CHAINS:
            raise ValueError(f'la_chain must be one of {LA_CHAINS}, got {la_chain!r}')
        self.la_chain = la_chain
        self.attention_residual = attention_residual
        self.with_cp = with_cp
        self._set_up_common(in_channels, out_indices, frozen_stages, norm_eval)

        a = self.arch
        rates = iter(drop_path_rates(drop_path_rate, sum(a['depths'])))
        self.stages = nn.ModuleList()
        channels = in_channels
        for i in range(4):
            blocks = [
                LaViTBlock(a['embed_dims'][i], a['num_heads'][i], a['mlp_ratios'][i], self.sr_ratios[i],
                           less_attention=j >= a['num_vanilla'][i], attention_kind=attention_kind,
                           la_kernel_size=la_kernel_size, qkv_bias=qkv_bias, drop_path=next(rates),
                           context_broadcast=context_broadcast, ffn_band_values=ffn_band_values)
                for j in range(a['depths'][i])
            ]
            self.stages.append(LaViTStage(channels, a['embed_dims'][i], self.patch_kernels[i], self.strides[i],
                                          blocks))
            channels = a['embed_dims'][i]
        self.attention_downsamples = nn.ModuleList(
            ResidualAttentionDownsample(a['num_heads'][i], a['num_heads'][i + 1], self.strides[i + 1])
            for i in range(3)) if attention_residual else None
        self.out_channels = [a['embed_dims'][i] for i in self.out_indices]

        self.dp_loss = None
        if dp_loss is not None and dp_loss.get('loss_weight', 1.0) > 0:
            if not any(b.less_attention for s in self.stages for b in s.blocks):
                raise ValueError('dp_loss is set but the architecture has no less-attention layer')
            self.dp_loss = MODELS.build(dp_loss)
        self._pending_losses = {}
        self._freeze()

    @classmethod
    def _resolve_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch not in cls.arch_zoo:
                raise ValueError(f'unknown LaViT arch {arch!r}; choose one of {sorted(cls.arch_zoo)} or give a dict '
                                 f'with keys {ARCH_KEYS}')
            return copy.deepcopy(cls.arch_zoo[arch])
        if not isinstance(arch, dict) or set(arch) != set(ARCH_KEYS):
            raise ValueError(f'a custom LaViT arch must be a dict with exactly the keys {ARCH_KEYS}, got {arch!r}')
        if any(len(arch[k]) != 4 for k in ARCH_KEYS):
            raise ValueError(f'every entry of a LaViT arch needs 4 values (one per stage), got {arch!r}')
        for i in range(4):
            if arch['embed_dims'][i] % arch['num_heads'][i]:
                raise ValueError(f'stage {i}: embed_dims {arch["embed_dims"][i]} not divisible by num_heads '
                                 f'{arch["num_heads"][i]}')
            if not 1 <= arch['num_vanilla'][i] <= arch['depths'][i]:
                raise ValueError(f'stage {i}: num_vanilla must be between 1 and depths ({arch["depths"][i]}), '
                                 f'got {arch["num_vanilla"][i]}')
        return copy.deepcopy(dict(arch))

    # --- pretrained weights ----------------------------------------------------------------------------------
    def convert_pretrained(self, state: StateDict) -> StateDict:
        """PVTv2 ImageNet weights (official release, timm or mmdet layout) -> LaViT's names; LaViT's own weights
        pass unchanged. See :mod:`vitattn_mm.models.utils.pvtv2_weights` for the mapping: VA layers take q, k, v
        (k and v split from ``kv``), the spatial reduction and proj; LA layers take v, the reduction and proj, and
        their unused q/k are reported here in one log line; LaViT-T/S/B take PVTv2-b1/b2/b3, another size is an
        error naming both."""
        arch_name = next((n for n, a in self.arch_zoo.items() if a == {k: self.arch[k] for k in a}), None)
        target = f"LaViT arch='{arch_name}'" if arch_name else 'this LaViT'
        result = convert_pvtv2_for_lavit(
            state, self.arch, [[b.less_attention for b in s.blocks] for s in self.stages], target, self.sr_ratios)
        if result is None:
            return state
        la_layers = sum(b.less_attention for s in self.stages for b in s.blocks)
        print_log(f"{target}: converted {describe(result['source'])} weights ({result['layout']} layout); "
                  f"{len(result['unused'])} PVTv2 tensors unused: the query and key projections of the "
                  f'{la_layers} less-attention layers, which compute no queries or keys'
                  + (f"; dropped: {result['dropped']}" if result['dropped'] else ''), logger='current')
        return result['state']

    # --- freezing --------------------------------------------------------------------------------------------
    def frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules = [self.stages[0].patch_embed]
        for i in range(self.frozen_stages):
            modules.append(self.stages[i])
            if i > 0 and self.attention_downsamples is not None:
                modules.append(self.attention_downsamples[i - 1])
        return modules

    # --- forward ---------------------------------------------------------------------------------------------
    @property
    def collects_dp_inputs(self) -> bool:
        return self.dp_loss is not None and self.training

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        if self.collects_dp_inputs and self._pending_losses:
            raise RuntimeError(
                'LaViT computed a diagonality-preserving loss in the previous training forward that nobody '
                'collected. Add custom_hooks=[dict(type="AuxiliaryLossHook")] to the config (it adds the loss to '
                'the detector/segmentor losses as loss_dp), or call pop_auxiliary_losses() after each forward.')
        squares = []
        outs = []
        carried: Optional[AttentionMap] = None
        for i, stage in enumerate(self.stages):
            tokens, hw = stage.patch_embed(x)
            attn = None
            if carried is not None:
                # the previous stage's full-size attention is not needed in this stage: the downsampling releases it
                # as soon as it is pooled (in inference it is then freed, unless a forward hook holds the stage's map)
                handover, carried = carried.handover(), None
                attn = self.attention_downsamples[i - 1](handover, hw, release=True)
            for j, block in enumerate(stage.blocks):
                tokens, attn = maybe_checkpoint(block, tokens, hw, attn,
                                                enabled=self.with_cp and self.training and tokens.requires_grad)
                if j + 1 == self.arch['num_vanilla'][i] and self._explicit_chain(i, attn):
                    attn = attn.with_explicit_chain()
                if block.less_attention and self.collects_dp_inputs and attn.kind == 'logit':
                    squares.append(attn.key_grid_attention(self.sr_ratios[i]))
            if self.collects_dp_inputs and attn.kind == 'prob' and attn.psis:
                # every LA layer of the stage at once: queries pooled onto the key grid, Psi applied there
                carry_factor = self.attention_downsamples[i].factor if self.attention_residual and i < 3 else None
                squares.extend(attn.key_grid_attentions(self.sr_ratios[i], self.dp_loss.max_cells, carry_factor))
            carried = attn if self.attention_residual else None
            x = tokens_to_map(stage.norm(tokens), hw)
            if i in self.out_indices:
                outs.append(x)
        if squares:
            self._pending_losses = {'loss_dp': self.dp_loss(squares)}
        return tuple(outs)

    def _explicit_chain(self, stage: int, attn: AttentionMap) -> bool:
        """Whether the LA layers after the stage's last VA layer use explicit matrices (``la_chain``)."""
        layers = self.arch['depths'][stage] - self.arch['num_vanilla'][stage]
        if (self.la_chain == 'factored' or not layers or attn.kind != 'prob' or torch.is_grad_enabled()
                or self.collects_dp_inputs):
            return False
        return self.la_chain == 'explicit' or explicit_chain_is_cheaper(
            layers, attn.query_hw, attn.key_hw, attn.num_heads, self.arch['embed_dims'][stage])

    def pop_auxiliary_losses(self) -> dict:
        """The auxiliary losses of the last training forward (``{'loss_dp': ...}`` or ``{}``), handed over once."""
        losses, self._pending_losses = self._pending_losses, {}
        return losses
