"""Evaluate a checkpoint of a detector (mmdet), segmentor (mmseg) or classifier (mmpretrain); the toolbox follows
from the config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from mmengine.config import DictAction  # noqa: E402

from vitattn_mm.utils.run import build_runner, load_config, report_and_exit  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a detector, segmentor or classifier')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='draw predictions on the test images into this folder')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    with report_and_exit():
        cfg = load_config(args.config, args.cfg_options, work_dir=args.work_dir, launcher=args.launcher)
        cfg.load_from = args.checkpoint
        if args.show_dir:
            vis = cfg.default_hooks.visualization
            vis.interval = 1
            if cfg.default_scope == 'mmpretrain':  # its VisualizationHook: enable / out_dir
                vis.enable = True
                vis.out_dir = os.path.abspath(args.show_dir)
            elif cfg.default_scope == 'mmdet':
                vis.draw = True
                vis.test_out_dir = os.path.abspath(args.show_dir)
            else:
                vis.draw = True
                cfg.visualizer.save_dir = os.path.abspath(args.show_dir)
        if args.out:
            cfg.test_evaluator = [*(cfg.test_evaluator if isinstance(cfg.test_evaluator, list)
                                    else [cfg.test_evaluator]),
                                  dict(type='DumpResults', out_file_path=args.out)]
        runner = build_runner(cfg, phases=('test_dataloader', ))
        runner.test()


if __name__ == '__main__':
    main()
