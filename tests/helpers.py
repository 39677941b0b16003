"""Running the project's command-line tools from tests, as a user would."""
import glob
import importlib
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# --cfg-options that switch the validation loop off (short runs that test training mechanics only)
NO_VALIDATION = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']


def use_analysis_tools() -> None:
    """Makes the modules under tools/analysis (``backbone_bench``, ``profile_train_step``, ...) importable."""
    path = osp.join(ROOT, 'tools', 'analysis')
    if path not in sys.path:
        sys.path.insert(0, path)


def read_doc(path: str) -> str:
    """A file of the repository (e.g. ``docs/results.md``), as text."""
    with open(osp.join(ROOT, path), encoding='utf-8') as f:
        return f.read()


def run_tool(args, timeout=900, env=None, check=True):
    """Runs ``python <args>`` (or ``bash <script> ...`` for .sh) in the repository root; returns the process."""
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', PYTHON=sys.executable, **(env or {}))
    cmd = ['bash', *args] if args[0].endswith('.sh') else [sys.executable, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-5000:]}')
    return proc


def last_metrics(work_dir):
    """The last line with evaluation metrics in mmengine's scalars.json of a work dir."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    assert files, f'no scalars.json under {work_dir}'
    metrics = {}
    for path in files:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if any(k.startswith(('coco/', 'mIoU', 'aAcc', 'accuracy/')) for k in row):
                    metrics = row
    return metrics


def train_losses(work_dir):
    """The logged training rows (iteration, losses) of a work dir."""
    rows = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            rows += [r for r in map(json.loads, f) if 'loss' in r]
    return rows


def printed_metric(output: str, name: str) -> float:
    """The value of ``name`` in the last metrics line that mmengine printed."""
    values = re.findall(re.escape(name) + r': (-?[0-9.]+)', output)
    assert values, f'{name} not printed:\n{output[-2000:]}'
    return float(values[-1])


def logged_iterations(output: str):
    """The training iterations that mmengine's logger printed (``Iter(train) [ 3/4]``), in order."""
    return [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/\d+\]', output)]


def interrupted_work_dir(full_dir: str, work_dir: str, iteration: int) -> None:
    """``work_dir`` as a run stopped right after saving iteration ``iteration`` leaves it: that checkpoint (copied
    from an uninterrupted run with the same settings, which saved it on the way) and mmengine's
    ``last_checkpoint`` pointing at it, which ``tools/train.py --resume`` reads."""
    os.makedirs(work_dir, exist_ok=True)
    ckpt = osp.join(work_dir, f'iter_{iteration}.pth')
    shutil.copyfile(osp.join(full_dir, f'iter_{iteration}.pth'), ckpt)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(ckpt)


def registry_of(scope: str):
    """The MODELS registry of a config's ``default_scope`` (mmdet, mmseg or mmpretrain)."""
    if scope not in ('mmdet', 'mmseg', 'mmpretrain'):
        raise AssertionError(f'unknown default_scope {scope!r}')
    return importlib.import_module(f'{scope}.registry').MODELS
