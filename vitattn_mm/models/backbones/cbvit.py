"""CB-ViT: a plain ViT with context broadcasting ("Scratching Visual Transformer's Back with Uniform Attention",
Hyeon-Woo et al., ICCV 2023), as a four-level backbone for dense prediction."""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from timm.layers import DropPath

from ...registry import register_model
from ..layers.attention import ViTAttention
from ..layers.context_broadcast import ContextBroadcast
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.simple_pyramid import SimpleFeaturePyramid
from ..utils.checkpoint import StateDict
from ..utils.tokens import tokens_to_map
from .base import PyramidBackbone, drop_path_rates, maybe_checkpoint, per_layer_flags

# timm's ViT LayerNorm epsilon; needed for exact equality with timm/DeiT weights.
VIT_LN_EPS = 1e-6


def resize_pos_embed(pos_embed: torch.Tensor, grid: Tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """Resizes a ViT position embedding (1, prefix + g*g, C) to ``grid`` (prefix tokens kept).

    Bicubic interpolation with antialiasing, in float32: the resampling timm applies to its checkpoints and, with
    ``dynamic_img_size=True``, to every input size (``timm.layers.resample_abs_pos_embed``), so CB-ViT gives timm's
    features at any input size, and a checkpoint resized here equals timm's resized one. ``antialias`` matters for
    upsampling too: torch's antialiased bicubic uses the cubic coefficient -0.5 (as PIL), the plain one -0.75.
    """
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    old = int(math.isqrt(patches.shape[1]))
    if old * old != patches.shape[1]:
        raise ValueError(f'position embedding with {patches.shape[1]} patch tokens is not a square grid')
    if (old, old) == tuple(grid):
        return pos_embed
    c = patches.shape[-1]
    patches = patches.reshape(1, old, old, c).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=tuple(grid), mode='bicubic', align_corners=False,
                            antialias=True).to(pos_embed.dtype)
    return torch.cat([prefix, patches.flatten(2).transpose(1, 2)], dim=1)


