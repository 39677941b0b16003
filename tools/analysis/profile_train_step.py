#!/usr/bin/env python
"""Where the time of one training iteration goes: data, backbone, neck, heads, backward, optimizer.

Builds the config's model, optimizer and training dataloader as ``tools/train.py`` would (real mmdet/mmseg/mmengine
parts; the backbone's auxiliary losses are merged as ``AuxiliaryLossHook`` does), then runs training iterations and
times each part:

- data: waiting for the next batch from the dataloader (its workers prepare batches in parallel);
- preprocess: the model's data preprocessor (normalisation, padding, batching);
- backbone / neck forward: their ``forward`` (forward hooks);
- heads forward: the rest of the loss forward (RPN and RoI heads with their target assignment and losses, or the
  decode heads);
- heads + neck backward: from the start of the backward pass until the gradients reach the backbone's outputs;
- backbone backward: from there to the end of the backward pass (the backbone runs first, so it is differentiated
  last; gradients of LaViT's ``loss_dp`` that enter inside the backbone are counted here too);
- optimizer: gradient clipping (if configured), the optimizer step and ``zero_grad``.

With several ``--threads`` values the settings take turns iteration by iteration (round-robin, one process), so
that a noisy machine affects them alike; medians are reported. ``--profile`` adds torch's operator table (self CPU
time) of one iteration.

    python tools/analysis/profile_train_step.py                         # the main job's config, 1 and 2 threads
    python tools/analysis/profile_train_step.py configs/lavit/maskrcnn_lavit_t_shapes.py --threads 1 --profile
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
for path in (REPO_ROOT, Path(__file__).resolve().parent):  # the package; the benchmark tool's report beside us
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

PARTS = ('data', 'preprocess', 'backbone forward', 'neck forward', 'heads forward', 'heads + neck backward',
         'backbone backward', 'optimizer')


class StepTimer:
    """Times the parts of one training iteration of a detector or segmentor (see the module docstring)."""

    def __init__(self, model):
        self.marks = {}
        self._handles = [model.backbone.register_forward_pre_hook(self._mark('backbone start')),
                         model.backbone.register_forward_hook(self._backbone_done)]
        neck = getattr(model, 'neck', None)
        if isinstance(neck, torch.nn.Module):
            self._handles += [neck.register_forward_pre_hook(self._mark('neck start')),
                              neck.register_forward_hook(self._mark('neck end'))]

    def _mark(self, name):
        def hook(*_):
            self.marks[name] = time.perf_counter()
        return hook

    def _backbone_done(self, module, inputs, outputs):
        self.marks['backbone end'] = time.perf_counter()
        tensors = [t for t in (outputs if isinstance(outputs, (tuple, list)) else [outputs])
                   if torch.is_tensor(t) and t.requires_grad]
        if tensors:  # fires once the gradients of all the backbone's outputs are there
            torch.autograd.graph.register_multi_grad_hook(tensors, self._mark('backbone backward start'))

    def parts(self, t) -> dict:
        m = self.marks
        backbone = m['backbone end'] - m['backbone start']
        neck = m['neck end'] - m['neck start'] if 'neck start' in m else 0.0
        bwd_split = m.get('backbone backward start', t['backward end'])
        return {
            'data': t['data end'] - t['start'],
            'preprocess': t['forward start'] - t['data end'],
            'backbone forward': backbone,
            'neck forward': neck,
            'heads forward': t['forward end'] - t['forward start'] - backbone - neck,
            'heads + neck backward': bwd_split - t['forward end'],
            'backbone backward': t['backward end'] - bwd_split,
            'optimizer': t['end'] - t['backward end'],
        }


def train_iteration(model, optim_wrapper, batches, timer):
    from vitattn_mm.engine.hooks import merge_auxiliary_losses
    timer.marks.clear()
    t = {'start': time.perf_counter()}
    data = next(batches)
    t['data end'] = time.perf_counter()
    data = model.data_preprocessor(data, True)
    t['forward start'] = time.perf_counter()
    losses = merge_auxiliary_losses(model, model(**data, mode='loss'))
    loss, _ = model.parse_losses(losses)
    t['forward end'] = time.perf_counter()
    optim_wrapper.backward(loss)
    t['backward end'] = time.perf_counter()
    optim_wrapper.step()
    optim_wrapper.zero_grad()
    t['end'] = time.perf_counter()
    return timer.parts(t)


def build(config: str, cfg_options):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from vitattn_mm.utils.dataset_check import check_config_datasets
    check_config_datasets(cfg, ('train_dataloader', ))
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    return cfg, model, optim_wrapper, loader


def endless(loader):
    while True:
        yield from loader


def main(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', default='configs/lavit/maskrcnn_lavit_s_shapes.py')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2], help='torch intra-op threads to compare')
    parser.add_argument('--warmup', type=int, default=3, help='untimed iterations per thread setting')
    parser.add_argument('--iters', type=int, default=8, help='timed iterations per thread setting')
    parser.add_argument('--profile', action='store_true', help="also print torch's operator table of one iteration")
    parser.add_argument('--top', type=int, default=20, help='rows of the operator table')
    parser.add_argument('--json', help='also write the medians to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='as for tools/train.py')
    args = parser.parse_args(argv)

    from backbone_bench.report import markdown_table

    from vitattn_mm.utils.machine import cpu_name
    from vitattn_mm.utils.run import report_and_exit
    torch.manual_seed(0)
    with report_and_exit():  # a missing dataset or a bad option: one paragraph and exit status 2, as tools/train.py
        cfg, model, optim_wrapper, loader = build(args.config, args.cfg_options)
    timer = StepTimer(model)
    batches = endless(loader)
    print(f'{args.config}: batch {cfg.train_dataloader.batch_size}, dataloader workers '
          f'{cfg.train_dataloader.get("num_workers", 0)}; CPU: {cpu_name()}', flush=True)
    samples = {n: [] for n in args.threads}
    for i in range(args.warmup + args.iters):
        for n in args.threads:  # round-robin
            torch.set_num_threads(n)
            parts = train_iteration(model, optim_wrapper, batches, timer)
            if i >= args.warmup:
                samples[n].append(parts)
    medians = {n: {p: statistics.median(s[p] for s in rows) for p in PARTS} for n, rows in samples.items()}
    for n in args.threads:
        medians[n]['total'] = statistics.median(sum(s.values()) for s in samples[n])

    print(f'\nmedian of {args.iters} iterations per setting (seconds; {cpu_name()})\n')
    rows = [[part] + [f'{medians[n][part]:.3f} ({100 * medians[n][part] / medians[n]["total"]:.0f}%)'
                      for n in args.threads] for part in PARTS]
    rows.append(['total'] + [f'**{medians[n]["total"]:.3f}**' for n in args.threads])
    print('\n'.join(markdown_table(['part'] + [f'{n} thread{"s" * (n > 1)}' for n in args.threads], rows)))

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        torch.set_num_threads(args.threads[-1])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_iteration(model, optim_wrapper, batches, timer)
        print(f'\noperators of one iteration, {args.threads[-1]} thread(s), by self CPU time:\n')
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=args.top))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(config=args.config, cpu=cpu_name(), medians=medians), f, indent=1)


if __name__ == '__main__':
    main()
