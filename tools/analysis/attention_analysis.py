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
import os
import os.path as osp
import pickle
import re
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
for _path in (REPO_ROOT, osp.dirname(osp.abspath(__file__))):  # run from a checkout; attention_stats beside us
    if _path not in sys.path:
        sys.path.insert(0, _path)

warnings.filterwarnings('ignore', category=FutureWarning)
warnings.filterwarnings('ignore', category=UserWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

from attention_stats.compare import analyse_cbvit, analyse_lavit  # noqa: E402
from attention_stats.plots import plot_cbvit, plot_la_vs_va, plot_similarity  # noqa: E402
from attention_stats.report import CSV_NAME, summary_cbvit, summary_lavit, write_csv  # noqa: E402
from vitattn_mm.utils.images import list_images  # noqa: E402


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