class CBViTBlock(nn.Module):
    """timm's ViT block (same parameter names) followed by optional context broadcasting."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float,
                 context_broadcast: bool, cb_learnable_scale: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=VIT_LN_EPS)
        self.attn = ViTAttention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=VIT_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.cb = ContextBroadcast(dim, cb_learnable_scale) if context_broadcast else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return self.cb(x)


@register_model
class CBViT(PyramidBackbone):
    """Plain ViT (patch 16, class token) with context broadcasting after every MLP, and a simple feature pyramid.

    Parameter names match timm's ``vit_*_patch16_224`` / DeiT (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
    ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``), so their state dicts load as they
    are (the classifier head is dropped). CB has no parameters unless ``cb_learnable_scale``. The position embedding
    is resized to the input's patch grid as timm resizes it (:func:`resize_pos_embed`), so with CB off the tokens
    equal timm's ``dynamic_img_size`` ViT at any size that is a multiple of 16; other inputs are zero-padded at the
    bottom and right to multiples of 16.

    The stride-16 output of the last block (after the final ``norm``) feeds :class:`SimpleFeaturePyramid`, which
    returns maps at strides 4, 8, 16, 32 with ``dim/4, dim/2, dim, dim`` channels, each cropped to the
    ``ceil(H/s) x ceil(W/s)`` cells that cover the unpadded ``H x W`` image (not the padded one), so that heads
    which resize their output to the image do not stretch the padding over it.

    Args:
        arch: ``'deit-t'``, ``'deit-s'``, ``'deit-b'`` or a dict with ``embed_dims``, ``depth``, ``num_heads``,
            ``mlp_ratio``.
        img_size: pretraining image size (sets the stored position embedding grid).
        in_channels, out_indices, drop_path_rate, qkv_bias, norm_eval, with_cp, init_cfg: as usual.
        context_broadcast: bool for all blocks, or one bool per block.
        cb_learnable_scale: learned per-channel scale of the broadcast context.
        frozen_stages: -1 nothing frozen; ``0 <= k <= depth`` freezes the embeddings (patch, position, class token)
            and the first k blocks, and with ``k == depth`` also the final ``norm``; larger values are an error.
            The simple feature pyramid is never frozen (a ViT checkpoint does not have it). Frozen parts get
            ``requires_grad=False`` at construction and stay in eval mode (no drop path) in training.
    """

    arch_zoo = {
        'deit-t': dict(embed_dims=192, depth=12, num_heads=3, mlp_ratio=4.0),
        'deit-s': dict(embed_dims=384, depth=12, num_heads=6, mlp_ratio=4.0),
        'deit-b': dict(embed_dims=768, depth=12, num_heads=12, mlp_ratio=4.0),
    }
    patch_size = 16

    def __init__(self,
                 arch: Union[str, dict] = 'deit-s',
                 img_size: int = 224,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 context_broadcast: Union[bool, Sequence[bool]] = True,
                 cb_learnable_scale: bool = False,
                 qkv_bias: bool = True,
                 drop_path_rate: float = 0.1,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in self.arch_zoo:
                raise ValueError(f'unknown CBViT arch {arch!r}; choose one of {sorted(self.arch_zoo)} or give a dict')
            arch = self.arch_zoo[arch]
        needed = {'embed_dims', 'depth', 'num_heads', 'mlp_ratio'}
        if not isinstance(arch, dict) or set(arch) != needed:
            raise ValueError(f'a custom CBViT arch must be a dict with exactly the keys {sorted(needed)}, '
                             f'got {arch!r}')
        self.arch = dict(arch)
        dim, depth = arch['embed_dims'], arch['depth']
        self.depth = depth
        self._set_up_common(in_channels, out_indices, frozen_stages, norm_eval)
        self.with_cp = with_cp
        self.cb_flags = per_layer_flags(context_broadcast, depth, 'context_broadcast')

        self.patch_embed = PatchEmbed(in_channels, dim, self.patch_size)
        grid = img_size // self.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            CBViTBlock(dim, arch['num_heads'], arch['mlp_ratio'], qkv_bias, rates[i], self.cb_flags[i],
                       cb_learnable_scale) for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=VIT_LN_EPS)
        self.pyramid = SimpleFeaturePyramid(dim)
        self.out_channels = [self.pyramid.out_channels[i] for i in self.out_indices]
        self._freeze()

    def _init_from_scratch(self) -> None:
        super()._init_from_scratch()
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def convert_pretrained(self, state: StateDict) -> StateDict:
        """Drops timm/DeiT classifier weights and resizes the position embedding to this model's grid."""
        if any(k.startswith('fc_norm.') for k in state) and 'norm.weight' not in state:
            raise ValueError('this is a global-pool ViT checkpoint (fc_norm instead of norm, e.g. MAE fine-tuned); '
                             'CBViT expects class-token ViT/DeiT weights with a final `norm`')
        state = {k: v for k, v in state.items() if not k.startswith(('head.', 'head_dist.', 'fc_norm.'))}
        if 'dist_token' in state:
            raise ValueError('distilled DeiT checkpoints (with dist_token) are not supported; use the non-distilled '
                             'DeiT weights')
        if 'pos_embed' in state and state['pos_embed'].shape != self.pos_embed.shape:
            g = int(math.isqrt(self.pos_embed.shape[1] - 1))
            state['pos_embed'] = resize_pos_embed(state['pos_embed'], (g, g))
        return state

    def max_frozen_stages(self) -> int:
        return self.depth

    def frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed, *self.blocks[:self.frozen_stages]]
        if self.frozen_stages == self.depth:
            modules.append(self.norm)
        return modules

    def frozen_parameters(self):
        return [self.cls_token, self.pos_embed] if self.frozen_stages >= 0 else []

    def forward_tokens(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Normalised patch tokens (B, N, C) after the last block, and their grid (timm's ``forward_features``
        without the class token)."""
        self.check_input(x)
        tokens, hw = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + resize_pos_embed(self.pos_embed, hw)
        for block in self.blocks:
            tokens = maybe_checkpoint(block, tokens, enabled=self.with_cp and self.training and tokens.requires_grad)
        return self.norm(tokens)[:, 1:], hw

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        tokens, hw = self.forward_tokens(x)
        return tuple(self.pyramid(tokens_to_map(tokens, hw), image_size=(x.shape[2], x.shape[3]),
                                  levels=self.out_indices))
