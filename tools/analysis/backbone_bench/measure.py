"""Measurements: FLOPs and aten calls, round-robin latency, peak memory in a fresh process, profiles."""
import gc
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .zoo import Size, build_model, image, size_str

TOOL = Path(__file__).resolve().parents[1] / 'benchmark_backbones.py'


# ---------------------------------------------------------------------------------------------------------------
# FLOPs and aten calls
# ---------------------------------------------------------------------------------------------------------------
def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_flop_formulas() -> dict:
    """Formulas FlopCounterMode lacks. In torch 2.14 its registry knows the CUDA SDPA kernels but not the CPU one
    (``aten._scaled_dot_product_flash_attention_for_cpu``), so ``F.scaled_dot_product_attention`` counts 0 on the
    CPU without this entry."""
    mapping = {}
    op = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    return mapping


MATMUL_LIKE = re.compile(r'mm|conv|attention|matmul|linear|einsum|dot')


class _OpAudit(TorchDispatchMode):
    """Records every aten op that reaches the dispatcher, to find matmul-like ops the counter has no formula for."""

    def __init__(self):
        super().__init__()
        self.ops = set()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket)
        self.calls += 1
        return func(*args, **(kwargs or {}))


def count_flops(fn: Callable[[], object]) -> dict:
    """Runs ``fn`` once to warm up, then once more under FlopCounterMode: the steady state of inference, as the
    timed rounds see it (LaViT prepares its Theta/Psi transforms for a grid once and reuses them while its weights
    are unchanged). Returns MACs (FLOPs / 2) in total and per aten op, the aten calls, and the matmul-like ops that
    were executed but not counted."""
    audit = _OpAudit()
    with torch.no_grad():
        fn()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_custom_flop_formulas()) as counter:
        with audit:
            fn()
    by_op = {str(k): v / 2 for k, v in counter.get_flop_counts().get('Global', {}).items()}
    missed = sorted(str(op) for op in audit.ops
                    if op not in counter.flop_registry and MATMUL_LIKE.search(str(op)))
    return dict(macs=counter.get_total_flops() / 2, macs_by_op=by_op, uncounted_matmul_like_ops=missed,
                aten_calls=audit.calls)


def verify_flop_counter(size: Size = (256, 256)) -> List[dict]:
    """Hand counts of attention layers against the counter, on small inputs.

    PVTv2-b2 (mmdet, ``nn.MultiheadAttention``), LaViT-S (``@`` products) and CB-ViT (SDPA): one stage-1 attention
    module each. Returns one row per case with the counted and the hand-counted MACs.
    """
    rows = []
    h, w = size

    # PVTv2-b2 stage 1: q/out projections on N tokens, 8x8 stride-8 reduction conv, k/v projections on Nk tokens,
    # QK^T and AV (N x Nk x C each).
    pvt = build_model('pvtv2-b2')
    c = 64
    qh, qw = math.floor((h + 6 - 7) / 4) + 1, math.floor((w + 6 - 7) / 4) + 1
    kh, kw = qh // 8, qw // 8
    n, nk = qh * qw, kh * kw
    attn = pvt.layers[0][1][0].attn
    x = torch.randn(1, n, c)
    res = count_flops(lambda: attn(x, (qh, qw)))
    products = n * nk * c * 2
    hand = n * c * c * 2 + nk * c * c * 2 + nk * c * c * 64 + products
    rows.append(dict(case=f'PVTv2-b2 stage-1 attention (nn.MultiheadAttention), {qh}x{qw} queries, {kh}x{kw} keys',
                     counted=res['macs'], hand=hand, hand_products=products,
                     counted_products=res['macs_by_op'].get('aten.bmm', 0) + res['macs_by_op'].get('aten.baddbmm', 0),
                     by_op=res['macs_by_op'], uncounted=res['uncounted_matmul_like_ops']))

    # LaViT-S stage 1, vanilla layer: q, k, v, out projections, 8x8 reduction conv, QK^T and AV.
    lavit = build_model('lavit-s')
    qh, qw = math.ceil(h / 4), math.ceil(w / 4)
    kh, kw = math.ceil(h / 32), math.ceil(w / 32)
    n, nk = qh * qw, kh * kw
    va = lavit.stages[0].blocks[0].attn
    x = torch.randn(1, n, c)
    res = count_flops(lambda: va(x, (qh, qw)))
    products = n * nk * c * 2
    hand = n * c * c * 2 + nk * c * c * 2 + nk * c * c * 64 + products
    rows.append(dict(case=f'LaViT-S stage-1 VA attention (`@`), {qh}x{qw} queries, {kh}x{kw} keys',
                     counted=res['macs'], hand=hand, hand_products=products, counted_products=None,
                     by_op=res['macs_by_op'], uncounted=res['uncounted_matmul_like_ops']))

    # CB-ViT-S block attention: qkv and out projections on N tokens, SDPA (QK^T and AV, N x N x C each).
    cb = build_model('cbvit-s')
    c = 384
    n = math.ceil(h / 16) * math.ceil(w / 16) + 1
    vit_attn = cb.blocks[0].attn
    x = torch.randn(1, n, c)
    res = count_flops(lambda: vit_attn(x))
    products = n * n * c * 2
    hand = n * c * 3 * c + n * c * c + products
    sdpa_keys = [k for k in res['macs_by_op'] if 'scaled_dot_product' in k]
    rows.append(dict(case=f'CB-ViT-S attention (F.scaled_dot_product_attention), {n} tokens',
                     counted=res['macs'], hand=hand, hand_products=products,
                     counted_products=sum(res['macs_by_op'][k] for k in sdpa_keys),
                     by_op=res['macs_by_op'], uncounted=res['uncounted_matmul_like_ops']))
    return rows




