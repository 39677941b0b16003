"""Model converters (tools/model_converters): timm -> CB-ViT, backbone extraction, publishing, run as a user would;
and the key report of a checkpoint that does not fit."""
import hashlib
import logging
import os.path as osp
import re

import numpy as np
import pytest
import timm
import torch
from conftest import TINY_LAVIT
from helpers import ROOT, run_tool
from mmengine.logging import MessageHub, MMLogger

from vitattn_mm import CBViT, LaViT
from vitattn_mm.models.utils import CheckpointMismatchError

TOOLS = 'tools/model_converters'


def error_line(proc):
    """The tool's one-line error; fails on a traceback or another exit status than 2."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith('error: '), proc.stderr
    return lines[-1]


def pretrained(checkpoint):
    return dict(type='Pretrained', checkpoint=str(checkpoint))


def detector_checkpoint(backbone_state, message_hub=False):
    """A checkpoint as mmengine's runner writes it: weights of backbone and neck, meta with numpy values,
    optimizer and scheduler state (and, as in real runs, the message hub)."""
    state = {f'backbone.{k}': v for k, v in backbone_state.items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.randn(8, 16, 1, 1)
    state['neck.lateral_convs.0.conv.bias'] = torch.randn(8)
    state['rpn_head.rpn_cls.weight'] = torch.randn(3, 8, 1, 1)
    checkpoint = {
        'meta': {'seed': np.int64(7), 'epoch': 3, 'iter': 90, 'cfg': "model = dict(type='MaskRCNN')",
                 'dataset_meta': {'classes': ('circle', 'square')}, 'mmengine_version': '0.10.7'},
        'state_dict': state,
        'optimizer': {'state': {0: {'exp_avg': torch.ones(4)}}, 'param_groups': [{'lr': 1e-4, 'params': [0]}]},
        'param_schedulers': [{'last_step': 90, 'base_values': [1e-4]}],
    }
    if message_hub:
        hub = MessageHub.get_instance('converter_test')
        hub.update_scalar('train/loss', 1.5)
        checkpoint['message_hub'] = hub.state_dict()
    return checkpoint


# --- timm2cbvit ------------------------------------------------------------------------------------------------
def test_timm2cbvit_converts_verifies_and_loads(tmp_path):
    ref = timm.create_model('vit_tiny_patch16_224', pretrained=False).eval()
    src, dst = tmp_path / 'vit_tiny.pth', tmp_path / 'out' / 'cbvit_deit-t.pth'
    torch.save({'model': ref.state_dict()}, src)  # as DeiT releases them
    proc = run_tool([f'{TOOLS}/timm2cbvit.py', str(src), str(dst), '--arch', 'deit-t'])
    diff = re.search(r'verified: max \|.*\| = (\S+) over', proc.stdout)
    assert diff and float(diff.group(1)) <= 1e-5, proc.stdout

    converted = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(converted) == {'state_dict', 'meta'}
    assert converted['meta']['arch'] == 'deit-t' and converted['meta']['dropped_keys'] == ['head.bias', 'head.weight']
    assert set(converted['state_dict']) == {k for k in ref.state_dict() if not k.startswith('head.')}

    model = CBViT(arch='deit-t', context_broadcast=False, drop_path_rate=0.0, init_cfg=pretrained(dst))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens, hw = model.forward_tokens(x)
        expected = ref.forward_features(x)[:, 1:]
    assert hw == (14, 14)
    assert torch.allclose(tokens, expected, atol=1e-5)


def load_timm2cbvit():
    """tools/model_converters/timm2cbvit.py as a module (in-process: no second ~8 s import of torch and timm)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('timm2cbvit', osp.join(ROOT, TOOLS, 'timm2cbvit.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_process_error(tool, argv, capsys):
    """Runs the tool's ``main(argv)`` in this process; its one-line error (exit status 2, no traceback)."""
    assert tool.main(argv) == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith('error: '), err
    return lines[-1]


def test_timm2cbvit_user_errors(tmp_path, capsys):
    """In-process (the command line itself is run in the test above): saves two ~4 s imports per case."""
    tool = load_timm2cbvit()
    state = timm.create_model('vit_tiny_patch16_224', pretrained=False).state_dict()
    state['dist_token'] = torch.zeros(1, 1, 192)
    state['pos_embed'] = torch.zeros(1, 2 + 196, 192)
    distilled, dst = tmp_path / 'deit_tiny_distilled.pth', tmp_path / 'cbvit.pth'
    torch.save({'model': state}, distilled)
    line = in_process_error(tool, [str(distilled), str(dst), '--arch', 'deit-t'], capsys)
    assert 'distilled' in line and 'dist_token' in line
    assert not dst.exists()

    # load_matching_state's report of keys that do not fit reaches the user
    narrow = tmp_path / 'vit_tiny_mlp2.pth'
    torch.save(timm.create_model('vit_tiny_patch16_224', pretrained=False, mlp_ratio=2).state_dict(), narrow)
    line = in_process_error(tool, [str(narrow), str(dst), '--arch', 'deit-t'], capsys)
    assert 'shapes differ: blocks.0.mlp.fc1.weight: checkpoint (384, 192) vs model (768, 192);' in line
    assert line.endswith('and 28 more')

    line = in_process_error(tool, [str(tmp_path / 'nope.pth'), str(dst)], capsys)
    assert line == f'error: {tmp_path / "nope.pth"}: no such file'
    assert not dst.exists()


# --- extract_backbone -------------------------------------------------------------------------------------------
def test_timm2cbvit_verifies_other_sizes_against_timm_itself(tmp_path, capsys):
    """At --img-size 160 the converter resizes the 14x14 position embedding to 10x10 and --verify compares CBViT
    with timm's model resampling SRC's table itself (dynamic_img_size), not with a timm model given DST's table:
    a DST whose table was resized another way (bicubic without antialiasing) fails the verification."""
    tool = load_timm2cbvit()
    ref = timm.create_model('vit_tiny_patch16_224', pretrained=False)
    with torch.no_grad():
        ref.pos_embed.normal_(0, 1.0)  # as large as in trained ViTs, so that the resampling matters
    src, dst = tmp_path / 'vit_tiny.pth', tmp_path / 'cbvit_160.pth'
    torch.save({'model': ref.state_dict()}, src)
    assert tool.main([str(src), str(dst), '--arch', 'deit-t', '--img-size', '160']) == 0
    out = capsys.readouterr().out
    assert 'resampling SRC' in out and 'verified' in out, out
    converted = torch.load(dst, map_location='cpu', weights_only=True)
    assert converted['state_dict']['pos_embed'].shape == (1, 1 + 10 * 10, 192)
    assert converted['meta']['grid'] == 10 and converted['meta']['source_grid'] == 14

    # the same DST, its table resized without antialiasing: the reference does not follow DST, so it is caught
    state = tool.vit_state(torch.load(src, weights_only=True), str(src))
    args = tool.parse_args([str(src), str(tmp_path / 'unused.pth'), '--arch', 'deit-t', '--img-size', '160'])
    patches = state['pos_embed'][:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    plain = torch.nn.functional.interpolate(patches, size=(10, 10), mode='bicubic', align_corners=False)
    other = dict(converted['state_dict'])
    other['pos_embed'] = torch.cat([state['pos_embed'][:, :1], plain.flatten(2).transpose(1, 2)], dim=1)
    bad = tmp_path / 'cbvit_160_plain.pth'
    torch.save({'state_dict': other}, bad)
    with pytest.raises(tool.VerificationError, match='differ from timm'):
        tool.verify(state, str(bad), args)
    assert tool.verify(state, str(dst), args) <= 1e-5


def test_extract_backbone_round_trip_and_wrong_prefix(tmp_path):
    trained = LaViT(arch='t')
    trained.init_weights()
    src, dst = tmp_path / 'maskrcnn_lavit_t.pth', tmp_path / 'lavit_t_backbone.pth'
    torch.save(detector_checkpoint(trained.state_dict()), src)
    proc = run_tool([f'{TOOLS}/extract_backbone.py', str(src), str(dst)])
    assert "'neck.' (2 keys)" in proc.stdout and 'optimizer' in proc.stdout

    extracted = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(extracted['state_dict']) == set(trained.state_dict())
    assert extracted['meta']['seed'] == 7
    assert extracted['meta']['extracted_from'] == {'file': src.name, 'prefix': 'backbone.'}

    reused = LaViT(arch='t', init_cfg=pretrained(dst))
    reused.init_weights()
    for key, value in trained.state_dict().items():
        assert torch.equal(reused.state_dict()[key], value), key

    line = error_line(run_tool([f'{TOOLS}/extract_backbone.py', str(src), str(tmp_path / 'x.pth'), '--prefix',
                                'encoder'], check=False))
    assert "'encoder.'" in line and "'backbone.'" in line and "'neck.' (2 keys)" in line
    assert "'rpn_head.'" in line


# --- publish_model ----------------------------------------------------------------------------------------------
def test_publish_model_strips_training_state_and_names_by_hash(tmp_path):
    weights = LaViT(arch=TINY_LAVIT).state_dict()
    src, out = tmp_path / 'iter_90.pth', tmp_path / 'release' / 'lavit_tiny_det.pth'
    torch.save(detector_checkpoint(weights, message_hub=True), src)
    # real training checkpoints hold mmengine's message hub, which torch's safe loader refuses
    line = error_line(run_tool([f'{TOOLS}/publish_model.py', str(src), str(out)], check=False))
    assert 'HistoryBuffer' in line and '--unsafe-load' in line
    assert not out.parent.exists() or not list(out.parent.iterdir())

    proc = run_tool([f'{TOOLS}/publish_model.py', str(src), str(out), '--unsafe-load'])
    path = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r'lavit_tiny_det-([0-9a-f]{8})\.pth', osp.basename(path))
    assert match and osp.dirname(path) == str(out.parent), path
    assert [p.name for p in out.parent.iterdir()] == [osp.basename(path)]
    with open(path, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest()[:8] == match.group(1)
    published = torch.load(path, map_location='cpu', weights_only=True)
    assert set(published) == {'state_dict', 'meta'}
    assert published['meta']['seed'] == 7 and published['meta']['dataset_meta']['classes'] == ('circle', 'square')
    assert torch.equal(published['state_dict']['backbone.stages.0.norm.weight'], weights['stages.0.norm.weight'])
    assert all(k in proc.stderr for k in ('optimizer', 'param_schedulers', 'message_hub'))


# --- keys that do not fit ---------------------------------------------------------------------------------------
@pytest.fixture
def log_records():
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_checkpoint_that_does_not_fit_lists_keys(tmp_path, log_records):
    wrong = tmp_path / 'wrong.pth'
    torch.save({'state_dict': CBViT(arch='deit-t').state_dict()}, wrong)
    with pytest.raises(CheckpointMismatchError, match='has no key of LaViT') as info:
        LaViT(arch=TINY_LAVIT, init_cfg=pretrained(wrong)).init_weights()
    assert 'blocks.0.attn.proj.bias' in str(info.value) and 'prefix="backbone."' in str(info.value)

    weights = LaViT(arch=TINY_LAVIT).state_dict()
    weights['stages.0.norm.weight'] = torch.ones(3)
    shapes = tmp_path / 'shapes.pth'
    torch.save({'state_dict': weights}, shapes)
    with pytest.raises(CheckpointMismatchError, match=r'stages\.0\.norm\.weight: checkpoint \(3,\) vs model \(16,\)'):
        LaViT(arch=TINY_LAVIT, init_cfg=pretrained(shapes)).init_weights()

    weights = LaViT(arch=TINY_LAVIT).state_dict()
    del weights['stages.3.norm.bias']
    weights['stages.3.extra.weight'] = torch.zeros(2)
    partial = tmp_path / 'partial.pth'
    torch.save({'state_dict': weights}, partial)
    LaViT(arch=TINY_LAVIT, init_cfg=pretrained(partial)).init_weights()
    messages = [r.getMessage() for r in log_records]
    assert any('missing keys' in m and 'stages.3.norm.bias' in m for m in messages), messages
    assert any('unexpected keys' in m and 'stages.3.extra.weight' in m for m in messages), messages
