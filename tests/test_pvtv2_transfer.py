"""PVTv2 ImageNet weights load into LaViT as they are (official release, timm and mmdet layouts), the converter CLI,
and the configs that start from them.

No weights can be downloaded here: the checkpoints are made from randomly initialised timm ``pvt_v2_b*`` models
(with random biases and norm parameters, so that a wrong mapping of any tensor shows), renamed into the official
layout (checked against timm's own official->timm filter), and from mmdet's PVTv2 loaded from the official file by
mmdet itself.
"""
import logging
import re

import pytest
import timm
import torch
from helpers import ROOT, run_tool
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from timm.models import pvt_v2 as timm_pvt_v2

from vitattn_mm import LaViT
from vitattn_mm.models.utils import load_matching_state, load_pretrained
from vitattn_mm.models.utils.pvtv2_weights import PVTV2_ARCHS, PVTv2WeightsError, all_vanilla_arch, pvtv2_layout

SIZE = 64  # divisible by 32: LaViT's ceil key grid equals PVTv2's floor
RTOL = 1e-4


def randomised(model):
    """timm initialises biases to 0 and norms to 1/0; random values make every tensor's mapping visible."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias') or 'norm' in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def timm_to_official(state):
    """timm's pvt_v2 names -> the official release's (the inverse of timm's checkpoint filter)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r'^patch_embed\.', 'patch_embed1.', k)
        k = re.sub(r'^stages\.(\d)\.downsample\.', lambda m: f'patch_embed{int(m.group(1)) + 1}.', k)
        k = re.sub(r'^stages\.(\d)\.blocks\.', lambda m: f'block{int(m.group(1)) + 1}.', k)
        k = re.sub(r'^stages\.(\d)\.norm\.', lambda m: f'norm{int(m.group(1)) + 1}.', k)
        out[k.replace('.mlp.dwconv.', '.mlp.dwconv.dwconv.')] = v
    return out


def stage_outputs(model, x):
    """timm's pvt_v2 stage outputs (B, C, H, W) (timm 1.0: patch_embed gives B, H, W, C; stages take and give maps)."""
    outs = []
    x = model.patch_embed(x)
    for stage in model.stages:
        x = stage(x)
        outs.append(x)
    return outs


@pytest.fixture(scope='module')
def pvt_b2():
    torch.manual_seed(0)
    return randomised(timm.create_model('pvt_v2_b2', pretrained=False, num_classes=10))


@pytest.fixture(scope='module')
def b2_files(pvt_b2, tmp_path_factory):
    """PVTv2-b2 weights in the three layouts: official (with head), timm, mmdet detector (prefix backbone.)."""
    from mmdet.models.backbones import PyramidVisionTransformerV2
    folder = tmp_path_factory.mktemp('pvt')
    timm_state = pvt_b2.state_dict()
    official = timm_to_official(timm_state)
    # the official layout we write is the one timm's own filter maps back to timm's names
    back = timm_pvt_v2.checkpoint_filter_fn(official, pvt_b2)
    assert set(back) == set(timm_state) and all(torch.equal(back[k], timm_state[k]) for k in back)
    files = dict(official=folder / 'pvt_v2_b2.pth', timm=folder / 'pvt_v2_b2_timm.pth',
                 mmdet=folder / 'mask_rcnn_pvt_v2_b2.pth')
    torch.save(official, files['official'])  # the release is a bare state dict, with the classifier head
    torch.save({'state_dict': timm_state}, files['timm'])
    mmdet_pvt = PyramidVisionTransformerV2(
        embed_dims=64, num_layers=[3, 4, 6, 3], num_heads=[1, 2, 5, 8], mlp_ratios=(8, 8, 4, 4), qkv_bias=True,
        init_cfg=ConfigDict(type='Pretrained', checkpoint=str(files['official'])))  # as mmdet's configs give it
    mmdet_pvt.init_weights()  # mmdet's own pvt_convert of the official release
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in mmdet_pvt.state_dict().items()},
                'meta': {'epoch': 12}}, files['mmdet'])
    return files


def pretrained(path, prefix=None):
    return dict(type='Pretrained', checkpoint=str(path), prefix=prefix)


