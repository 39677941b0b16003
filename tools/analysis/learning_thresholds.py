"""Measure what the learning tests' thresholds rest on: the shapes configs trained end to end and with the
backbone frozen at its random initialisation, over several seeds, with the numbers the tests use.

    python tools/analysis/learning_thresholds.py det  [--seeds 0 1 2] [--data-root DIR] [--json out.json]
    python tools/analysis/learning_thresholds.py seg  [--seeds 0 1 2] [--data-root DIR] [--json out.json]
    python tools/analysis/learning_thresholds.py cls  [--seeds 0 1 2] [--data-root DIR] [--json out.json]
    (--jobs N: runs at a time, default 2; each run uses one torch thread, like the learning tests;
     --cfg-options KEY=VALUE ...: more overrides for every run, to try a setting)

Each run is a real ``tools/train.py`` run with the same ``--cfg-options`` as the test (taken from
``tests/learning_setup.py``), evaluated at its last iteration. "frozen" adds ``model.backbone.frozen_stages=4``:
the neck and heads still learn, on features of an untrained backbone, which is the baseline a trained backbone
must beat. Prints a table (min / mean / max per variant and metric) and the wall time of each run (two runs at
a time share the CPU as the test suite's two workers do).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# the tests' learning setup, the package, and the benchmark tool's report beside us (also when loaded by file path)
for path in (osp.join(ROOT, 'tests'), ROOT, osp.dirname(osp.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

import learning_setup  # noqa: E402
from backbone_bench.report import markdown_table  # noqa: E402

from vitattn_mm.utils.machine import cpu_name  # noqa: E402


def last_eval(work_dir: str, keys) -> dict:
    from helpers import last_metrics
    metrics = last_metrics(work_dir)
    return {k: metrics[k] for k in keys}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('task', choices=sorted(learning_setup.TASKS))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--variants', nargs='+', default=['trained', 'frozen'], choices=['trained', 'frozen'])
    parser.add_argument('--data-root', help='where the shapes data is (generated there if missing; '
                        'default: a temporary folder)')
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (each uses one thread; default 2)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='more config overrides for every run (to try a setting before it goes into the config)')
    args = parser.parse_args(argv)

    setup = learning_setup.TASKS[args.task]
    with tempfile.TemporaryDirectory() as tmp:
        data_root = setup.prepare_data(args.data_root or osp.join(tmp, 'data'))

        def run(variant, seed):
            work_dir = osp.join(tmp, f'{variant}_{seed}')
            extra = list(learning_setup.FROZEN_BACKBONE) if variant == 'frozen' else []
            cmd = [sys.executable, 'tools/train.py', setup.config, '--work-dir', work_dir, '--cfg-options',
                   *setup.options(data_root, seed), *args.cfg_options, *extra]
            start = time.time()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                  env=dict(os.environ, PYTHONWARNINGS='ignore', **learning_setup.RUN_ENV))
            if proc.returncode:
                sys.exit(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
            row = dict(variant=variant, seed=seed, seconds=round(time.time() - start, 1),
                       **last_eval(work_dir, setup.metrics))
            print(json.dumps(row), flush=True)
            return row

        # each run uses one thread (learning_setup.RUN_ENV), so --jobs 2 uses both cores of a 2-core machine, as
        # the test suite's two workers do
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda vs: run(*vs), [(v, s) for v in args.variants for s in args.seeds]))

    print(f'\n{args.task}: {setup.config} {" ".join([*setup.options("DATA", "SEED"), *args.cfg_options])}')
    print(f'CPU: {cpu_name()}, {os.cpu_count()} logical CPUs\n')
    table = []
    for variant in args.variants:
        sel = [r for r in rows if r['variant'] == variant]
        secs = sum(r['seconds'] for r in sel) / len(sel)
        for key in setup.metrics:
            vals = [r[key] for r in sel]
            table.append((variant, key, f'{min(vals):.4g}', f'{sum(vals) / len(vals):.4g}', f'{max(vals):.4g}',
                          f'{secs:.0f}'))
    print('\n'.join(markdown_table(['variant', 'metric', 'min', 'mean', 'max', 'seconds per run (mean)'], table,
                                    align='llrrrr')))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(task=args.task, cpu=cpu_name(), rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
