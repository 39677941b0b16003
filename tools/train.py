"""Train a detector (mmdet), segmentor (mmseg) or classifier (mmpretrain) from a config; the toolbox follows from
the config.

    python tools/train.py configs/lavit/maskrcnn_lavit_s_coco.py [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from vitattn_mm.utils.run import build_runner, load_config, report_and_exit  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector, segmentor or classifier')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from CKPT, or without a value from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr to the actual batch size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. train_cfg.max_iters=100')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    with report_and_exit():
        cfg = load_config(args.config, args.cfg_options, work_dir=args.work_dir, launcher=args.launcher)
        if args.amp:
            if not torch.cuda.is_available():
                raise ValueError("--amp needs a GPU: mmengine's AmpOptimWrapper (float16 with loss scaling) runs "
                                 'on CUDA/NPU/MLU/MUSA devices only; on the CPU, train without --amp')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        if args.auto_scale_lr:
            cfg.auto_scale_lr = dict(cfg.get('auto_scale_lr', {}), enable=True)
        if args.resume == 'auto':
            cfg.resume, cfg.load_from = True, None
        elif args.resume:
            cfg.resume, cfg.load_from = True, args.resume
        runner = build_runner(cfg, phases=('train_dataloader', 'val_dataloader'))
        runner.train()


if __name__ == '__main__':
    main()
