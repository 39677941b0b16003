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
import io
import os
import re
import sys
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run from a checkout


class UserError(Exception):
    """A problem the user can fix; reported as one ``error:`` line with exit status 2."""


def one_line(text, limit: int = 8) -> str:
    """A multi-line message (a headline and one item a line) as one line, with at most ``limit`` items."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return ''.join(lines)
    items = lines[1:limit + 1] + ([f'and {len(lines) - 1 - limit} more'] if len(lines) - 1 > limit else [])
    return f"{lines[0]} {'; '.join(items)}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Write the backbone of a detector/segmentor checkpoint as a backbone-only checkpoint.')
    parser.add_argument('src', metavar='SRC', help='trained detector/segmentor checkpoint (mmengine format)')
    parser.add_argument('dst', metavar='DST', help='output backbone checkpoint')
    parser.add_argument('--prefix', default='backbone.',
                        help='keys to keep, removed in DST (default: backbone.)')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='allow the full unpickler when SRC holds more than tensors and plain values (e.g. '
                        "mmengine's message hub); only for files you trust")
    return parser.parse_args(argv)


def load_checkpoint(path: str, unsafe: bool):
    """Reads a checkpoint on the CPU with torch's safe loader, or the full one if ``unsafe``."""
    import torch
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001  (any reader error means: not a usable file)
        blocked = re.search(r'Unsupported global: GLOBAL ([\w.]+)', str(e))
        if blocked is None:
            raise UserError(f'{path} is not a readable PyTorch checkpoint ({type(e).__name__}: '
                            f'{one_line(e)[:200]})') from e
        if not unsafe:
            raise UserError(f"{path} holds Python objects that torch's safe loader refuses ({blocked.group(1)}); "
                            'if you trust the file (e.g. your own training output), re-run with --unsafe-load') from e
    print(f'warning: loading {path} with the full unpickler (--unsafe-load)', file=sys.stderr)
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise UserError(f'{path} is not a readable PyTorch checkpoint ({type(e).__name__}: '
                        f'{one_line(e)[:200]})') from e


def safe_meta(meta) -> dict:
    """The entries of ``meta`` that ``torch.load(weights_only=True)`` can read back; warns about the others."""
    import torch
    if not isinstance(meta, dict):
        return {}
    kept, dropped = {}, []
    for key, value in meta.items():
        buffer = io.BytesIO()
        try:
            torch.save(value, buffer)
            buffer.seek(0)
            torch.load(buffer, map_location='cpu', weights_only=True)
        except Exception:  # noqa: BLE001  (anything the safe loader cannot read back)
            dropped.append(str(key))
            continue
        kept[key] = value
    if dropped:
        print(f'warning: meta entries left out (not readable by the safe loader): {dropped}', file=sys.stderr)
    return kept


def key_prefixes(keys) -> str:
    counts = Counter(k.split('.', 1)[0] + '.' if '.' in k else k for k in keys)
    return ', '.join(f'{p!r} ({n} keys)' for p, n in sorted(counts.items()))


def check_args(args) -> None:
    """The checks that need no import of torch (fast answers to typos)."""
    if not os.path.isfile(args.src):
        raise UserError(f'{args.src}: no such file' if not os.path.exists(args.src) else f'{args.src} is not a file')
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise UserError('DST is SRC; write the backbone to another file')
    if not args.prefix.strip('.'):
        raise UserError(f'--prefix must name a module, e.g. backbone., got {args.prefix!r}')


def run(args) -> None:
    import torch

    import vitattn_mm  # noqa: F401  (safe globals for numpy values in mmengine checkpoints)
    from vitattn_mm.models.utils.checkpoint import extract_state_dict, strip_prefix

    checkpoint = load_checkpoint(args.src, args.unsafe_load)
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
    out_dir = os.path.dirname(os.path.abspath(args.dst))
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f'.{os.path.basename(args.dst)}.tmp')
    try:
        torch.save({'state_dict': {k: v.detach().clone() for k, v in backbone.items()}, 'meta': meta}, tmp)
        os.replace(tmp, args.dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
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
    try:
        check_args(args)
        run(args)
    except UserError as e:
        if os.environ.get('VITATTN_TRACEBACK'):
            raise
        print(f'error: {one_line(e)}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
