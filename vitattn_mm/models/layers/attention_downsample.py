"""LaViT's residual-based attention downsampling between stages."""
import math
from typing import Tuple

import torch
import torch.nn as nn

from .attention_map import AttentionMap, AttentionResidual

# Initial weight g of the carried attention in the next stage's first attention (our choice).
INIT_GATE = 0.1


class ResidualAttentionDownsample(nn.Module):
    """Carries the last attention of a stage into the first attention of the next (paper Sec. 3, Fig. 2).

    The paper downsamples the attention matrix together with the tokens and adds it as a residual, so that the
    relations computed in earlier stages are not lost at the stage boundary. Our realisation: all stages attend to
    the same ``H/32 x W/32`` key grid, so only the query axis changes size, by the 2x2 token downsampling:
      * queries: 2x2 average pooling of the rows (keeps probability rows stochastic) of the stage's attention
        matrix: the logits as the last layer transformed them, or, for probabilities, the stage's base attention
        without the factored LA transforms (:meth:`AttentionMap.carried` says why);
      * heads: a learned convex mixing from the stage's heads to the next stage's heads;
      * merge: ``(1 - g) P + g D`` for probabilities, ``L + g D`` for logits, with a learned per-head gate g
        (sigmoid, initialised to 0.1).

    Args:
        in_heads: heads of the stage the attention comes from. out_heads: heads of the next stage.
        factor: query grid downsampling factor (the next patch embedding's stride).
    """

    def __init__(self, in_heads: int, out_heads: int, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.out_heads = out_heads
        # one source head is simply shared by all target heads: no mixing weights to learn
        self.head_mix_logits = nn.Parameter(torch.zeros(out_heads, in_heads)) if in_heads > 1 else None
        self.gate_logits = nn.Parameter(torch.full((out_heads, ), math.log(INIT_GATE / (1 - INIT_GATE))))

    def forward(self, attn: AttentionMap, next_query_hw: Tuple[int, int], release: bool = False) -> AttentionResidual:
        """``release``: ``attn`` is not used after this call, and its full-size matrix may be freed early."""
        pooled = attn.carried(self.factor, release=release)
        if pooled.query_hw != tuple(next_query_hw):
            raise RuntimeError(f'pooled attention grid {pooled.query_hw} does not match the next stage grid '
                               f'{tuple(next_query_hw)}')
        if self.head_mix_logits is None:
            carried = pooled.matrix.expand(-1, self.out_heads, -1, -1)
        else:
            carried = torch.einsum('og,bgqk->boqk', self.head_mix_logits.softmax(dim=-1), pooled.matrix)
        return AttentionResidual(carried, self.gate_logits.sigmoid(), attn.kind)