# ---------------------------------------------------------------------------------------------------------------
# Latency
# ---------------------------------------------------------------------------------------------------------------
def time_round_robin(fns: 'OrderedDict[str, Callable[[], object]]', warmup: int, repeats: int,
                     log: Optional[Callable[[str], None]] = None, grad: bool = False) -> Dict[str, List[float]]:
    """Runs every callable once per round, ``warmup`` untimed rounds then ``repeats`` timed ones. The starting
    callable rotates from round to round, so no callable always follows the same neighbour. Without ``grad``
    under ``torch.no_grad()``."""
    names = list(fns)
    times = {name: [] for name in names}
    with torch.set_grad_enabled(grad):
        for _ in range(warmup):
            for name in names:
                fns[name]()
        for r in range(repeats):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                gc.collect()
                t0 = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - t0)
            if log:
                log(f'  round {r + 1}/{repeats}: ' + ', '.join(f'{n} {times[n][-1]:.3f}s' for n in names))
    return times


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    """Forward + backward of a backbone in train mode: loss = sum of the outputs' means + its auxiliary losses
    (LaViT's ``loss_dp``); gradients are dropped afterwards (``set_to_none``)."""
    outs = model(x)
    loss = sum(o.mean() for o in outs)
    for aux in getattr(model, 'pop_auxiliary_losses', dict)().values():
        loss = loss + aux
    loss.backward()
    model.zero_grad(set_to_none=True)


def paired_aux_loss_steps(model: nn.Module, x: torch.Tensor, pairs: int, attr: str = 'dp_loss') -> Dict[str, List[float]]:
    """Training-step times of one model with and without an auxiliary loss (``model.<attr>`` set to ``None`` for
    the steps without it), in ``pairs`` back-to-back pairs whose order alternates, after one untimed pair.

    The cost of the loss is the difference of the two steps of a pair: both run on the same weights, one after the
    other, so a change of the host's speed between rounds (this machine is shared) cancels out, which it does not
    between two models timed in different slots of a round-robin."""
    loss = getattr(model, attr)
    if loss is None:
        raise ValueError(f'the model has no {attr} to switch off')
    times = {'with': [], 'without': []}
    try:
        with torch.enable_grad():
            for p in range(pairs + 1):
                for on in ((True, False) if p % 2 == 0 else (False, True)):
                    setattr(model, attr, loss if on else None)
                    gc.collect()
                    t0 = time.perf_counter()
                    train_step(model, x)
                    if p:
                        times['with' if on else 'without'].append(time.perf_counter() - t0)
    finally:
        setattr(model, attr, loss)
    return times


