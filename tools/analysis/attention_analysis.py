#!/usr/bin/env python
"""The papers' attention evidence, measured on our own LaViT and CB-ViT models.

    python tools/analysis/attention_analysis.py CONFIG [CHECKPOINT] --images PATH_OR_FOLDER [--limit 8]
        [--out-dir DIR] [--size H W] [--seed 0] [--cfg-options k=v ...] [--unsafe-load]

CONFIG is an mmdet or mmseg config of this repository whose backbone is ``LaViT`` or ``CBViT``. The model is
built with the toolbox's own API (``mmdet.apis.init_detector`` / ``mmseg.apis.init_model``, whichever the
config's ``default_scope`` names) on the CPU and only ``model.backbone`` is run. Without CHECKPOINT the backbone
is initialised by its own ``init_weights()`` (random initialisation unless its ``init_cfg`` names pretrained
weights; ``--cfg-options model.backbone.init_cfg=None`` forces random weights) and every output says so.
Checkpoints written by training runs without ``ResumableCheckpointHook`` (the repository's configs have it) hold
mmengine's ``HistoryBuffer`` objects, which torch's safe loader (torch >= 2.6) refuses; for such a file of your own
pass ``--unsafe-load``.

Images are read as the test pipeline reads them (BGR), resized to exactly ``--size`` (default 160x160, aspect
ratio not kept) and normalised by the model's ``data_preprocessor``. Attention is captured with forward hooks on
every block's attention module; nothing in the package is changed. Each captured matrix is checked against the
layer's own output (``proj(A V)`` recomputed from the hooked attention must equal what the layer returned), so the
numbers are the attention the model actually applies.

Measures (``DIR/attention_stats.csv``, tidy: one row per model/variant/stage/layer/metric, mean over images and
its standard deviation over images):

LaViT
  (a) ``cos_consecutive`` / ``ccos_consecutive``: for each pair of consecutive layers (l-1, l) of a stage, the
      mean over images, heads and queries of the cosine similarity between their attention rows (``ccos``: rows
      centred first, i.e. the Pearson correlation, which ignores the uniform part every row shares). Pair kinds
      VA->VA, VA->LA, LA->LA. Also for an *all-VA* variant of the same architecture (``num_vanilla = depths``)
      whose weights are copied from the analysed model wherever names and shapes match; the query/key
      projections of the layers that are LA layers in LaViT do not exist there and keep their random
      initialisation (the tool prints how many tensors were copied). ``--all-va-checkpoint`` uses a separately
      trained all-VA model instead, which is what the paper's figure needs.
  (b) ``cos_to_last_va`` / ``ccos_to_last_va`` / ``tv_to_last_va``: for each LA layer, row cosine (plain and
      centred) and total variation (0.5 * L1 of rows, in [0, 1]) between its attention and the last VA attention
      of its stage (``ref_layer``); for the all-VA variant
      the same between the layers at those positions and the same reference layer (how far freshly computed
      attention drifts). ``pooled_*``: the attention average-pooled over queries onto the key grid
      (``AttentionMap.pooled(sr_ratio)``), a K x K row-stochastic matrix: mean diagonal (self-affinity), mean of the
      largest off-diagonal entry per row, fraction of rows whose diagonal is the largest entry, and the two terms
      of the diagonality-preserving loss (``dominance``, ``asymmetry``). Reported for every layer.
  Per layer also ``entropy_norm`` (row entropy / log(Nk), 1 = uniform), ``max_prob`` (mean of the row maxima) and
  ``cos_to_uniform`` (cosine between a row and the uniform row: the value (a) takes for uniform attention).

CB-ViT
  (c) ``entropy_norm``, ``max_prob``, ``cos_to_uniform`` per layer for the *same weights* with context
      broadcasting on (``cb-on``) and off (``cb-off``): the blocks' ``cb`` modules are replaced by ``Identity``
      (or by parameter-free ``ContextBroadcast`` if the configuration has CB off) in copies of the backbone. Also
      ``cos_consecutive`` / ``ccos_consecutive`` between consecutive layers. Rows run over all tokens (class token
      included), so Nk = 1 + h * w. ViT attention uses ``F.scaled_dot_product_attention``; the hook recomputes
      ``softmax(q k^T / sqrt(d))`` from the block's ``attn.qkv`` applied to the hooked (normed) input tokens.

Plots (matplotlib, Agg): ``similarity_consecutive.png`` and ``la_vs_va.png`` (LaViT), ``cbvit_density.png``
(CB-ViT). A summary table goes to stdout.
"""
import argparse
import contextlib
import copy
import csv
import math
import os
import os.path as osp
import pickle
import re
import sys
import warnings
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # run from a checkout

