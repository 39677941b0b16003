"""Compatibility fixes between pinned packages, kept in this one place (see docs/install.md)."""
import numpy as np
import torch


def allow_mmengine_checkpoint_globals() -> None:
    """Lets torch >= 2.6 load mmengine checkpoints with ``weights_only=True``.

    mmengine 0.10.7 writes numpy scalars and dtypes into a checkpoint's ``meta`` (e.g. the random seed) and loads
    checkpoints with torch's default ``weights_only=True`` since torch 2.6, which then fails with
    ``Unsupported global: numpy._core.multiarray.scalar``. We allow exactly those numpy types instead of switching
    the safe loader off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``). ``_reconstruct`` rebuilds numpy arrays, which
    mmengine's message hub holds; its ``HistoryBuffer`` objects themselves are stored as plain arrays by
    :class:`~vitattn_mm.engine.ResumableCheckpointHook` (their pickle needs ``getattr``, which we do not allow).
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 loads everything anyway
        return
    multiarray = np.core.multiarray if np.__version__.startswith('1.') else np._core.multiarray
    scalar = multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                                         np.uint64, np.uint32, np.uint16, np.uint8, np.bool_)]
    # a checkpoint written under numpy 1.x names `numpy.core...`, under numpy 2.x `numpy._core...`
    aliases = [(fn, f'{prefix}.multiarray.{fn.__name__}') for prefix in ('numpy.core', 'numpy._core')
               for fn in (scalar, multiarray._reconstruct)]
    add([np.dtype, np.ndarray, *dtypes, *aliases])