@pytest.fixture(scope='module')
def all_va_b2():
    """An all-VA LaViT of PVTv2-b2's size without attention residual: PVTv2's computation in LaViT's modules."""
    return LaViT(arch=all_vanilla_arch(PVTV2_ARCHS['b2']), attention_residual=False, drop_path_rate=0.0).eval()


@pytest.mark.parametrize('layout', ['official', 'timm', 'mmdet'])
def test_all_va_lavit_reproduces_timm_pvt_v2_b2(layout, pvt_b2, b2_files, all_va_b2):
    """What ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` runs after the random initialisation
    (``load_pretrained`` with LaViT's ``convert_pretrained``); every tensor of the all-VA LaViT comes from the file."""
    model = all_va_b2
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # nothing of a previous layout's load survives unnoticed
    report = load_pretrained(model, str(b2_files[layout]), prefix='backbone.' if layout == 'mmdet' else None,
                             convert=model.convert_pretrained)
    assert report.tensors == report.total_tensors and report.param_fraction == 1.0
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = stage_outputs(pvt_b2, x)
        got = model(x)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape
        rel = ((a - b).norm() / b.norm()).item()
        assert rel < RTOL, f'stage {i + 1}: relative error {rel:.3g}'


def test_default_lavit_s_takes_pvt_v2_b2(pvt_b2, b2_files, caplog):
    official = torch.load(b2_files['official'], weights_only=True)
    model = LaViT(arch='s')
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler(level=logging.INFO)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        report = load_matching_state(model, model.convert_pretrained(official), source='pvt_v2_b2.pth')
    finally:
        logger.removeHandler(handler)
    assert report.param_fraction >= 0.9, report
    messages = [r.getMessage() for r in records]
    # LaViT-S has 2+3+4+2 = 11 less-attention layers, each without q (weight, bias) and the key half of kv
    unused = [m for m in messages if 'tensors unused' in m]
    assert len(unused) == 1 and 'PVTv2-b2' in unused[0] and '44 PVTv2 tensors unused' in unused[0], messages
    assert any(f'({100 * report.param_fraction:.1f}%)' in m for m in messages), messages

    own = model.state_dict()
    kv = official['block3.2.attn.kv.weight']  # stage 3, block 2: an LA layer (num_vanilla 2)
    assert model.stages[2].blocks[2].less_attention and not model.stages[2].blocks[1].less_attention
    assert torch.equal(own['stages.2.blocks.2.attn.v.weight'], kv[320:])
    assert torch.equal(own['stages.2.blocks.1.attn.k.weight'], official['block3.1.attn.kv.weight'][:320])
    assert torch.equal(own['stages.2.blocks.1.attn.v.bias'], official['block3.1.attn.kv.bias'][320:])
    assert torch.equal(own['stages.0.blocks.0.attn.reduce.norm.weight'], official['block1.0.attn.norm.weight'])
    assert torch.equal(own['stages.3.blocks.2.mlp.dwconv.weight'], official['block4.2.mlp.dwconv.dwconv.weight'])
    assert torch.equal(own['stages.1.patch_embed.proj.weight'], official['patch_embed2.proj.weight'])
    # eval forward works at a size not divisible by 32 (LaViT pads where PVTv2 floors)
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 72, 100))
    assert [o.shape[1] for o in outs] == [64, 128, 320, 512]


def test_pvtv2_of_another_size_is_refused_naming_both(tmp_path):
    b1 = timm.create_model('pvt_v2_b1', pretrained=False)
    path = tmp_path / 'pvt_v2_b1.pth'
    torch.save(timm_to_official(b1.state_dict()), path)
    lavit_s = LaViT(arch='s')
    with pytest.raises(PVTv2WeightsError) as info:  # what init_cfg=Pretrained runs (after random init)
        load_pretrained(lavit_s, str(path), convert=lavit_s.convert_pretrained)
    message = str(info.value)
    assert 'pvt_v2_b1.pth' in message and 'PVTv2-b1' in message and "LaViT arch='s'" in message
    assert "fit LaViT arch='t'" in message and 'takes PVTv2-b2' in message
    lavit_t = LaViT(arch='t')
    assert load_pretrained(lavit_t, str(path), convert=lavit_t.convert_pretrained).param_fraction > 0.9

    li = timm_to_official(b1.state_dict())
    li['block1.0.attn.sr.weight'] = torch.zeros(64, 64, 1, 1)  # pvt_v2_*_li: 1x1 conv after pooling
    torch.save(li, path)
    with pytest.raises(PVTv2WeightsError, match='linear-SR'):
        load_pretrained(lavit_t, str(path), convert=lavit_t.convert_pretrained)


