"""Micro-benchmarks: the attention of one stage-1 layer of LaViT-S and its stage carry, and Mix-FFN variants."""
import math
import statistics
import time
from collections import OrderedDict
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .measure import time_round_robin
from .zoo import Size, size_str


def attention_micro_benchmark(size: Size, warmup: int, repeats: int, log=None) -> dict:
    """One stage-1 layer of LaViT-S (1 head, 64 channels) at image size ``size``: the VA attention as the model
    computes it (QK^T, in-place softmax, PV), the LA transforms, and the carry into stage 2 after 1 VA + 2 LA
    layers (as in LaViT-S), with its pooling and, for comparison, the transforms that the carry no longer applies."""
    from vitattn_mm.models.layers.attention import softmax_last
    from vitattn_mm.models.layers.attention_downsample import ResidualAttentionDownsample
    from vitattn_mm.models.layers.attention_map import AttentionMap, pool_rows
    from vitattn_mm.models.layers.local_mix import ConvexLocalMix

    qhw = (math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    khw = (math.ceil(size[0] / 32), math.ceil(size[1] / 32))
    next_hw = (math.ceil(qhw[0] / 2), math.ceil(qhw[1] / 2))
    d = 64
    torch.manual_seed(0)
    q = torch.randn(1, 1, qhw[0] * qhw[1], d) * d**-0.5
    k = torch.randn(1, 1, khw[0] * khw[1], d)
    v = torch.randn(1, khw[0] * khw[1], d)  # tokens (B, Nk, C)
    psi, theta = ConvexLocalMix(1, 3), ConvexLocalMix(1, 3)
    psi2, theta2 = ConvexLocalMix(1, 3), ConvexLocalMix(1, 3)
    down = ResidualAttentionDownsample(1, 2, 2)
    with torch.no_grad():
        logits = q @ k.transpose(-2, -1)
        probs = logits.softmax(dim=-1)
        scratch = logits.clone()
        prob_map = AttentionMap(probs, qhw, khw, 'prob')
        logit_map = AttentionMap(logits, qhw, khw, 'logit')
        prob_stage_end = prob_map.transformed(psi, theta).transformed(psi2, theta2)
        logit_stage_end = logit_map.transformed(psi, theta).transformed(psi2, theta2)
        pooled = pool_rows(probs, qhw, 2)[0]

    fns = OrderedDict([
        ('qk', lambda: q @ k.transpose(-2, -1)),
        ('softmax', lambda: softmax_last(scratch)),  # in place, as the model does in inference
        ('av', lambda: probs @ v.unsqueeze(1)),
        ('prob_la_apply', lambda: prob_map.transformed(psi, theta).apply_tokens(v)),
        ('prob_la2_apply', lambda: prob_map.transformed(psi, theta).transformed(psi2, theta2).apply_tokens(v)),
        ('prob_va_apply', lambda: prob_map.apply_tokens(v)),
        ('logit_transform', lambda: logit_map.transformed(psi, theta)),
        ('downsample_prob', lambda: down(prob_stage_end, next_hw)),
        ('carry_pool', lambda: pool_rows(probs, qhw, 2)),
        ('carry_psi', lambda: psi.on_grid(next_hw).rows(pooled)),
        ('carry_theta', lambda: theta.on_grid(khw).columns(pooled)),
        ('downsample_logit', lambda: down(logit_stage_end, next_hw)),
    ])
    times = time_round_robin(fns, warmup, repeats, log=log)
    med = {name: statistics.median(t) for name, t in times.items()}
    va = med['qk'] + med['softmax'] + med['av']
    prob_transform = med['prob_la_apply'] - med['prob_va_apply']
    rows = [
        ('QK^T', med['qk'], 'VA'),
        ('softmax (full Nq x Nk matrix, in place)', med['softmax'], 'VA'),
        ('softmax(A) V', med['av'], 'VA'),
        ("LA transform, 'prob' (default): `transformed(psi, theta).apply_tokens(v)` minus the VA layer's "
         "`apply_tokens(v)`", prob_transform, 'LA'),
        ("  2nd LA layer after a VA layer, 'prob' (2 Theta + 2 Psi, factored form)",
         med['prob_la2_apply'] - med['prob_va_apply'], 'LA'),
        ("LA transform, 'logit' (paper): Psi over the rows + Theta over the columns of the logits",
         med['logit_transform'], 'LA'),
        ("stage carry to stage 2, 'prob' (after 2 LA layers): `ResidualAttentionDownsample` (the base attention "
         "pooled, heads mixed)", med['downsample_prob'], 'carry'),
        ('  of which: pooling the full matrix (one pass, all heads)', med['carry_pool'], 'part'),
        ('  for comparison, what the earlier carry added per LA layer of the stage: one Psi on the pooled grid',
         med['carry_psi'], 'part'),
        ('  for comparison, what the earlier carry added per LA layer of the stage: one Theta on the key axis of the '
         'pooled matrix', med['carry_theta'], 'part'),
        ("stage carry to stage 2, 'logit' (transforms explicit in the logits: pooling only)", med['downsample_logit'],
         'carry'),
    ]
    la_layer = dict(prob=med['prob_la_apply'], logit=med['logit_transform'] + med['softmax'] + med['av'])
    return dict(size=size_str(size), query_hw=qhw, key_hw=khw, heads=1, channels=d, repeats=repeats,
                times=times, medians=med, va_attention=va,
                rows=[dict(op=op, seconds=t, fraction_of_va=t / va, kind=kind) for op, t, kind in rows],
                la_transform_fraction=dict(prob=prob_transform / va, logit=med['logit_transform'] / va),
                carry_fraction=dict(prob=med['downsample_prob'] / va, logit=med['downsample_logit'] / va),
                la_layer_attention_fraction={k: t / va for k, t in la_layer.items()})


# ---------------------------------------------------------------------------------------------------------------
# Mix-FFN variants (stage 1 of LaViT-S / PVTv2-b2: 64 channels, hidden 512)
# ---------------------------------------------------------------------------------------------------------------
def _ffn_channels_first(ffn, x, hw):
    """mmdet PVTv2's layout: the depthwise conv on a channels-first (contiguous NCHW) map."""
    from vitattn_mm.models.utils.tokens import tokens_to_map
    h = ffn.fc1(x)
    h = ffn.dwconv(tokens_to_map(h, hw)).flatten(2).transpose(1, 2)
    return ffn.fc2(F.gelu(h))


def _ffn_out_of_place_gelu(ffn, x, hw):
    """Ours before the change: GELU into a new hidden-size tensor."""
    from vitattn_mm.models.utils.tokens import map_to_tokens, tokens_as_map
    h = map_to_tokens(ffn.dwconv(tokens_as_map(ffn.fc1(x), hw)))[0]
    return ffn.fc2(F.gelu(h))


OURS_FFN = 'ours: bands of rows (2M hidden values), channels-last depthwise conv, in-place GELU'


def mixffn_benchmark(size: Size, warmup: int, repeats: int, compile_ffn: bool = False, log=None) -> dict:
    """Times MixFFN variants on LaViT-S's stage-1 grid at image size ``size`` and compares their outputs with ours
    (max abs difference): ours (in inference the hidden layer in bands of grid rows, channels-last depthwise conv,
    GELU in place), the same in one pass (``band_values=None``), GELU out of place, channels-first depthwise conv
    (as mmdet's PVTv2), and optionally ``torch.compile`` (inductor, which fuses the bias and GELU into one loop) of
    our MixFFN."""
    from vitattn_mm.models.layers.mlp import MixFFN
    hw = (math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    torch.manual_seed(0)
    ffn = MixFFN(64, 512).eval()
    one_pass = MixFFN(64, 512, band_values=None).eval()
    one_pass.load_state_dict(ffn.state_dict())
    x = torch.randn(1, hw[0] * hw[1], 64)
    variants: 'OrderedDict[str, Callable[[], torch.Tensor]]' = OrderedDict([
        (OURS_FFN, lambda: ffn(x, hw)),
        ('one pass (band_values=None), channels-last depthwise conv, in-place GELU', lambda: one_pass(x, hw)),
        ('one pass, channels-last depthwise conv, GELU into a new tensor', lambda: _ffn_out_of_place_gelu(ffn, x, hw)),
        ('one pass, channels-first depthwise conv (as mmdet PVTv2), GELU into a new tensor',
         lambda: _ffn_channels_first(ffn, x, hw)),
    ])
    compile_s: Optional[float] = None
    if compile_ffn:
        compiled = torch.compile(ffn)
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(x, hw)
        compile_s = time.perf_counter() - t0
        variants['torch.compile (inductor) of our MixFFN'] = lambda: compiled(x, hw)
    with torch.no_grad():
        ref = ffn(x, hw)
        diffs = {name: (fn() - ref).abs().max().item() for name, fn in variants.items()}
    times = time_round_robin(variants, warmup, repeats, log=log)
    med = {name: statistics.median(t) for name, t in times.items()}
    base = med[OURS_FFN]
    return dict(size=size_str(size), grid=hw, compile_s=compile_s,
                rows=[dict(variant=n, seconds=med[n], relative=med[n] / base, max_abs_diff=diffs[n])
                      for n in variants])


def compile_benchmark(names, size: Size, warmup: int, repeats: int, log=None) -> dict:
    """Whole backbones, eager against ``torch.compile`` (inductor, CPU), at one size: compile time, latency,
    max abs difference of the outputs."""
    from .zoo import build_model, image
    x = image(size)
    fns, out = OrderedDict(), {}
    for name in names:
        model = build_model(name)
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        with torch.no_grad():
            got = compiled(x)
            ref = model(x)
        out[name] = dict(compile_s=time.perf_counter() - t0,
                         max_abs_diff=max((a - b).abs().max().item() for a, b in zip(got, ref)))
        fns[f'{name} eager'] = (lambda m=model: m(x))
        fns[f'{name} compiled'] = (lambda m=compiled: m(x))
    times = time_round_robin(fns, warmup, repeats, log=log)
    for name in names:
        out[name]['eager_s'] = statistics.median(times[f'{name} eager'])
        out[name]['compiled_s'] = statistics.median(times[f'{name} compiled'])
    return dict(size=size_str(size), models=out)


_ = nn  # (typing only)