warnings.filterwarnings('ignore', category=FutureWarning)
warnings.filterwarnings('ignore', category=UserWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

from vitattn_mm.models.layers.attention import merge_heads, split_heads  # noqa: E402
from vitattn_mm.utils.images import list_images  # noqa: E402

CSV_NAME = 'attention_stats.csv'
CSV_COLUMNS = ('model', 'variant', 'weights', 'image_size', 'n_images', 'stage', 'layer', 'ref_layer', 'kind',
               'metric', 'value', 'std')
PLOT_DPI = 80
EPS = 1e-12


# ---------------------------------------------------------------------------------------------------------------
# Command line, model, images
# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Attention statistics of a LaViT / CB-ViT backbone (layer similarity, LA vs VA, CB density)')
    parser.add_argument('config', help='mmdet or mmseg config with a LaViT or CBViT backbone')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='detector/segmentor checkpoint; without it the backbone is randomly initialised')
    parser.add_argument('--images', required=True, help='an image file or a folder of images')
    parser.add_argument('--limit', type=int, default=8, help='use at most this many images (0: all)')
    parser.add_argument('--out-dir', default='work_dirs/attention_analysis', help='where the CSV and PNGs go')
    parser.add_argument('--size', type=int, nargs=2, default=(160, 160), metavar=('H', 'W'),
                        help='resize every image to exactly H x W before normalisation')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random initialisation')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. model.backbone.init_cfg=None')
    parser.add_argument('--all-va-checkpoint', default=None,
                        help='LaViT only: a checkpoint of a separately trained all-VA model of the same architecture '
                        '(e.g. from a *-allva config) to use as the all-VA variant instead of copying weights')
    parser.add_argument('--unsafe-load', action='store_true',
                        help="read CHECKPOINT with torch's full unpickler: needed for checkpoints whose message hub "
                        "holds mmengine's HistoryBuffer objects (written without ResumableCheckpointHook), which the "
                        'safe loader refuses; only for files you trust')
    args = parser.parse_args(argv)
    if min(args.size) < 32:
        parser.error(f'--size must be at least 32x32, got {args.size[0]}x{args.size[1]}')
    return args


@contextlib.contextmanager
def full_unpickler(enabled: bool):
    """Makes mmengine's ``torch.load`` (no ``weights_only`` argument) use the full unpickler while active."""
    if not enabled:
        yield
        return
    key = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
    old = os.environ.get(key)
    os.environ[key] = '1'
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def build_model(config: str, checkpoint: Optional[str], cfg_options: Optional[dict], seed: int,
                unsafe_load: bool = False):
    """The detector/segmentor on the CPU in eval mode, and a description of its weights."""
    import vitattn_mm  # noqa: F401  (registers the backbones, and the checkpoint globals mmengine needs)

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    backbone_init = copy.deepcopy(cfg.model.get('backbone', {}).get('init_cfg'))
    torch.manual_seed(seed)
    if scope not in ('mmdet', 'mmseg'):
        raise SystemExit(f'{config}: default_scope must be mmdet or mmseg, got {scope!r}')
    if checkpoint and not osp.isfile(checkpoint):
        raise SystemExit(f'checkpoint not found: {checkpoint}')
    with warnings.catch_warnings(), full_unpickler(unsafe_load):
        warnings.simplefilter('ignore')  # "checkpoint is None, use COCO classes by default" and the like
        try:
            if scope == 'mmdet':
                from mmdet.apis import init_detector
                model = init_detector(cfg, checkpoint, device='cpu')
            else:
                from mmseg.apis import init_model
                model = init_model(cfg, checkpoint, device='cpu')
        except pickle.UnpicklingError as exc:
            blocked = re.search(r'Unsupported global: GLOBAL ([\w.]+)', str(exc))
            if blocked is None or unsafe_load:
                raise
            message = (f"{checkpoint} holds Python objects that torch's safe loader refuses ({blocked.group(1)}, "
                       'e.g. from a training run without ResumableCheckpointHook). If you trust the file (e.g. your '
                       'own training output), re-run with --unsafe-load')
            raise SystemExit(message) from None
    # Both APIs drop the backbone's init_cfg and neither initialises weights when no checkpoint is given.
    if checkpoint:
        weights = f'checkpoint {checkpoint}'
    else:
        model.backbone.init_cfg = backbone_init
        torch.manual_seed(seed)
        try:
            model.backbone.init_weights()
        except Exception as exc:  # e.g. a pretrained URL that cannot be reached
            raise SystemExit(f'the backbone init_cfg {backbone_init} could not be applied ({exc}); pass a '
                             f'CHECKPOINT or add --cfg-options model.backbone.init_cfg=None for random weights')
        if isinstance(backbone_init, dict) and backbone_init.get('type') == 'Pretrained':
            weights = f'backbone init_cfg {backbone_init.get("checkpoint")}'
        else:
            weights = f'random init (seed {seed}, no checkpoint)'
    model.eval()
    return model, model.cfg, scope, weights