# ---------------------------------------------------------------------------------------------------------------
# Memory (fresh subprocess per model and size)
# ---------------------------------------------------------------------------------------------------------------
def _proc_status_kib(key: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            m = re.search(rf'^{key}:\s+(\d+) kB', f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _peak_rss_kib() -> int:
    hwm = _proc_status_kib('VmHWM')
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss




def memory_worker(name: str, size: Size, train_batch: int = 0) -> dict:
    """In a fresh process: build, then peak RSS during the first and the second forward (``train_batch`` > 0: a
    training step at that batch size), relative to the RSS right before each (model, input and runtime already
    resident)."""
    train = train_batch > 0
    model = build_model(name, train=train)
    x = image(size, batch=train_batch if train else 1)
    result = dict(model=name, size=size_str(size), batch=x.shape[0], train=train)
    for label in ('first', 'second'):
        gc.collect()
        reset = _reset_peak_rss()
        before = _proc_status_kib('VmRSS')
        if before is None or not reset:
            # no /proc: ru_maxrss is a high-water mark since process start; the build may already have set it
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if train:
            train_step(model, x)
        else:
            with torch.no_grad():
                del_out = model(x)
            del del_out
        peak = _peak_rss_kib()
        result[f'{label}_rss_before_mib'] = before / 1024
        result[f'{label}_peak_rss_mib'] = peak / 1024
        result[f'{label}_forward_increase_mib'] = (peak - before) / 1024
        result['peak_reset'] = reset
    return result


def measure_memory(name: str, size: Size, threads: int, train_batch: int = 0) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(TOOL), '--memory-worker', name, '--sizes', size_str(size), '--threads', str(threads),
           '--memory-train-batch', str(train_batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'memory worker for {name} at {size_str(size)} failed ({proc.returncode}):\n'
                           f'{proc.stderr[-3000:]}')
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------------------------
# Profiling: operators by self CPU time, and time per module kind
# ---------------------------------------------------------------------------------------------------------------
MODULE_KINDS = {
    # LaViT (ours) and PVTv2 (mmdet) share the class name SpatialReductionAttention
    'SpatialReductionAttention': 'vanilla attention (q/k/v/out projections, QK^T, softmax, AV)',
    'LessAttention': 'less attention (v/out projections, LA transforms, PV)',
    'ResidualAttentionDownsample': 'attention downsampling between stages',
    'MixFFN': 'MixFFN (fc1, 3x3 dwconv, GELU, fc2)',
    'OverlapPatchEmbed': 'patch embedding',
    'PatchEmbed': 'patch embedding',
    'ShiftWindowMSA': 'window attention',
    'FFN': 'FFN',
    'PatchMerging': 'patch merging',
    'ViTAttention': 'attention (SDPA)',
    'Mlp': 'MLP',
    'SimpleFeaturePyramid': 'simple feature pyramid',
}


def module_time_breakdown(model: nn.Module, x: torch.Tensor) -> Dict[str, float]:
    """Wall time per module kind (top-most matching module only) in one forward, plus the remainder."""
    spans: Dict[str, float] = {}
    starts: Dict[int, float] = {}
    handles = []
    matched_prefixes: List[str] = []
    for mname, module in model.named_modules():
        kind = MODULE_KINDS.get(type(module).__name__)
        if kind is None or any(mname.startswith(p + '.') for p in matched_prefixes):
            continue
        matched_prefixes.append(mname)

        def pre(mod, args, _id=id(module)):
            starts[_id] = time.perf_counter()

        def post(mod, args, out, _id=id(module), _kind=kind):
            spans[_kind] = spans.get(_kind, 0.0) + time.perf_counter() - starts.pop(_id)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        with torch.no_grad():
            model(x)  # warm
            spans.clear()
            t0 = time.perf_counter()
            model(x)
            total = time.perf_counter() - t0
    finally:
        for hnd in handles:
            hnd.remove()
    spans['other (norms, residual adds, reshapes, ...)'] = total - sum(spans.values())
    spans['total'] = total
    return spans


def operator_profile(model: nn.Module, x: torch.Tensor, row_limit: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile
    with torch.no_grad():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    return prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=row_limit, max_name_column_width=45)


