"""Prepare a trained checkpoint for release: weights and meta only, file name with its sha256 prefix.

    python tools/model_converters/publish_model.py IN_FILE OUT_FILE [--unsafe-load]

    # e.g.
    python tools/model_converters/publish_model.py work_dirs/maskrcnn_lavit_s_coco/iter_90000.pth \\
        release/maskrcnn_lavit_s_coco.pth --unsafe-load
    # -> release/maskrcnn_lavit_s_coco-1a2b3c4d.pth

Keeps ``state_dict`` and ``meta`` of an mmengine checkpoint and drops the training state (``optimizer``,
``param_schedulers``, ``message_hub``, random generator states, ...). The file is written, its sha256 computed,
and it is renamed to ``<OUT_FILE without .pth>-<first 8 hex digits of the sha256>.pth`` (as mmdet's
publish_model). The final path is the only line on stdout (what was dropped goes to stderr), so
``path=$(python tools/model_converters/publish_model.py IN OUT)`` works.

IN_FILE is read with ``torch.load(weights_only=True)`` after ``import vitattn_mm`` (which allows the numpy values
mmengine writes into ``meta``). Checkpoints written during training also hold mmengine's message hub, Python
objects the safe loader refuses: for such a file of your own pass ``--unsafe-load``. The published file holds only
tensors and plain values (meta entries the safe loader would refuse are dropped, with a warning), so it loads with
``weights_only=True``. Exit status: 0 done, 2 user error (one ``error: ...`` line on stderr). Set
VITATTN_TRACEBACK=1 for a traceback instead of the one line.
"""
import argparse
import hashlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run from a checkout

from vitattn_mm.utils.checkpoint_io import (UserError, add_unsafe_load_argument, load_checkpoint,  # noqa: E402
                                            require_file, run_cli, safe_meta, save_atomic)

KEPT = ('state_dict', 'meta')
CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.ckpt')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Strip the training state from a checkpoint and name it with its sha256 prefix.')
    parser.add_argument('in_file', metavar='IN_FILE', help='checkpoint written by training (mmengine format)')
    parser.add_argument('out_file', metavar='OUT_FILE',
                        help='output name; the file is written as <OUT_FILE without .pth>-<sha256[:8]>.pth')
    add_unsafe_load_argument(parser, 'IN_FILE')
    return parser.parse_args(argv)


def sha256sum(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def published_name(out_file: str, sha256: str) -> str:
    """``dir/name.pth`` -> ``dir/name-<sha256[:8]>.pth``."""
    directory, name = os.path.split(out_file)
    stem, suffix = os.path.splitext(name)
    if suffix not in CHECKPOINT_SUFFIXES:
        stem = name
    return os.path.join(directory, f'{stem}-{sha256[:8]}.pth')


def check_args(args) -> None:
    """The checks of the arguments alone, before any checkpoint is read."""
    require_file(args.in_file)
    if not os.path.basename(args.out_file) or os.path.isdir(args.out_file):
        raise UserError(f'OUT_FILE must name a file, e.g. release/model.pth, got {args.out_file!r}')


def run(args) -> str:
    import torch

    import vitattn_mm  # noqa: F401  (safe globals for numpy values in mmengine checkpoints)

    checkpoint = load_checkpoint(args.in_file, args.unsafe_load, trusted_example='your own training output')
    if not isinstance(checkpoint, dict):
        raise UserError(f'{args.in_file} holds a {type(checkpoint).__name__}, not a checkpoint dict')
    if isinstance(checkpoint.get('state_dict'), dict):
        state, meta = checkpoint['state_dict'], checkpoint.get('meta')
        dropped = sorted(str(k) for k in checkpoint if k not in KEPT)
    elif checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        state, meta, dropped = checkpoint, None, []
        print(f'note: {args.in_file} is a bare state dict; publishing it as state_dict', file=sys.stderr)
    else:
        raise UserError(f"{args.in_file} is not an mmengine checkpoint: no 'state_dict'; its top-level keys are "
                        f'{sorted(map(str, checkpoint))[:10]}')
    if not any(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"the 'state_dict' of {args.in_file} holds no tensors")

    final = save_atomic({'state_dict': state, 'meta': safe_meta(meta)}, args.out_file,
                        final_path=lambda tmp: published_name(args.out_file, sha256sum(tmp)))
    size = os.path.getsize(final) / 2**20
    print(f'kept: state_dict ({len(state)} entries), meta; dropped: {dropped or "nothing"}; {size:.1f} MiB',
          file=sys.stderr)
    return final


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: (check_args(args), print(run(args))))


if __name__ == '__main__':
    sys.exit(main())
