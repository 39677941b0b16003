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
import io
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run from a checkout

KEPT = ('state_dict', 'meta')
CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.ckpt')


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
        description='Strip the training state from a checkpoint and name it with its sha256 prefix.')
    parser.add_argument('in_file', metavar='IN_FILE', help='checkpoint written by training (mmengine format)')
    parser.add_argument('out_file', metavar='OUT_FILE',
                        help='output name; the file is written as <OUT_FILE without .pth>-<sha256[:8]>.pth')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='allow the full unpickler when IN_FILE holds more than tensors and plain values (e.g. '
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
    """The checks that need no import of torch (fast answers to typos)."""
    if not os.path.isfile(args.in_file):
        raise UserError(f'{args.in_file}: no such file' if not os.path.exists(args.in_file)
                        else f'{args.in_file} is not a file')
    if not os.path.basename(args.out_file) or os.path.isdir(args.out_file):
        raise UserError(f'OUT_FILE must name a file, e.g. release/model.pth, got {args.out_file!r}')


def run(args) -> str:
    import torch

    import vitattn_mm  # noqa: F401  (safe globals for numpy values in mmengine checkpoints)

    checkpoint = load_checkpoint(args.in_file, args.unsafe_load)
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

    out_dir = os.path.dirname(os.path.abspath(args.out_file))
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f'.{os.path.basename(args.out_file)}.tmp')
    try:
        torch.save({'state_dict': state, 'meta': safe_meta(meta)}, tmp)
        final = published_name(args.out_file, sha256sum(tmp))
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    size = os.path.getsize(final) / 2**20
    print(f'kept: state_dict ({len(state)} entries), meta; dropped: {dropped or "nothing"}; {size:.1f} MiB',
          file=sys.stderr)
    return final


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_args(args)
        final = run(args)
    except UserError as e:
        if os.environ.get('VITATTN_TRACEBACK'):
            raise
        print(f'error: {one_line(e)}', file=sys.stderr)
        return 2
    print(final)
    return 0


if __name__ == '__main__':
    sys.exit(main())