def test_pvtv2_to_lavit_cli(tmp_path, b2_files):
    """Two runs of the tool: PVTv2-b1 (official release with head) -> LaViT-T with verification at 64x64, and an
    mmdet PVTv2-b2 detector checkpoint refused for --arch b."""
    b1 = randomised(timm.create_model('pvt_v2_b1', pretrained=False))
    src, dst = tmp_path / 'pvt_v2_b1.pth', tmp_path / 'out' / 'lavit_t_pvtv2-b1.pth'
    torch.save(timm_to_official(b1.state_dict()), src)
    proc = run_tool(['tools/model_converters/pvtv2_to_lavit.py', str(src), str(dst), '--verify-size', '64'])
    assert 'verified: the all-VA LaViT' in proc.stdout and "LaViT(arch='t')" in proc.stdout, proc.stdout
    fraction = re.search(r'\((\d+\.\d)%\)', proc.stdout.splitlines()[-1])
    assert fraction and float(fraction.group(1)) >= 90, proc.stdout
    written = torch.load(dst, map_location='cpu', weights_only=True)
    assert written['meta']['source_arch'] == 'pvt_v2_b1' and written['meta']['arch'] == 't'
    model = LaViT(arch='t', init_cfg=pretrained(dst))
    model.init_weights()
    assert torch.equal(model.state_dict()['stages.1.blocks.0.attn.q.weight'],
                       b1.state_dict()['stages.1.blocks.0.attn.q.weight'])

    proc = run_tool(['tools/model_converters/pvtv2_to_lavit.py', str(b2_files['mmdet']), str(tmp_path / 'x.pth'),
                     '--prefix', 'backbone.', '--arch', 'b'], check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith('error: ') and 'PVTv2-b2' in line and "LaViT arch='b'" in line, line
    assert not (tmp_path / 'x.pth').exists()


# --- configs ----------------------------------------------------------------------------------------------------
HEADLINE = {
    'configs/lavit/maskrcnn_lavit_{}_coco.py': 'tsb',
    'configs/lavit/upernet_lavit_{}_ade20k.py': 'tsb',
    'configs/lavit/retinanet_lavit_{}_coco.py': 's',
    'configs/lavit/cascade-maskrcnn_lavit_{}_coco.py': 's',
    'configs/lavit/fpn_lavit_{}_ade20k.py': 's',
}
PVT_OF = {'t': 'b1', 's': 'b2', 'b': 'b3'}


def test_configs_start_from_pvtv2_and_test_configs_stay_offline():
    """Config parsing only; ~3 s."""
    for pattern, archs in HEADLINE.items():
        for arch in archs:
            backbone = Config.fromfile(f'{ROOT}/{pattern.format(arch)}').model.backbone
            assert backbone.arch == arch
            assert backbone.init_cfg == dict(
                type='Pretrained',
                checkpoint=f'https://github.com/whai362/PVT/releases/download/v2/pvt_v2_{PVT_OF[arch]}.pth')
    for path in ('configs/lavit/maskrcnn_lavit_s-scratch_coco.py', 'configs/lavit/upernet_lavit_s-scratch_ade20k.py',
                 'configs/lavit/maskrcnn_lavit_s_shapes.py', 'configs/lavit/upernet_lavit_s_shapes.py'):
        assert Config.fromfile(f'{ROOT}/{path}').model.backbone.init_cfg is None, path


def test_config_loads_pvtv2_weights_from_a_local_file(b2_files, pvt_b2):
    """The offline path: the headline Mask R-CNN config, its checkpoint pointed at a local file the way
    ``--cfg-options model.backbone.init_cfg.checkpoint=...`` does; ~1 s."""
    from mmdet.registry import MODELS
    cfg = Config.fromfile(f'{ROOT}/configs/lavit/maskrcnn_lavit_s_coco.py')
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': str(b2_files['official'])})
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    own = detector.backbone.state_dict()
    ref = pvt_b2.state_dict()
    for key in ('stages.0.blocks.0.attn.q.weight', 'stages.2.norm.bias', 'stages.3.blocks.1.mlp.fc2.weight'):
        assert torch.equal(own[key], ref[key]), key
