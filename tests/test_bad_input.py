"""Bad config values through tools/train.py: exit status 2 and one clear line naming the problem, no traceback.

Each case is one run of the tool as a user would start it (a subprocess, ~8 s of imports), so there are three: a
value the backbone rejects at construction (unknown arch), one rejected by the shared checks (out_indices), and a
pretrained checkpoint of another model (rejected when the runner initialises the weights, after the data is
loaded)."""
import pytest
import torch
from helpers import NO_VALIDATION, run_tool

from vitattn_mm.datasets.shapes import ensure_coco

CONFIG = 'configs/lavit/maskrcnn_lavit_s_shapes.py'


@pytest.fixture(scope='module')
def tiny_coco(tmp_path_factory):
    """A shapes set of 2 training images (the tool checks and loads the data before it initialises weights)."""
    return ensure_coco(tmp_path_factory.mktemp('bad_input') / 'shapes_coco', num_train=2, num_val=1)


def error_of_train(tiny_coco, tmp_path, *options):
    proc = run_tool(['tools/train.py', CONFIG, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                     f'train_dataloader.dataset.data_root={tiny_coco}/', 'train_cfg.max_iters=1',
                     'model.backbone.drop_path_rate=0.0', *NO_VALIDATION, *options], timeout=600, check=False)
    assert proc.returncode == 2, f'exit status {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize('option, words', [
    ('model.backbone.arch=xl', ['ValueError', "unknown LaViT arch 'xl'", "['b', 's', 't']"]),
    ('model.backbone.out_indices=[0,4]', ['ValueError', 'out_indices', '0..3', '[0, 4]']),
])
def test_bad_backbone_value(tiny_coco, tmp_path, option, words):
    line = error_of_train(tiny_coco, tmp_path, option)
    assert all(w in line for w in words), line


def test_checkpoint_of_another_model(tiny_coco, tmp_path):
    """A CB-ViT (plain ViT) backbone checkpoint given to the LaViT config."""
    from vitattn_mm import CBViT
    wrong = tmp_path / 'cbvit_deit-t.pth'
    state = CBViT(arch=dict(embed_dims=32, depth=1, num_heads=1, mlp_ratio=1.0)).state_dict()
    torch.save({'state_dict': state}, wrong)
    line = error_of_train(tiny_coco, tmp_path, 'model.backbone.init_cfg.type=Pretrained',
                          f'model.backbone.init_cfg.checkpoint={wrong}')
    assert 'CheckpointMismatchError' in line and str(wrong) in line and 'has no key of LaViT' in line, line


def test_amp_without_a_gpu_is_one_clear_line(capsys, tmp_path):
    """mmengine's AmpOptimWrapper asserts a GPU; tools/train.py says so in one line, exit status 2 (in-process: the
    check comes before any model is built)."""
    import importlib.util
    import os.path as osp

    from helpers import ROOT
    if torch.cuda.is_available():
        pytest.skip('with a GPU, --amp trains (mmengine AmpOptimWrapper)')
    spec = importlib.util.spec_from_file_location('vitattn_train_tool', osp.join(ROOT, 'tools', 'train.py'))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    with pytest.raises(SystemExit) as exit_info:
        train.main([osp.join(ROOT, CONFIG), '--amp', '--work-dir', str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err and 'error: ValueError: --amp needs a GPU' in err, err
