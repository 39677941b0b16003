from .attention import KeyGridReduction, SpatialReductionAttention, ViTAttention
from .attention_downsample import ResidualAttentionDownsample
from .attention_map import AttentionMap, AttentionResidual
from .context_broadcast import ContextBroadcast
from .less_attention import LessAttention
from .local_mix import ConvexLocalMix
from .mlp import MixFFN, Mlp
from .patch_embed import OverlapPatchEmbed, PatchEmbed
from .simple_pyramid import SimpleFeaturePyramid

__all__ = [
    'AttentionMap', 'AttentionResidual', 'ContextBroadcast', 'ConvexLocalMix', 'KeyGridReduction', 'LessAttention',
    'MixFFN', 'Mlp', 'OverlapPatchEmbed', 'PatchEmbed', 'ResidualAttentionDownsample', 'SimpleFeaturePyramid',
    'SpatialReductionAttention', 'ViTAttention'
]