def load_inputs(paths: Sequence[str], size: Tuple[int, int], model) -> List[torch.Tensor]:
    """Each image as a normalised (1, 3, H, W) tensor, through the model's own data_preprocessor."""
    import mmcv
    inputs = []
    for path in paths:
        img = mmcv.imread(path, channel_order='bgr')  # as LoadImageFromFile
        if img is None:
            raise ValueError(f'cannot read image {path}')
        img = mmcv.imresize(img, (size[1], size[0]), interpolation='bilinear')
        chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        with torch.no_grad():
            data = model.data_preprocessor({'inputs': [chw], 'data_samples': None}, False)
        inputs.append(data['inputs'].float())
    return inputs


# ---------------------------------------------------------------------------------------------------------------
# Row statistics of attention matrices (..., Nq, Nk), rows summing to one
# ---------------------------------------------------------------------------------------------------------------
def row_cosine(a: torch.Tensor, b: torch.Tensor, centre: bool = False) -> torch.Tensor:
    a, b = a.double(), b.double()
    if centre:
        a = a - a.mean(dim=-1, keepdim=True)
        b = b - b.mean(dim=-1, keepdim=True)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return ((a * b).sum(dim=-1) / den.clamp_min(EPS)).clamp(-1, 1)


def row_tv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a.double() - b.double()).abs().sum(dim=-1)


def row_entropy_norm(p: torch.Tensor) -> torch.Tensor:
    n = p.shape[-1]
    p = p.double()
    h = -(p * p.clamp_min(1e-300).log()).sum(dim=-1)
    return h / math.log(n) if n > 1 else torch.zeros_like(h)


def row_cos_to_uniform(p: torch.Tensor) -> torch.Tensor:
    return row_cosine(p, torch.ones_like(p))


def density_stats(p: torch.Tensor) -> Dict[str, float]:
    return {
        'entropy_norm': row_entropy_norm(p).mean().item(),
        'max_prob': p.amax(dim=-1).double().mean().item(),
        'cos_to_uniform': row_cos_to_uniform(p).mean().item(),
    }


def pooled_stats(square: torch.Tensor) -> Dict[str, float]:
    """Self-affinity of (B, heads, K, K) attention pooled onto the key grid."""
    from vitattn_mm.models.losses.diagonality_loss import diagonality_terms
    k = square.shape[-1]
    s = square.double()
    diag = s.diagonal(dim1=-2, dim2=-1)
    off = s.masked_fill(torch.eye(k, dtype=torch.bool), float('-inf')).amax(dim=-1) if k > 1 else diag * 0
    dominance, asymmetry = diagonality_terms(square.float())
    return {
        'pooled_diag_mean': diag.mean().item(),
        'pooled_offdiag_max': off.mean().item(),
        'pooled_diag_dominant_frac': (diag >= off).double().mean().item(),
        'pooled_dominance': dominance.item(),
        'pooled_asymmetry': asymmetry.item(),
        'pooled_uniform_level': 1.0 / k,
    }


class Meter:
    """Per-image values of every (variant, stage, layer, ref_layer, kind, metric), averaged at the end."""

    def __init__(self):
        self.values: 'OrderedDict[tuple, List[float]]' = OrderedDict()

    def add(self, variant: str, stage: int, layer: int, ref_layer, kind: str, stats: Dict[str, float]) -> None:
        for metric, value in stats.items():
            self.values.setdefault((variant, stage, layer, ref_layer, kind, metric), []).append(float(value))

    def rows(self) -> List[dict]:
        out = []
        for (variant, stage, layer, ref, kind, metric), vals in self.values.items():
            arr = np.asarray(vals, dtype=np.float64)
            out.append(dict(variant=variant, stage=stage, layer=layer, ref_layer='' if ref is None else ref,
                            kind=kind, metric=metric, value=float(arr.mean()), std=float(arr.std()),
                            n=len(vals)))
        return out

    def get(self, variant: str, stage: int, layer: int, metric: str) -> Optional[float]:
        for (v, s, l, _, _, m), vals in self.values.items():
            if (v, s, l, m) == (variant, stage, layer, metric):
                return float(np.mean(vals))
        return None


# ---------------------------------------------------------------------------------------------------------------
# Hook-side self-check: the hooked attention must reproduce the layer's output
# ---------------------------------------------------------------------------------------------------------------
def _check_reproduces(name: str, expected: torch.Tensor, got: torch.Tensor) -> None:
    err = (expected - got).abs().max().item()
    scale = expected.abs().max().item() + 1e-6
    if err > 1e-3 * scale + 1e-5:
        raise RuntimeError(f'{name}: the hooked attention does not reproduce the layer output (max abs error '
                           f'{err:.3g}, output scale {scale:.3g}); the attention implementation changed and this '
                           f'tool must follow it')


