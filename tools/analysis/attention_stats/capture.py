"""Forward hooks that capture the attention every layer applies, each checked against the layer's own output."""
from typing import Dict, List, Optional, Tuple

import torch

from vitattn_mm.models.layers.attention import merge_heads, split_heads


def check_reproduces(name: str, expected: torch.Tensor, got: torch.Tensor) -> None:
    """The attention recomputed from a hook must give the layer's own output (else the tool measures something the
    model does not apply)."""
    err = (expected - got).abs().max().item()
    scale = expected.abs().max().item() + 1e-6
    if err > 1e-3 * scale + 1e-5:
        raise RuntimeError(f'{name}: the hooked attention does not reproduce the layer output (max abs error '
                           f'{err:.3g}, output scale {scale:.3g}); the attention implementation changed and this '
                           f'tool must follow it')


def forward_with_hooks(backbone, image: torch.Tensor, hooks) -> None:
    """One forward pass without autograd, with ``(module, forward_hook)`` pairs attached for its duration."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with torch.no_grad():
            backbone(image)
    finally:
        for handle in handles:
            handle.remove()


def lavit_attention(backbone, image: torch.Tensor, verify: bool) -> Dict[Tuple[int, int], dict]:
    """One forward pass; per (stage, layer): kind, explicit probabilities and the key-grid pooled square."""
    records = {}
    hooks = []
    for s, stage in enumerate(backbone.stages):
        for l, block in enumerate(stage.blocks):
            kind = 'LA' if block.less_attention else 'VA'

            def hook(module, args, output, s=s, l=l, kind=kind):
                out, amap = output
                probs = amap.probabilities().detach()
                if verify:
                    x, hw = args[0], args[1]
                    keys, _ = module.reduce(x, hw)
                    v = split_heads(module.v(keys), module.num_heads)
                    check_reproduces(f'stage {s + 1} layer {l} ({kind})', out,
                                     module.proj(merge_heads(probs.to(v.dtype) @ v)))
                square = amap.pooled(backbone.sr_ratios[s]).probabilities().detach()
                records[(s, l)] = dict(kind=kind, probs=probs, square=square)

            hooks.append((block.attn, hook))
    forward_with_hooks(backbone, image, hooks)
    return records


def vit_attention(backbone, image: torch.Tensor, verify: bool) -> List[torch.Tensor]:
    """softmax(q k^T / sqrt(d)) of every block, recomputed from ``attn.qkv`` on the hooked input tokens."""
    probs: List[Optional[torch.Tensor]] = [None] * len(backbone.blocks)
    hooks = []
    for i, block in enumerate(backbone.blocks):

        def hook(module, args, output, i=i):
            x = args[0]
            b, n, c = x.shape
            heads = module.num_heads
            q, k, v = module.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            p = ((q * (c // heads)**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
            if verify:
                check_reproduces(f'block {i}', output, module.proj(merge_heads(p @ v)))
            probs[i] = p.detach()

        hooks.append((block.attn, hook))
    forward_with_hooks(backbone, image, hooks)
    return probs
