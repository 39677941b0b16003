"""What the docs promise about checkpoints and resuming (docs/train_and_evaluate.md, reuse.md,
model_converters.md): both documented ways to point a backbone at a checkpoint load it (a ``None`` init_cfg
included, a training checkpoint through the safe loader), a bad ``--cfg-options`` is one line and exit status 2, and
every rank gets its own random state back on resume (two gloo processes)."""
import os.path as osp

import torch
from helpers import ROOT, registry_of

SCRATCH = 'configs/lavit/maskrcnn_lavit_s-scratch_coco.py'


def _build_backbone(cfg):
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.default_scope)
    return registry_of(cfg.default_scope).build(cfg.model.backbone)


def test_both_ways_to_point_a_backbone_at_a_checkpoint(tmp_path):
    """docs/train_and_evaluate.md, reuse.md, model_converters.md: ``--cfg-options ...init_cfg.type=Pretrained ...``
    onto ``init_cfg=None`` and ``init_cfg=dict(_delete_=True, ...)`` in a child config both load the file, a plain
    backbone checkpoint and (with ``prefix='backbone.'``) a training checkpoint written with ResumableCheckpointHook,
    which torch's safe loader reads."""
    import types

    from mmengine.config import Config
    from mmengine.logging import HistoryBuffer, MMLogger

    from vitattn_mm.engine import ResumableCheckpointHook
    from vitattn_mm.utils.run import load_config
    source = _build_backbone(load_config(osp.join(ROOT, SCRATCH), {'model.backbone.arch': 't'}))
    state = {k: v + 0.01 for k, v in source.state_dict().items()}
    plain = str(tmp_path / 'lavit_t.pth')
    torch.save(state, plain)
    # a checkpoint as training writes it: model state under 'backbone.', message hub with HistoryBuffers
    training = {'meta': {'iter': 2}, 'state_dict': {f'backbone.{k}': v for k, v in state.items()},
                'message_hub': {'log_scalars': {'train/loss': HistoryBuffer([1.0, 0.5], [1, 1])}}}
    ResumableCheckpointHook().before_save_checkpoint(
        types.SimpleNamespace(logger=MMLogger.get_current_instance()), training)
    trained = str(tmp_path / 'iter_2.pth')
    torch.save(training, trained)
    torch.load(trained, map_location='cpu', weights_only=True)  # the safe loader reads it

    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = '{osp.join(ROOT, SCRATCH)}'\n"
                     f"model = dict(backbone=dict(arch='t', init_cfg=dict(_delete_=True, type='Pretrained', "
                     f"checkpoint='{trained}', prefix='backbone.')))\n")
    ways = {
        'cfg-options': load_config(osp.join(ROOT, SCRATCH), {
            'model.backbone.arch': 't', 'model.backbone.init_cfg.type': 'Pretrained',
            'model.backbone.init_cfg.checkpoint': plain}),
        'child config with prefix': Config.fromfile(str(child)),
    }
    for way, cfg in ways.items():
        backbone = _build_backbone(cfg)
        backbone.init_weights()
        loaded = backbone.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in state.items()), f'{way}: weights not loaded'


def test_bad_cfg_option_is_one_line_and_exit_status_2():
    """A checkpoint without a type onto init_cfg=None: one clear line from tools/train.py, exit status 2."""
    from helpers import run_tool
    proc = run_tool(['tools/train.py', SCRATCH, '--cfg-options', 'model.backbone.init_cfg.checkpoint=x.pth'],
                    check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith('error:')]
    assert len(errors) == 1 and 'model.backbone.init_cfg is None' in errors[0] and 'type' in errors[0], proc.stderr
    assert 'Traceback' not in proc.stderr


def _rank_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One process of test_resume_restores_each_ranks_random_state."""
    import random
    import types

    import numpy as np
    import torch.distributed as dist
    from mmengine.logging import MMLogger

    from vitattn_mm.engine import ResumableCheckpointHook
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    runner = types.SimpleNamespace(logger=MMLogger.get_instance(f'rank{rank}'))
    random.seed(rank)
    np.random.seed(rank)
    torch.manual_seed(rank)
    hook = ResumableCheckpointHook()
    hook.after_train_iter(runner, 0)  # every rank hands its state to the others
    path = osp.join(out_dir, 'ckpt.pth')
    if rank == 0:  # mmengine writes checkpoints on rank 0 only
        checkpoint = {'message_hub': {}}
        hook.before_save_checkpoint(runner, checkpoint)
        torch.save(checkpoint, path)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    for _ in range(5):  # the run goes on, then is interrupted
        random.random(), np.random.rand(), torch.rand(1)
    dist.barrier()
    hook.after_load_checkpoint(runner, torch.load(path, map_location='cpu', weights_only=True))
    got = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    torch.save(dict(expected=expected, got=got), osp.join(out_dir, f'rank{rank}.pth'))
    dist.destroy_process_group()


def test_resume_restores_each_ranks_random_state(tmp_path):
    """Two gloo processes with different random states: after a resume each gets its own state back (the docs'
    exact-resume promise under DDP). Runtime ~10 s (two fresh processes)."""
    import torch.multiprocessing as mp
    mp.spawn(_rank_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(str(tmp_path / f'rank{r}.pth'), weights_only=True) for r in range(2)]
    for rank, res in enumerate(results):
        assert res['got'] == res['expected'], f'rank {rank} did not get its own random state back'
    assert results[0]['expected'] != results[1]['expected'], 'the two ranks should have had different states'
    # resumed in one process: rank 0's state, with a warning about the other world size
    import types

    from mmengine.logging import MMLogger

    from vitattn_mm.engine import ResumableCheckpointHook
    checkpoint = torch.load(str(tmp_path / 'ckpt.pth'), map_location='cpu', weights_only=True)
    assert len(checkpoint['random_state']['ranks']) == 2
    messages = []
    logger = types.SimpleNamespace(warning=messages.append)
    ResumableCheckpointHook().after_load_checkpoint(types.SimpleNamespace(logger=logger), checkpoint)
    assert torch.rand(1).item() == results[0]['expected'][2] and 'holds the random state of 2' in messages[0]