# ---------------------------------------------------------------------------------------------------------------
# LaViT
# ---------------------------------------------------------------------------------------------------------------
def lavit_attention(backbone, image: torch.Tensor, verify: bool) -> Dict[Tuple[int, int], dict]:
    """One forward pass; per (stage, layer): kind, explicit probabilities and the key-grid pooled square."""
    records = {}
    handles = []
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
                    _check_reproduces(f'stage {s + 1} layer {l} ({kind})', out,
                                      module.proj(merge_heads(probs.to(v.dtype) @ v)))
                square = amap.pooled(backbone.sr_ratios[s]).probabilities().detach()
                records[(s, l)] = dict(kind=kind, probs=probs, square=square)

            handles.append(block.attn.register_forward_hook(hook))
    try:
        with torch.no_grad():
            backbone(image)
    finally:
        for h in handles:
            h.remove()
    return records


def lavit_measure(meter: Meter, variant: str, records: Dict[Tuple[int, int], dict],
                  num_vanilla: Sequence[int]) -> None:
    stages = sorted({s for s, _ in records})
    for s in stages:
        layers = sorted(l for (t, l) in records if t == s)
        ref = num_vanilla[s] - 1  # the last VA layer of the stage in the LaViT architecture
        for l in layers:
            rec = records[(s, l)]
            meter.add(variant, s, l, None, rec['kind'], density_stats(rec['probs']))
            meter.add(variant, s, l, None, rec['kind'], pooled_stats(rec['square']))
            if l > 0:
                prev = records[(s, l - 1)]
                pair = f'{prev["kind"]}->{rec["kind"]}'
                meter.add(variant, s, l, l - 1, pair, {
                    'cos_consecutive': row_cosine(prev['probs'], rec['probs']).mean().item(),
                    'ccos_consecutive': row_cosine(prev['probs'], rec['probs'], centre=True).mean().item(),
                })
            if l > ref:
                base = records[(s, ref)]['probs']
                meter.add(variant, s, l, ref, rec['kind'], {
                    'cos_to_last_va': row_cosine(base, rec['probs']).mean().item(),
                    'ccos_to_last_va': row_cosine(base, rec['probs'], centre=True).mean().item(),
                    'tv_to_last_va': row_tv(base, rec['probs']).mean().item(),
                })


def load_backbone_state(path: str, unsafe_load: bool) -> Dict[str, torch.Tensor]:
    """The ``backbone.*`` tensors of a detector/segmentor checkpoint (prefix removed), or a backbone-only one."""
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=not unsafe_load)
    except pickle.UnpicklingError as exc:
        raise SystemExit(f"{path}: torch's safe loader refuses it ({str(exc).splitlines()[-1][:160]}); if you trust "
                         'the file, re-run with --unsafe-load') from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    if any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    return state


def build_all_va(backbone, cfg, scope: str, seed: int, checkpoint: Optional[str] = None,
                 unsafe_load: bool = False) -> Tuple[nn.Module, str]:
    """The same LaViT with every layer vanilla; weights copied from ``backbone`` where names and shapes match,
    or loaded from ``checkpoint`` (a trained all-VA model)."""
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    arch = copy.deepcopy(backbone.arch)
    arch['num_vanilla'] = list(arch['depths'])
    bb_cfg = copy.deepcopy(cfg.model.backbone)
    bb_cfg.update(arch=arch, dp_loss=None, init_cfg=None)
    torch.manual_seed(seed + 1)
    all_va = MODELS.build(bb_cfg)
    all_va.init_weights()
    if checkpoint:
        state = load_backbone_state(checkpoint, unsafe_load)
        result = all_va.load_state_dict(state, strict=False)
        bad = [k for k, v in state.items() if k in all_va.state_dict() and all_va.state_dict()[k].shape != v.shape]
        if result.missing_keys or bad:
            raise SystemExit(f'--all-va-checkpoint {checkpoint} does not fit an all-VA version of {backbone.arch}: '
                             f'{len(result.missing_keys)} missing tensors ({_summarise_keys(result.missing_keys)})')
        all_va.eval()
        return all_va, f'all-VA variant: weights from {checkpoint}'
    source = backbone.state_dict()
    target = all_va.state_dict()
    copied = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    all_va.load_state_dict(copied, strict=False)
    kept = [k for k in target if k not in copied]
    dropped = [k for k in source if k not in copied]
    note = (f'all-VA variant: {len(copied)}/{len(target)} tensors copied from the analysed LaViT; '
            f'{len(kept)} keep their random init ({_summarise_keys(kept)}); {len(dropped)} LaViT tensors have no '
            f'place there ({_summarise_keys(dropped)})')
    all_va.eval()
    return all_va, note


def _summarise_keys(keys: Sequence[str]) -> str:
    tails = sorted({'.'.join(k.split('.')[-3:-1]) if k.split('.')[-1] in ('weight', 'bias', 'kernel_logits')
                    else k.split('.')[-1] for k in keys})
    return ', '.join(tails) if tails else 'none'


