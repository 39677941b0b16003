#!/usr/bin/env python
"""Side-by-side cost of LaViT / CB-ViT and their peers (PVTv2-b1/b2/b3, Swin-T) on the CPU.

For every model and input size, in one run: parameters, GFLOPs (multiply-accumulates x 1e-9, counted at the aten
level with ``torch.utils.flop_counter.FlopCounterMode``), aten calls per forward, median latency (batch 1,
``torch.no_grad()``, models timed round-robin so that machine noise hits all of them alike) and peak memory (a
fresh subprocess per model and size: the rise of the process's peak resident set size during one forward pass).
Also: a training-step benchmark (forward + backward with LaViT's ``loss_dp``: time and peak memory), latency
against input size (a PNG), a micro-benchmark of one stage-1 attention layer of LaViT-S and its stage carry,
Mix-FFN variants, optionally ``torch.compile`` of whole backbones, and the targets of issue 10 with margins.

Examples::

    python tools/analysis/benchmark_backbones.py --sizes 256x256 --repeats 2 --skip-train --skip-curve  # smoke
    python tools/analysis/benchmark_backbones.py --warmup 1 --repeats 5 --profile lavit-s pvtv2-b2 \\
        --out docs/benchmarks.md --json docs/benchmarks.json --png docs/benchmarks_latency.png

Sizes are given as HEIGHTxWIDTH (``800x1333`` is the 1333x800 detection input), training sizes as
BATCHxHEIGHTxWIDTH. ``--out`` replaces the part of the markdown file between the ``benchmark_backbones`` markers
(or writes a new file), so prose around it survives. The pieces live in ``tools/analysis/backbone_bench/``
(``zoo``: models; ``measure``/``micro``: measurements; ``report``: targets, tables, PNG).
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
for path in (REPO_ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

warnings.filterwarnings('ignore', category=FutureWarning)
warnings.filterwarnings('ignore', category=UserWarning)

import torch  # noqa: E402

from backbone_bench.measure import (_peak_rss_kib, _proc_status_kib, _reset_peak_rss, count_flops,  # noqa: E402,F401
                                    measure_memory, memory_worker, module_time_breakdown, operator_profile,
                                    paired_aux_loss_steps, time_round_robin, train_step, verify_flop_counter)
from backbone_bench.micro import attention_micro_benchmark, compile_benchmark, mixffn_benchmark  # noqa: E402
from backbone_bench.report import (MARK_BEGIN, MARK_END, evaluate_targets, machine_description,  # noqa: E402,F401
                                   plot_latency_curve, render_markdown, write_markdown)
from backbone_bench.zoo import (CURVE_MODELS, CURVE_SIZES, DETECTION_SIZE, MODEL_ZOO, REFERENCE,  # noqa: E402,F401
                                TRAIN_ZOO, build_model, count_params, image, parse_batch_size, parse_size,
                                quiet_mm_logger, size_str)

_quiet_mm_logger = quiet_mm_logger  # the name other tools use


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=list(MODEL_ZOO), choices=list(MODEL_ZOO), metavar='MODEL',
                   help=f'subset of: {", ".join(MODEL_ZOO)}')
    p.add_argument('--sizes', nargs='+', type=parse_size, default=[(800, 1333), (512, 512)],
                   help='input sizes HEIGHTxWIDTH (default: 800x1333 512x512)')
    p.add_argument('--warmup', type=int, default=1, help='untimed rounds per size (default 1)')
    p.add_argument('--repeats', type=int, default=5, help='timed rounds per size (default 5)')
    p.add_argument('--threads', type=int, default=2, help='torch intra-op threads (default 2)')
    p.add_argument('--micro-size', type=parse_size, default=(800, 1333),
                   help='image size HxW whose stage-1 attention and Mix-FFN the micro-benchmarks time '
                        '(default 800x1333)')
    p.add_argument('--micro-repeats', type=int, default=7, help='timed rounds of the micro-benchmarks')
    p.add_argument('--train-sizes', nargs='+', type=parse_batch_size, default=[(2, (512, 512)), (1, (800, 1333))],
                   help='training-step benchmark sizes BATCHxHEIGHTxWIDTH (default: 2x512x512 1x800x1333)')
    p.add_argument('--train-models', nargs='+', default=list(TRAIN_ZOO), choices=list(TRAIN_ZOO), metavar='MODEL',
                   help=f'training-step models, subset of: {", ".join(TRAIN_ZOO)}')
    p.add_argument('--train-repeats', type=int, default=3, help='timed training steps per model and size')
    p.add_argument('--dp-pairs', type=int, default=6,
                   help="LaViT-S training steps with and without loss_dp, same model, in this many alternating "
                        "back-to-back pairs per training size: the DP loss's share of the step (default 6; 0: the "
                        "share is not measured)")
    p.add_argument('--curve-sizes', nargs='+', type=parse_size, default=list(CURVE_SIZES),
                   help='sizes HxW of the latency-against-size curve (default 256x256 ... 800x1333)')
    p.add_argument('--curve-repeats', type=int, default=3, help='timed rounds per curve size')
    p.add_argument('--png', type=Path, help='write the latency-against-size curve to this PNG')
    p.add_argument('--profile', nargs='*', default=[], choices=list(MODEL_ZOO), metavar='MODEL',
                   help='also profile these models (operators and module kinds) at the first size')
    p.add_argument('--compile', nargs='*', default=[], choices=list(MODEL_ZOO), metavar='MODEL',
                   help='also time torch.compile (inductor) of these backbones at the last size, and of the '
                        'Mix-FFN (slow: compiles C++)')
    p.add_argument('--skip-memory', action='store_true', help='no memory subprocesses')
    p.add_argument('--skip-micro', action='store_true', help='no attention and Mix-FFN micro-benchmarks')
    p.add_argument('--skip-flops', action='store_true', help='no FLOP counting')
    p.add_argument('--skip-train', action='store_true', help='no training-step benchmark')
    p.add_argument('--skip-curve', action='store_true', help='no latency-against-size curve')
    p.add_argument('--out', type=Path, help='markdown file to write the report to')
    p.add_argument('--section', default='main',
                   help='name of the generated section of --out to replace (several runs can share one file)')
    p.add_argument('--json', type=Path, help='JSON file for the raw numbers (also written after every phase)')
    p.add_argument('--resume', action='store_true',
                   help='go on with the phases missing from --json (an interrupted run with the same settings)')
    p.add_argument('--report-only', action='store_true',
                   help='measure nothing: render the report (--out) from the raw numbers in --json (e.g. of an '
                        'interrupted run)')
    p.add_argument('--memory-worker', help=argparse.SUPPRESS)
    p.add_argument('--memory-train-batch', type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _load_resume(args, path: Path) -> Optional[dict]:
    """Results of an interrupted run with the same settings, or None."""
    if not path.exists():
        return None
    old = json.loads(path.read_text(), object_pairs_hook=OrderedDict)
    same = dict(models=args.models, sizes=[size_str(s) for s in args.sizes], warmup=args.warmup,
                repeats=args.repeats, threads=args.threads)
    if old.get('args') != same:
        raise SystemExit(f'--resume: {path} was written with {old.get("args")}, this run has {same}')
    return old


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.sizes[0], args.memory_train_batch)))
        return {}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def save() -> None:
        """Raw numbers after every phase, so that an interrupted run can go on with --resume."""
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(args.json.suffix + '.tmp')
            tmp.write_text(json.dumps(results, indent=1, default=str))
            tmp.replace(args.json)

    def sample_load() -> None:
        results.setdefault('load_during', []).append(os.getloadavg()[0])

    if args.report_only:
        if not args.json or not args.json.exists():
            raise SystemExit('--report-only needs --json FILE with the raw numbers of a run')
        results = json.loads(args.json.read_text(), object_pairs_hook=OrderedDict)
        results.setdefault('load_after', list(os.getloadavg()))
        results['targets'] = evaluate_targets(results)
        report = render_markdown(results)
        print(report)
        if args.out:
            write_markdown(args.out, report, args.section)
        return results

    command = 'python ' + ' '.join([os.path.relpath(__file__, REPO_ROOT)] + (sys.argv[1:] if argv is None
                                                                              else list(argv)))
    results = _load_resume(args, args.json) if args.resume and args.json else None
    if results is not None:
        log(f'resuming from {args.json}')
        results.setdefault('resumed', []).append(dict(date=datetime.datetime.now().isoformat(timespec='seconds'),
                                                      load=list(os.getloadavg())))
    else:
        results = OrderedDict(
            date=datetime.datetime.now().isoformat(timespec='seconds'), command=command,
            machine=machine_description(args.threads), load_before=list(os.getloadavg()),
            args=dict(models=args.models, sizes=[size_str(s) for s in args.sizes], warmup=args.warmup,
                      repeats=args.repeats, threads=args.threads),
            params_m={}, per_size=OrderedDict((size_str(s), OrderedDict((n, {}) for n in args.models))
                                              for s in args.sizes))

    log(f'building {len(args.models)} models')
    models = OrderedDict((name, build_model(name)) for name in args.models)
    for name, model in models.items():
        results['params_m'][name] = count_params(model) / 1e6

    if not args.skip_flops:
        if 'flop_verification' not in results:
            log('checking the FLOP counter on single attention modules')
            results['flop_verification'] = verify_flop_counter()
        for size in args.sizes:
            x = image(size)
            for name, model in models.items():
                entry = results['per_size'][size_str(size)][name]
                if 'gmacs' in entry:
                    continue
                log(f'counting FLOPs: {name} at {size_str(size)}')
                res = count_flops(lambda: model(x))
                entry['gmacs'] = res['macs'] / 1e9
                entry['gmacs_by_op'] = {k: v / 1e9 for k, v in res['macs_by_op'].items()}
                entry['uncounted_matmul_like_ops'] = res['uncounted_matmul_like_ops']
                entry['aten_calls'] = res['aten_calls']
            save()

    if not args.skip_memory:
        for size in args.sizes:
            for name in args.models:
                entry = results['per_size'][size_str(size)][name]
                if 'memory' in entry:
                    continue
                log(f'memory (fresh process): {name} at {size_str(size)}')
                entry['memory'] = measure_memory(name, size, args.threads)
                save()

    for size in args.sizes:
        per_model = results['per_size'][size_str(size)]
        if all('latency_s' in per_model[n] for n in args.models):
            continue
        log(f'latency at {size_str(size)}: {args.warmup} warm-up + {args.repeats} round-robin rounds')
        x = image(size)
        fns = OrderedDict((name, (lambda m=model: m(x))) for name, model in models.items())
        times = time_round_robin(fns, args.warmup, args.repeats, log=log)
        for name, t in times.items():
            per_model[name]['latency_s'] = t
            per_model[name]['latency_median_s'] = statistics.median(t)
        sample_load()
        save()

    if not args.skip_micro:
        if 'micro' not in results:
            log(f'attention micro-benchmark (stage 1 of LaViT-S at {size_str(args.micro_size)})')
            results['micro'] = attention_micro_benchmark(args.micro_size, 1, args.micro_repeats, log=log)
            sample_load()
            save()
        if 'mixffn' not in results:
            log(f'Mix-FFN variants (stage 1 at {size_str(args.micro_size)})')
            results['mixffn'] = mixffn_benchmark(args.micro_size, 1, args.micro_repeats,
                                                 compile_ffn=bool(args.compile), log=log)
            sample_load()
            save()

    if not args.skip_train:
        del models  # the eval models' memory
        results.setdefault('train', OrderedDict())
        for batch, size in args.train_sizes:
            key = f'{batch}x{size_str(size)}'
            if key in results['train'] and all('step_s' in r for r in results['train'][key]['models'].values()):
                continue
            log(f'training steps at {key}')
            entry = OrderedDict(warmup=1, repeats=args.train_repeats, models=OrderedDict(
                (n, dict(label=TRAIN_ZOO[n][0])) for n in args.train_models))
            if not args.skip_memory:
                for name in args.train_models:
                    log(f'  training-step memory (fresh process): {name}')
                    entry['models'][name]['memory'] = measure_memory(name, size, args.threads, train_batch=batch)
            train_models = OrderedDict((n, build_model(n, train=True)) for n in args.train_models)
            x = image(size, batch=batch)
            fns = OrderedDict((n, (lambda m=m: train_step(m, x))) for n, m in train_models.items())
            times = time_round_robin(fns, 1, args.train_repeats, log=log, grad=True)
            for name, t in times.items():
                entry['models'][name]['step_s'] = t
                entry['models'][name]['step_median_s'] = statistics.median(t)
            if args.dp_pairs and 'lavit-s' in train_models:
                log(f'  LaViT-S with and without loss_dp, {args.dp_pairs} pairs')
                entry['dp_pairs'] = paired_aux_loss_steps(train_models['lavit-s'], x, args.dp_pairs)
            del train_models
            results['train'][key] = entry
            sample_load()
            save()
        models = OrderedDict((name, build_model(name)) for name in args.models)

    if not args.skip_curve and 'curve' not in results:
        curve = OrderedDict(models=list(CURVE_MODELS), sizes=[size_str(s) for s in args.curve_sizes],
                            latency=OrderedDict(), repeats=args.curve_repeats)
        curve_models = OrderedDict((n, build_model(n)) for n in CURVE_MODELS)
        for size in args.curve_sizes:
            log(f'latency curve at {size_str(size)}')
            x = image(size)
            fns = OrderedDict((n, (lambda m=m: m(x))) for n, m in curve_models.items())
            times = time_round_robin(fns, 1, args.curve_repeats, log=log)
            curve['latency'][size_str(size)] = {n: statistics.median(t) for n, t in times.items()}
        del curve_models
        if args.png:
            plot_latency_curve(curve, args.png, results['machine'])
            curve['png'] = os.path.relpath(args.png, args.out.parent) if args.out else str(args.png)
            log(f'wrote {args.png}')
        results['curve'] = curve
        sample_load()
        save()

    if args.compile and 'compile' not in results:
        log(f'torch.compile of {", ".join(args.compile)} at {size_str(args.sizes[-1])}')
        results['compile'] = compile_benchmark(args.compile, args.sizes[-1], 1, args.repeats, log=log)
        save()

    if args.profile:
        results.setdefault('profiles', {})
        size = args.sizes[0]
        x = image(size)
        for name in args.profile:
            if name in results['profiles']:
                continue
            log(f'profiling {name} at {size_str(size)}')
            model = models[name] if name in models else build_model(name)
            results['profiles'][name] = dict(size=size_str(size), modules=module_time_breakdown(model, x),
                                             operators=operator_profile(model, x))
            save()

    results['load_after'] = list(os.getloadavg())
    results['targets'] = evaluate_targets(results)
    save()
    report = render_markdown(results)
    print(report)
    if args.out:
        write_markdown(args.out, report, args.section)
        log(f'wrote {args.out}')
    if args.json:
        log(f'wrote {args.json}')
    return results


if __name__ == '__main__':
    main()
