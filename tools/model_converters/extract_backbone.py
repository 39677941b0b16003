"""Extract the backbone of a trained detector/segmentor checkpoint, for reuse as a pretrained backbone.

    python tools/model_converters/extract_backbone.py SRC DST [--prefix backbone.] [--unsafe-load]

    # e.g. the LaViT-S of a trained Mask R-CNN, for an UperNet config
    python tools/model_converters/extract_backbone.py work_dirs/maskrcnn_lavit_s_coco/iter_90000.pth \\
        pretrain/lavit_s_from_maskrcnn.pth

SRC is an mmengine checkpoint (``state_dict`` with keys ``backbone.*``, ``neck.*``, ...). DST holds only the keys
that start with ``--prefix``, with the prefix removed, and SRC's ``meta`` plus ``extracted_from`` (SRC's file name
and the prefix); optimizer and other training state are left out. Use it with
``backbone=dict(..., init_cfg=dict(type='Pretrained', checkpoint=DST))`` (no ``prefix`` needed). If no key starts
with the prefix, the tool names the prefixes SRC has.

SRC is read with ``torch.load(weights_only=True)``. Checkpoints written during training also hold mmengine's
message hub (Python objects the safe loader refuses); for such a file of your own, pass ``--unsafe-load``. DST holds
only tensors and plain values (meta entries that the safe loader would refuse are dropped, with a warning), so it
loads with ``weights_only=True``. Exit status: 0 done, 2 user error (one ``error: ...`` line on stderr). Set
VITATTN_TRACEBACK=1 for a traceback instead of the one line.
"""
import argparse
import os
import sys
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run from a checkout

from vitattn_mm.utils.checkpoint_io import (UserError, add_unsafe_load_argument, load_checkpoint,  # noqa: E402
                                            require_file, run_cli, safe_meta, save_atomic)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Write the backbone of a detector/segmentor checkpoint as a backbone-only checkpoint.')
    parser.add_argument('src', metavar='SRC', help='trained detector/segmentor checkpoint (mmengine format)')
    parser.add_argument('dst', metavar='DST', help='output backbone checkpoint')
    parser.add_argument('--prefix', default='backbone.',
                        help='keys to keep, removed in DST (default: backbone.)')
    add_unsafe_load_argument(parser, 'SRC')
    return parser.parse_args(argv)


def key_prefixes(keys) -> str:
    counts = Counter(k.split('.', 1)[0] + '.' if '.' in k else k for k in keys)
    return ', '.join(f'{p!r} ({n} keys)' for p, n in sorted(counts.items()))


def check_args(args) -> None:
    """The checks of the arguments alone, before any checkpoint is read."""
    require_file(args.src)
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise UserError('DST is SRC; write the backbone to another file')
    if not args.prefix.strip('.'):
        raise UserError(f'--prefix must name a module, e.g. backbone., got {args.prefix!r}')


def run(args) -> None:
    import torch

    import vitattn_mm  # noqa: F401  (safe globals for numpy values in mmengine checkpoints)
    from vitattn_mm.models.utils.checkpoint import extract_state_dict, strip_prefix

    checkpoint = load_checkpoint(args.src, args.unsafe_load, trusted_example='your own training output')
    if not isinstance(checkpoint, dict):
        raise UserError(f'{args.src} holds a {type(checkpoint).__name__}, not a checkpoint dict')
    state = extract_state_dict(checkpoint)
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    if not tensors:
        raise UserError(f'{args.src} holds no weights; its top-level keys are {sorted(map(str, checkpoint))[:10]} '
                        "(expected an mmengine checkpoint with 'state_dict')")
    prefix = args.prefix if args.prefix.endswith('.') else args.prefix + '.'
    backbone = strip_prefix(tensors, prefix)
    if not backbone:
        raise UserError(f'no key of {args.src} starts with {prefix!r}; its keys start with {key_prefixes(tensors)}; '
                        'pass one of them with --prefix')

    meta = safe_meta(checkpoint.get('meta'))
    meta['extracted_from'] = dict(file=os.path.basename(args.src), prefix=prefix)
    save_atomic({'state_dict': {k: v.detach().clone() for k, v in backbone.items()}, 'meta': meta}, args.dst)
    params = sum(v.numel() for v in backbone.values())
    left_out = [] if state is checkpoint else sorted(str(k) for k, v in checkpoint.items()
                                                    if v is not state and k != 'meta')
    print(f'wrote {len(backbone)} tensors ({params / 1e6:.2f}M values) under {prefix!r} of {args.src} to '
          f'{args.dst}; modules: {key_prefixes(backbone)}; other keys left out: '
          f'{key_prefixes(set(tensors) - {prefix + k for k in backbone}) or "none"}; training state left out: '
          f'{left_out or "none"}')
    print(f"use it with init_cfg=dict(type='Pretrained', checkpoint={args.dst!r})")


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: (check_args(args), run(args)))


if __name__ == '__main__':
    sys.exit(main())
