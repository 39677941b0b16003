"""LaViT's less-attention (LA) layer."""
from typing import Tuple

import torch
import torch.nn as nn

from .attention import KeyGridReduction
from .attention_map import AttentionMap
from .local_mix import ConvexLocalMix


class LessAttention(nn.Module):
    """Less-attention layer: reuses the previous layer's attention instead of computing ``Q K^T``.

    Paper (Sec. 3, LA layers): ``A_l = Psi(Theta(A_{l-1})^T)^T`` and ``Z = Softmax(A_l) V``, with learned
    linear transforms Theta and Psi over the two token axes; LA layers keep the value and output projections.
    This layer has *no* query or key projection.

    Our design where the paper is silent or does not fit dense prediction:
      * Theta (key axis) and Psi (query axis) are :class:`ConvexLocalMix` maps: local, convex, one kernel per head,
        defined on the key and query grids, so they work at any input size (the paper's dense ``N x N`` matrices
        exist for one fixed size only and cost O(N^3)).
      * With the default ``'prob'`` attention the transforms act on probabilities and keep every row a
        distribution, so no softmax is needed; ``A_l V`` is evaluated in factored form (see
        :class:`AttentionMap`). The ``'logit'`` attention kind transforms logits and applies the softmax, as the
        paper's formula does; the kind is chosen in the preceding vanilla layer.

    Args:
        dim: channels. num_heads: heads (as in the VA layer it follows). sr_ratio: key grid reduction for V.
        kernel_size: neighbourhood of Theta and Psi.
        qkv_bias: bias in the value projection.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, kernel_size: int = 3, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.reduce = KeyGridReduction(dim, sr_ratio)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.theta = ConvexLocalMix(num_heads, kernel_size)
        self.psi = ConvexLocalMix(num_heads, kernel_size)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                previous: AttentionMap) -> Tuple[torch.Tensor, AttentionMap]:
        if previous is None:
            raise RuntimeError('a less-attention layer needs the attention of the layer before it')
        if previous.num_heads != self.num_heads or previous.query_hw != tuple(hw):
            raise RuntimeError(f'previous attention has {previous.num_heads} heads on a {previous.query_hw} query '
                               f'grid; this layer expects {self.num_heads} heads on {tuple(hw)}')
        keys, key_hw = self.reduce(x, hw)
        if tuple(key_hw) != previous.key_hw:
            raise RuntimeError(f'key grid {tuple(key_hw)} differs from the previous attention\'s {previous.key_hw}')
        attn = previous.transformed(self.psi, self.theta)
        return self.proj(attn.apply_tokens(self.v(keys))), attn