def analyse_lavit(backbone, inputs, cfg, scope: str, seed: int, all_va_checkpoint: Optional[str] = None,
                  unsafe_load: bool = False) -> Tuple[Meter, dict]:
    num_vanilla = list(backbone.arch['num_vanilla'])
    all_va, note = build_all_va(backbone, cfg, scope, seed, all_va_checkpoint, unsafe_load)
    meter = Meter()
    for i, image in enumerate(inputs):
        lavit_measure(meter, 'lavit', lavit_attention(backbone, image, verify=i == 0), num_vanilla)
        lavit_measure(meter, 'all-va', lavit_attention(all_va, image, verify=i == 0), num_vanilla)
    info = dict(num_vanilla=num_vanilla, depths=list(backbone.arch['depths']), all_va_note=note,
                key_grid=tuple(int(math.ceil(d / 32)) for d in inputs[0].shape[2:]))
    return meter, info


# ---------------------------------------------------------------------------------------------------------------
# CB-ViT
# ---------------------------------------------------------------------------------------------------------------
def cb_variant(backbone, on: bool) -> nn.Module:
    """A copy of the CB-ViT with context broadcasting on or off in every block (same weights otherwise)."""
    from vitattn_mm.models.layers.context_broadcast import ContextBroadcast
    model = copy.deepcopy(backbone)
    for block in model.blocks:
        has_cb = isinstance(block.cb, ContextBroadcast)
        if on and not has_cb:
            block.cb = ContextBroadcast()
        elif not on and has_cb:
            block.cb = nn.Identity()
    model.eval()
    return model


