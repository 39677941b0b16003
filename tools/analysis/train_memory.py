#!/usr/bin/env python
"""Peak memory of one training step (forward + backward) of a backbone, per image, with and without ``with_cp``.

Measured on the CPU (this is what can be measured without a GPU): in a fresh process per case, the rise of the
process's peak resident set size during ``forward + backward`` of batch 1 in training mode, relative to the
resident size right before (model and input already resident). It includes the activations kept for backward, the
gradients and the temporary buffers of the CPU kernels. On a GPU the same step also needs the CUDA context, the
allocator's cache and cuDNN workspaces, so these numbers are a lower-bound estimate of the *activation* memory per
image, not a GPU measurement. On a machine with a GPU, ``--device cuda`` measures ``torch.cuda.max_memory_allocated``
instead.

    python tools/analysis/train_memory.py                                   # the table in docs/train_and_evaluate.md
    python tools/analysis/train_memory.py --models lavit-s --sizes 512x512 --with-cp off on

The peak-memory helpers and the input are those of ``tools/analysis/benchmark_backbones.py``.
"""
import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
for path in (REPO_ROOT, Path(__file__).resolve().parent):  # the package; the benchmark tool beside us
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


import benchmark_backbones as bench  # noqa: E402


def build(name: str, with_cp: bool) -> torch.nn.Module:
    """The backbones of our headline configs (training settings: drop path 0.1, LaViT's DP loss on)."""
    bench._quiet_mm_logger()
    if name in ('lavit-t', 'lavit-s', 'lavit-b'):
        from vitattn_mm import LaViT
        model = LaViT(arch=name[-1], drop_path_rate=0.1, with_cp=with_cp, init_cfg=None,
                      dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.1))
    elif name == 'cbvit-s':
        from vitattn_mm import CBViT
        model = CBViT(arch='deit-s', drop_path_rate=0.1, with_cp=with_cp, init_cfg=None)
    elif name == 'pvtv2-b2':
        from mmdet.models.backbones import PyramidVisionTransformerV2
        if with_cp:
            raise ValueError("mmdet's PyramidVisionTransformerV2 has no with_cp")
        model = PyramidVisionTransformerV2(embed_dims=64, num_layers=[3, 4, 6, 3], drop_path_rate=0.1,
                                           init_cfg=None)
    elif name == 'swin-t':
        from mmdet.models.backbones import SwinTransformer
        model = SwinTransformer(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                drop_path_rate=0.2, with_cp=with_cp, init_cfg=None)
    else:
        raise ValueError(f'unknown model {name!r}; choose from {MODELS}')
    model.init_weights()
    model.train()
    return model


MODELS = ('lavit-t', 'lavit-s', 'lavit-b', 'cbvit-s', 'pvtv2-b2', 'swin-t')


def train_step(model, x) -> None:
    outs = model(x)
    loss = sum(o.float().mean() for o in outs)
    for aux in getattr(model, 'pop_auxiliary_losses', dict)().values():
        loss = loss + aux
    loss.backward()


def worker(name: str, size, with_cp: bool, device: str) -> dict:
    model = build(name, with_cp).to(device)
    x = bench.image(size).to(device)
    result = dict(model=name, size=bench.size_str(size), with_cp=with_cp, device=device,
                  params_m=sum(p.numel() for p in model.parameters()) / 1e6)
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        train_step(model, x)
        torch.cuda.synchronize()
        result['step_increase_mib'] = (torch.cuda.max_memory_allocated() - before) / 2**20
        return result
    gc.collect()
    reset = bench._reset_peak_rss()
    before = bench._proc_status_kib('VmRSS')
    train_step(model, x)
    result['step_increase_mib'] = (bench._peak_rss_kib() - before) / 1024
    result['peak_reset'] = reset
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', default=['lavit-s', 'cbvit-s', 'pvtv2-b2'], choices=MODELS,
                   metavar='MODEL', help=f'any of {" ".join(MODELS)} (default: lavit-s cbvit-s pvtv2-b2)')
    p.add_argument('--sizes', nargs='+', type=bench.parse_size, default=[(800, 1333), (512, 512)],
                   help='HEIGHTxWIDTH (default 800x1333 512x512)')
    p.add_argument('--with-cp', nargs='+', choices=('off', 'on'), default=['off', 'on'],
                   help='activation checkpointing off, on or both (default both)')
    p.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    p.add_argument('--json', type=Path, help='also write the rows to this JSON file')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        name, cp = args.worker.split(':')
        print(json.dumps(worker(name, args.sizes[0], cp == 'on', args.device)))
        return []
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for size in args.sizes:
        for name in args.models:
            for cp in args.with_cp:
                if name == 'pvtv2-b2' and cp == 'on':
                    continue
                cmd = [sys.executable, __file__, '--worker', f'{name}:{cp}', '--sizes', bench.size_str(size),
                       '--threads', str(args.threads), '--device', args.device]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
                if proc.returncode or not lines:
                    raise SystemExit(f'{name} {cp} at {bench.size_str(size)} failed:\n{proc.stderr[-2000:]}')
                rows.append(json.loads(lines[-1]))
                print(f'{name:9s} {bench.size_str(size):9s} with_cp={cp:3s} '
                      f'{rows[-1]["step_increase_mib"]:8.0f} MiB', file=sys.stderr, flush=True)
    print('| backbone | input (HxW) | with_cp | peak rise, forward + backward, batch 1 (MiB) |')
    print('|---|---|---|---:|')
    for r in rows:
        print(f'| {r["model"]} | {r["size"]} | {"on" if r["with_cp"] else "off"} | {r["step_increase_mib"]:.0f} |')
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == '__main__':
    main()
