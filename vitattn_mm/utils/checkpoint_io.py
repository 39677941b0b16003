"""Reading and writing checkpoint files for the command-line tools (``tools/model_converters``).

Checkpoints are read with torch's safe loader (``weights_only=True``; ``--unsafe-load`` opts into the full
unpickler) and written so that they load with it again. A problem the user can fix is a :class:`UserError`, which
:func:`run_cli` reports as one ``error: ...`` line with exit status 2. Only the standard library is imported here;
torch is imported when a function needs it. (``import vitattn_mm`` itself, which importing this module runs, allows
the numpy values that mmengine writes into ``meta``.)
"""
import io
import os
import re
import sys
from typing import Any, Callable, Dict, Optional, Tuple, Type

TRACEBACK_ENV = 'VITATTN_TRACEBACK'


class UserError(Exception):
    """A problem the user can fix; reported as one ``error:`` line with exit status 2."""


def one_line(text, limit: int = 8) -> str:
    """A multi-line message (a headline and one item a line) as one line, with at most ``limit`` items."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return ''.join(lines)
    items = lines[1:limit + 1] + ([f'and {len(lines) - 1 - limit} more'] if len(lines) - 1 > limit else [])
    return f"{lines[0]} {'; '.join(items)}"


def run_cli(body: Callable[[], Any], errors: Tuple[Type[BaseException], ...] = (),
            status: Optional[Dict[Type[BaseException], int]] = None) -> int:
    """Runs ``body()`` and returns a process exit status: 0, or, for a :class:`UserError` or one of ``errors``,
    prints ``error: <one line>`` on stderr and returns 2 (or ``status[type]`` for the types in ``status``).
    Set VITATTN_TRACEBACK=1 to get the traceback instead."""
    try:
        body()
    except (UserError, *errors) as e:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f'error: {one_line(e)}', file=sys.stderr)
        return next((code for kind, code in (status or {}).items() if isinstance(e, kind)), 2)
    return 0


def add_unsafe_load_argument(parser, input_name: str, help: Optional[str] = None) -> None:
    """Adds ``--unsafe-load`` (the opt-in to the full unpickler) to an argparse ``parser``; ``input_name`` is the
    metavar of the checkpoint it applies to, ``help`` replaces the default help text."""
    parser.add_argument('--unsafe-load', action='store_true', help=help or (
        f'allow the full unpickler when {input_name} holds more than tensors and plain values (e.g. '
        "mmengine's message hub); only for files you trust"))


def require_file(path: str) -> None:
    """Raises :class:`UserError` unless ``path`` is an existing file."""
    if not os.path.isfile(path):
        raise UserError(f'{path}: no such file' if not os.path.exists(path) else f'{path} is not a file')


def _unreadable(path: str, e: Exception) -> UserError:
    return UserError(f'{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {one_line(e)[:200]})')


def load_checkpoint(path: str, unsafe: bool = False, safetensors: bool = False,
                    trusted_example: Optional[str] = None):
    """Reads a checkpoint on the CPU with torch's safe loader, or the full one if ``unsafe`` (``--unsafe-load``).

    With ``safetensors``, a ``.safetensors`` file is read with safetensors. A file the safe loader refuses raises
    :class:`UserError` that asks for ``--unsafe-load`` (naming ``trusted_example`` as a file one may trust).
    """
    import torch
    if safetensors and path.endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            return load_file(path, device='cpu')
        except Exception as e:  # noqa: BLE001  (any reader error means: not a usable file)
            raise UserError(f'cannot read {path} as safetensors: {one_line(e)[:200]}') from e
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001  (any reader error means: not a usable file)
        blocked = re.search(r'Unsupported global: GLOBAL ([\w.]+)', str(e))
        if blocked is None:
            raise _unreadable(path, e) from e
        if not unsafe:
            example = f' (e.g. {trusted_example})' if trusted_example else ''
            raise UserError(f"{path} holds Python objects that torch's safe loader refuses ({blocked.group(1)}); "
                            f'if you trust the file{example}, re-run with --unsafe-load') from e
    print(f'warning: loading {path} with the full unpickler (--unsafe-load)', file=sys.stderr)
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, e) from e


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


def save_atomic(checkpoint, dst: str, check: Optional[Callable[[str], Any]] = None,
                final_path: Optional[Callable[[str], str]] = None) -> str:
    """``torch.save`` into a hidden temporary file next to ``dst`` (creating its folder), then ``check(tmp)``, then
    renames it to ``final_path(tmp)`` (default ``dst``) and returns that path. On any error nothing is left."""
    import torch
    out_dir = os.path.dirname(os.path.abspath(dst))
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f'.{os.path.basename(dst)}.tmp')
    try:
        torch.save(checkpoint, tmp)
        if check is not None:
            check(tmp)
        final = final_path(tmp) if final_path is not None else dst
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return final