def vit_attention(backbone, image: torch.Tensor, verify: bool) -> List[torch.Tensor]:
    """softmax(q k^T / sqrt(d)) of every block, recomputed from ``attn.qkv`` on the hooked input tokens."""
    probs: List[Optional[torch.Tensor]] = [None] * len(backbone.blocks)
    handles = []
    for i, block in enumerate(backbone.blocks):

        def hook(module, args, output, i=i):
            x = args[0]
            b, n, c = x.shape
            heads = module.num_heads
            q, k, v = module.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            p = ((q * (c // heads)**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
            if verify:
                _check_reproduces(f'block {i}', output, module.proj(merge_heads(p @ v)))
            probs[i] = p.detach()

        handles.append(block.attn.register_forward_hook(hook))
    try:
        with torch.no_grad():
            backbone(image)
    finally:
        for h in handles:
            h.remove()
    return probs


def analyse_cbvit(backbone, inputs) -> Tuple[Meter, dict]:
    from vitattn_mm.models.layers.context_broadcast import ContextBroadcast
    configured = [isinstance(b.cb, ContextBroadcast) for b in backbone.blocks]
    variants = OrderedDict([('cb-on', cb_variant(backbone, True)), ('cb-off', cb_variant(backbone, False))])
    meter = Meter()
    for i, image in enumerate(inputs):
        for name, model in variants.items():
            probs = vit_attention(model, image, verify=i == 0)
            for l, p in enumerate(probs):
                meter.add(name, 0, l, None, 'VA', density_stats(p))
                if l > 0:
                    meter.add(name, 0, l, l - 1, 'VA->VA', {
                        'cos_consecutive': row_cosine(probs[l - 1], p).mean().item(),
                        'ccos_consecutive': row_cosine(probs[l - 1], p, centre=True).mean().item(),
                    })
    if all(configured):
        cb_note = 'the configuration has CB on in every block; cb-off removes it from the same weights'
    elif not any(configured):
        cb_note = 'the configuration has CB off; cb-on adds parameter-free CB to the same weights'
    else:
        cb_note = f'the configuration has CB in blocks {[i for i, c in enumerate(configured) if c]}'
    h, w = inputs[0].shape[2:]
    tokens = 1 + math.ceil(h / backbone.patch_size) * math.ceil(w / backbone.patch_size)
    return meter, dict(cb_note=cb_note, tokens=tokens, depth=len(backbone.blocks))


# ---------------------------------------------------------------------------------------------------------------
# Output: CSV, plots, summary
# ---------------------------------------------------------------------------------------------------------------
def write_csv(path: str, rows: List[dict], model_name: str, weights: str, size: Tuple[int, int]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow(dict(model=model_name, variant=r['variant'], weights=weights,
                                 image_size=f'{size[0]}x{size[1]}', n_images=r['n'], stage=r['stage'] + 1,
                                 layer=r['layer'], ref_layer=r['ref_layer'], kind=r['kind'], metric=r['metric'],
                                 value=f'{r["value"]:.6g}', std=f'{r["std"]:.6g}'))


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _pick(rows: List[dict], **match) -> List[dict]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def plot_similarity(path: str, rows: List[dict], info: dict, title: str) -> None:
    plt = _plt()
    depths = info['depths']
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.6), squeeze=False,
                             gridspec_kw=dict(width_ratios=[max(d - 1, 1) for d in depths]))
    colours = {'VA->VA': '#1f77b4', 'VA->LA': '#ff7f0e', 'LA->LA': '#d62728'}
    for row_i, (metric, label) in enumerate((('cos_consecutive', 'row cosine'),
                                             ('ccos_consecutive', 'centred row cosine'))):
        for s in range(4):
            ax = axes[row_i][s]
            pairs = sorted(_pick(rows, variant='lavit', stage=s, metric=metric), key=lambda r: r['layer'])
            base = {r['layer']: r for r in _pick(rows, variant='all-va', stage=s, metric=metric)}
            x = np.arange(len(pairs))
            if not pairs:
                ax.text(0.5, 0.5, 'one layer:\nno pair', ha='center', va='center', transform=ax.transAxes)
                ax.set_xticks([])
            for j, r in enumerate(pairs):
                ax.bar(j - 0.2, r['value'], 0.4, yerr=r['std'], color=colours.get(r['kind'], 'grey'),
                       capsize=2, label=r['kind'])
                b = base.get(r['layer'])
                if b is not None:
                    ax.bar(j + 0.2, b['value'], 0.4, yerr=b['std'], color='#9e9e9e', hatch='//',
                           edgecolor='white', capsize=2, label='all-VA (VA->VA)')
                if metric == 'cos_consecutive':
                    for off, variant in ((-0.2, 'lavit'), (0.2, 'all-va')):
                        u = _pick(rows, variant=variant, stage=s, layer=r['layer'], metric='cos_to_uniform')
                        if u:
                            ax.plot(j + off, u[0]['value'], 'k_', markersize=12, markeredgewidth=2,
                                    label='row cosine to uniform')
            if pairs:
                ax.set_xticks(x)
                ax.set_xticklabels([f'{r["layer"] - 1}->{r["layer"]}\n{r["kind"]}' for r in pairs], fontsize=8)
            lows = [r['value'] - r['std'] for r in [*pairs, *base.values()]]
            ax.set_ylim(0 if metric == 'cos_consecutive' else min([0.0, *lows]) - 0.05, 1.05)
            ax.axhline(1.0, color='k', lw=0.5, ls=':')
            if row_i == 0:
                ax.set_title(f'stage {s + 1}')
            if s == 0:
                ax.set_ylabel(label)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, [f'LaViT {lab}' if '->' in lab and 'all-VA' not in lab else lab for lab in labels],
               loc='lower center', ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f'Attention similarity of consecutive layers: {title}', fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def plot_la_vs_va(path: str, rows: List[dict], info: dict, title: str) -> None:
    plt = _plt()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.4), gridspec_kw=dict(width_ratios=[1, 0.9, 1.2]))
    la = sorted(_pick(rows, variant='lavit', metric='cos_to_last_va'), key=lambda r: (r['stage'], r['layer']))
    labels = [f's{r["stage"] + 1}.L{r["layer"]}' for r in la]
    x = np.arange(len(la))

    def values(variant, metric):
        out = []
        for r in la:
            m = _pick(rows, variant=variant, stage=r['stage'], layer=r['layer'], metric=metric)
            out.append((m[0]['value'], m[0]['std']) if m else (np.nan, 0.0))
        return np.array(out).reshape(-1, 2)

    w = 0.2
    for k, (variant, metric, colour, hatch, name) in enumerate((
            ('lavit', 'cos_to_last_va', '#ff7f0e', None, 'LaViT LA layer: cosine'),
            ('all-va', 'cos_to_last_va', '#9e9e9e', None, 'all-VA, same position: cosine'),
            ('lavit', 'ccos_to_last_va', '#ff7f0e', '//', 'LaViT LA layer: centred cosine'),
            ('all-va', 'ccos_to_last_va', '#9e9e9e', '//', 'all-VA, same position: centred cosine'))):
        v = values(variant, metric)
        ax1.bar(x + (k - 1.5) * w, v[:, 0], w, yerr=v[:, 1], capsize=1.5, color=colour, hatch=hatch,
                edgecolor='white', label=name)
    ax1.set_ylim(min(0.0, float(np.nanmin(values('all-va', 'ccos_to_last_va')[:, 0])) - 0.05), 1.05)
    ax1.axhline(0, color='k', lw=0.5)
    ax1.set_title("row similarity to the stage's last VA layer (sS.Ll: stage S, layer l)", fontsize=9)
    ax1.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.25), ncol=2, frameon=False)
    for k, (variant, colour, name) in enumerate((('lavit', '#ff7f0e', 'LaViT LA layer'),
                                                 ('all-va', '#9e9e9e', 'all-VA, same position'))):
        v = values(variant, 'tv_to_last_va')
        ax2.bar(x + (k - 0.5) * 0.4, v[:, 0], 0.4, yerr=v[:, 1], capsize=1.5, color=colour, label=name)
    tops = [float(np.nanmax(values(v, 'tv_to_last_va').sum(axis=1))) for v in ('lavit', 'all-va')]
    ax2.set_ylim(0, max(0.05, *tops) * 1.1)
    ax2.set_title("total variation to the stage's last VA layer (0..1)", fontsize=9)
    ax2.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.25), ncol=1, frameon=False)
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7, rotation=90)

    layers = sorted(_pick(rows, variant='lavit', metric='pooled_diag_mean'), key=lambda r: (r['stage'], r['layer']))
    x3 = np.arange(len(layers))
    off = [(_pick(rows, variant='lavit', stage=r['stage'], layer=r['layer'], metric='pooled_offdiag_max')
            or [dict(value=np.nan)])[0]['value'] for r in layers]
    colours = ['#ff7f0e' if r['kind'] == 'LA' else '#1f77b4' for r in layers]
    ax3.bar(x3 - 0.2, [r['value'] for r in layers], 0.4, color=colours, label='diagonal, mean (VA blue, LA orange)')
    ax3.bar(x3 + 0.2, off, 0.4, color='#bdbdbd', label='largest off-diagonal, mean')
    k = info['key_grid'][0] * info['key_grid'][1]
    ax3.axhline(1.0 / k, color='k', ls='--', lw=0.8, label=f'uniform 1/K (K={k})')
    ax3.set_xticks(x3)
    ax3.set_xticklabels([f's{r["stage"] + 1}.L{r["layer"]} {r["kind"]}' for r in layers], fontsize=7, rotation=90)
    ax3.set_title('LaViT attention pooled onto the key grid: self-affinity', fontsize=9)
    ax3.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.25), ncol=2, frameon=False)
    fig.suptitle(f'Less attention vs vanilla attention: {title}', fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=PLOT_DPI, bbox_inches='tight')
    plt.close(fig)


def plot_cbvit(path: str, rows: List[dict], info: dict, title: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (metric, label) in zip(axes, (('entropy_norm', 'normalised row entropy (1 = uniform)'),
                                          ('max_prob', 'mean row maximum'),
                                          ('ccos_consecutive', 'centred cosine, layer l-1 vs l'))):
        for variant, colour, marker in (('cb-on', '#2ca02c', 'o'), ('cb-off', '#7f7f7f', 's')):
            rs = sorted(_pick(rows, variant=variant, metric=metric), key=lambda r: r['layer'])
            ax.errorbar([r['layer'] for r in rs], [r['value'] for r in rs], yerr=[r['std'] for r in rs],
                        color=colour, marker=marker, ms=4, capsize=2, label=variant)
        if metric == 'max_prob':
            ax.axhline(1.0 / info['tokens'], color='k', ls='--', lw=0.8, label=f'uniform 1/N (N={info["tokens"]})')
        ax.set_xlabel('block')
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    axes[0].axhline(1.0, color='k', ls=':', lw=0.8)
    fig.suptitle(f'CB-ViT attention density, same weights with CB on/off: {title}', fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def summary_lavit(meter: Meter, info: dict) -> str:
    lines = ['(a) consecutive-layer attention similarity, row cosine [centred]',
             f'{"stage":>5} {"pair":>5} {"kind":>7}   {"LaViT":>16}   {"all-VA":>16}   {"all-VA cos->uniform":>19}']
    for (variant, s, l, ref, kind, metric), _ in meter.values.items():
        if variant != 'lavit' or metric != 'cos_consecutive':
            continue
        a = f'{meter.get("lavit", s, l, "cos_consecutive"):.3f} [{meter.get("lavit", s, l, "ccos_consecutive"):.3f}]'
        b = f'{meter.get("all-va", s, l, "cos_consecutive"):.3f} [{meter.get("all-va", s, l, "ccos_consecutive"):.3f}]'
        lines.append(f'{s + 1:>5} {f"{l - 1}-{l}":>5} {kind:>7}   {a:>16}   {b:>16}   '
                     f'{meter.get("all-va", s, l, "cos_to_uniform"):>19.3f}')
    by_kind = defaultdict(list)
    for (variant, s, l, ref, kind, metric), vals in meter.values.items():
        if metric == 'cos_consecutive':
            by_kind[(variant, kind)].append(np.mean(vals))
    lines.append('    mean by pair kind: ' + ', '.join(f'{v} {k} {np.mean(x):.3f}' for (v, k), x in by_kind.items()))
    lines += ['', '(b) LA layer vs last VA layer of its stage; self-affinity pooled onto the key grid '
              f'(uniform 1/K = {1 / (info["key_grid"][0] * info["key_grid"][1]):.3f})',
              f'{"stage":>5} {"layer":>5} {"ref":>3}  {"cos":>6} {"ccos":>6} {"TV":>6} | {"allVA cos":>9} {"ccos":>6} '
              f'{"TV":>6} | '
              f'{"diag":>6} {"offmax":>6} {"dom.frac":>8} {"entropy":>7}']
    for (variant, s, l, ref, kind, metric), _ in meter.values.items():
        if variant != 'lavit' or metric != 'cos_to_last_va':
            continue
        g = lambda v, m: meter.get(v, s, l, m)  # noqa: E731
        lines.append(f'{s + 1:>5} {l:>5} {ref:>3}  {g("lavit", "cos_to_last_va"):>6.3f} '
                     f'{g("lavit", "ccos_to_last_va"):>6.3f} {g("lavit", "tv_to_last_va"):>6.3f} | '
                     f'{g("all-va", "cos_to_last_va"):>9.3f} {g("all-va", "ccos_to_last_va"):>6.3f} '
                     f'{g("all-va", "tv_to_last_va"):>6.3f} | {g("lavit", "pooled_diag_mean"):>6.3f} '
                     f'{g("lavit", "pooled_offdiag_max"):>6.3f} {g("lavit", "pooled_diag_dominant_frac"):>8.3f} '
                     f'{g("lavit", "entropy_norm"):>7.3f}')
    lines += ['', 'per-layer density (normalised entropy) LaViT / all-VA:']
    for s in range(4):
        cells = []
        for l in range(info['depths'][s]):
            kind = 'LA' if l >= info['num_vanilla'][s] else 'VA'
            cells.append(f'L{l}{kind} {meter.get("lavit", s, l, "entropy_norm"):.3f}/'
                         f'{meter.get("all-va", s, l, "entropy_norm"):.3f}')
        lines.append(f'  stage {s + 1}: ' + '  '.join(cells))
    return '\n'.join(lines)


def summary_cbvit(meter: Meter, info: dict) -> str:
    lines = [f'(c) CB-ViT attention density, same weights, CB on vs off ({info["cb_note"]}; N = {info["tokens"]} '
             'tokens)',
             f'{"block":>5}  {"entropy on":>10} {"entropy off":>11}  {"max on":>7} {"max off":>7}']
    for l in range(info['depth']):
        g = lambda v, m: meter.get(v, 0, l, m)  # noqa: E731
        lines.append(f'{l:>5}  {g("cb-on", "entropy_norm"):>10.4f} {g("cb-off", "entropy_norm"):>11.4f}  '
                     f'{g("cb-on", "max_prob"):>7.4f} {g("cb-off", "max_prob"):>7.4f}')
    for metric in ('entropy_norm', 'max_prob'):
        on = np.mean([meter.get('cb-on', 0, l, metric) for l in range(info['depth'])])
        off = np.mean([meter.get('cb-off', 0, l, metric) for l in range(info['depth'])])
        lines.append(f'  mean {metric}: CB on {on:.4f}, CB off {off:.4f}')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        paths = list_images(args.images, args.limit)
    except FileNotFoundError as exc:
        raise SystemExit(f'error: {exc}') from None
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    model, cfg, scope, weights = build_model(args.config, args.checkpoint, args.cfg_options, args.seed,
                                             args.unsafe_load)
    from vitattn_mm import CBViT, LaViT
    backbone = model.backbone
    size = tuple(args.size)
    inputs = load_inputs(paths, size, model)
    os.makedirs(args.out_dir, exist_ok=True)
    name = type(backbone).__name__
    source = 'random init' if weights.startswith('random') else osp.basename(args.checkpoint or weights)
    title = f'{name}, {source}, {len(inputs)} images {size[0]}x{size[1]}'
    print(f'config: {args.config}\nbackbone: {name}\nWEIGHTS: {weights}\nimages: {len(inputs)} from {args.images}, '
          f'resized to {size[0]}x{size[1]}')
    if weights.startswith('random'):
        print('NOTE: random initialisation, no trained weights: these are the statistics of an untrained model.')
    written = []
    if isinstance(backbone, LaViT):
        meter, info = analyse_lavit(backbone, inputs, cfg, scope, args.seed, args.all_va_checkpoint,
                                    args.unsafe_load)
        print(info['all_va_note'])
        rows = meter.rows()
        for fname, fn in (('similarity_consecutive.png', plot_similarity), ('la_vs_va.png', plot_la_vs_va)):
            fn(osp.join(args.out_dir, fname), rows, info, title)
            written.append(fname)
        summary = summary_lavit(meter, info)
    elif isinstance(backbone, CBViT):
        meter, info = analyse_cbvit(backbone, inputs)
        rows = meter.rows()
        plot_cbvit(osp.join(args.out_dir, 'cbvit_density.png'), rows, info, title)
        written.append('cbvit_density.png')
        summary = summary_cbvit(meter, info)
    else:
        raise SystemExit(f'{args.config}: the backbone is {name}; this tool analyses LaViT and CBViT only')
    write_csv(osp.join(args.out_dir, CSV_NAME), rows, name, weights, size)
    written.insert(0, CSV_NAME)
    print()
    print(summary)
    print(f'\nwrote {", ".join(osp.join(args.out_dir, f) for f in written)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
