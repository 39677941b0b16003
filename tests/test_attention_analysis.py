"""tools/analysis/attention_analysis.py, run as a user runs it, on random-init LaViT and CB-ViT detectors."""
import csv
import os.path as osp

import pytest

from helpers import run_tool
from vitattn_mm.datasets.shapes import ensure_coco

TOOL = 'tools/analysis/attention_analysis.py'
COLUMNS = ['model', 'variant', 'weights', 'image_size', 'n_images', 'stage', 'layer', 'ref_layer', 'kind', 'metric',
           'value', 'std']
LAVIT_S = dict(depths=[3, 4, 6, 3], num_vanilla=[1, 1, 2, 1])


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    root = ensure_coco(tmp_path_factory.mktemp('shapes') / 'coco', num_train=2, num_val=2)
    return str(root / 'val2017')


def read_rows(out_dir):
    with open(osp.join(out_dir, 'attention_stats.csv'), newline='') as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert rows
    for r in rows:
        r['value'] = float(r['value'])
        r['std'] = float(r['std'])
    return rows


def values(rows, **match):
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def check_common(rows, model, n_images):
    for r in rows:
        assert r['model'] == model
        assert r['n_images'] == str(n_images)
        assert r['image_size'] == '160x160'
        assert r['weights'].startswith('random init')
        assert r['std'] >= 0
        metric, v = r['metric'], r['value']
        if metric.startswith(('cos_', 'ccos_')):
            assert -1 - 1e-6 <= v <= 1 + 1e-6, r
        if metric in ('tv_to_last_va', 'entropy_norm', 'max_prob') or metric.startswith('pooled_'):
            assert -1e-6 <= v <= 1 + 1e-6, r


def check_pngs(out_dir, names):
    for name in names:
        path = osp.join(out_dir, name)
        assert osp.getsize(path) > 1000, path
        with open(path, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_lavit_random_init(images, tmp_path):
    out = tmp_path / 'lavit'
    proc = run_tool([TOOL, 'configs/lavit/maskrcnn_lavit_s_shapes.py', '--images', images, '--limit', '2',
                     '--out-dir', str(out), '--size', '160', '160'], timeout=300)
    assert 'random init' in proc.stdout and '(a) consecutive-layer' in proc.stdout
    rows = read_rows(out)
    check_common(rows, 'LaViT', 2)
    assert {r['variant'] for r in rows} == {'lavit', 'all-va'}
    depths, nv = LAVIT_S['depths'], LAVIT_S['num_vanilla']
    # (a) one pair per consecutive layer pair of every stage, both variants, with the right kinds
    for variant in ('lavit', 'all-va'):
        pairs = values(rows, variant=variant, metric='cos_consecutive')
        assert len(pairs) == sum(d - 1 for d in depths)
        assert len(values(rows, variant=variant, metric='ccos_consecutive')) == len(pairs)
        for r in pairs:
            s, l = int(r['stage']) - 1, int(r['layer'])
            assert r['ref_layer'] == str(l - 1)
            if variant == 'all-va':
                assert r['kind'] == 'VA->VA'
            else:
                kind = lambda i: 'LA' if i >= nv[s] else 'VA'  # noqa: E731
                assert r['kind'] == f'{kind(l - 1)}->{kind(l)}'
        # per-layer density and pooled self-affinity for every layer
        for metric in ('entropy_norm', 'max_prob', 'cos_to_uniform', 'pooled_diag_mean', 'pooled_offdiag_max',
                       'pooled_diag_dominant_frac', 'pooled_dominance', 'pooled_asymmetry'):
            assert len(values(rows, variant=variant, metric=metric)) == sum(depths), metric
    assert {r['kind'] for r in values(rows, variant='lavit', metric='cos_consecutive')} == {
        'VA->VA', 'VA->LA', 'LA->LA'}
    # (b) one row per LA layer, against the last VA layer of its stage
    la = values(rows, variant='lavit', metric='tv_to_last_va')
    assert len(la) == sum(d - v for d, v in zip(depths, nv))
    for r in la:
        s = int(r['stage']) - 1
        assert r['kind'] == 'LA' and int(r['layer']) >= nv[s] and r['ref_layer'] == str(nv[s] - 1)
    assert len(values(rows, variant='lavit', metric='cos_to_last_va')) == len(la)
    assert len(values(rows, variant='all-va', metric='tv_to_last_va')) == len(la)
    # both variants share the weights of stage 1's first layer, so that layer's attention is identical
    for metric in ('entropy_norm', 'pooled_diag_mean'):
        a, b = (values(rows, variant=v, stage='1', layer='0', metric=metric)[0]['value'] for v in ('lavit', 'all-va'))
        assert a == pytest.approx(b, abs=1e-6)
    check_pngs(out, ['similarity_consecutive.png', 'la_vs_va.png'])


def test_cbvit_random_init(images, tmp_path):
    out = tmp_path / 'cbvit'
    proc = run_tool([TOOL, 'configs/cbvit/maskrcnn_cbvit_s_coco.py', '--images', images, '--limit', '2',
                     '--out-dir', str(out), '--cfg-options', 'model.backbone.init_cfg=None'], timeout=300)
    assert '(c) CB-ViT attention density' in proc.stdout
    rows = read_rows(out)
    check_common(rows, 'CBViT', 2)
    assert {r['variant'] for r in rows} == {'cb-on', 'cb-off'}
    for variant in ('cb-on', 'cb-off'):
        for metric in ('entropy_norm', 'max_prob', 'cos_to_uniform'):
            assert [r['layer'] for r in values(rows, variant=variant, metric=metric)] == [str(i) for i in range(12)]
        assert len(values(rows, variant=variant, metric='cos_consecutive')) == 11
    # CB acts after a block's MLP: the first block's attention is the same with and without it
    first = [values(rows, variant=v, layer='0', metric='entropy_norm')[0]['value'] for v in ('cb-on', 'cb-off')]
    assert first[0] == pytest.approx(first[1], abs=1e-9)
    # ... and the later ones differ
    later = [values(rows, variant=v, layer='11', metric='max_prob')[0]['value'] for v in ('cb-on', 'cb-off')]
    assert later[0] != pytest.approx(later[1], abs=1e-7)
    check_pngs(out, ['cbvit_density.png'])
    assert not osp.exists(osp.join(out, 'la_vs_va.png'))


def test_no_images_is_a_clear_error(tmp_path):
    proc = run_tool([TOOL, 'configs/lavit/maskrcnn_lavit_s_shapes.py', '--images', str(tmp_path)], check=False,
                    timeout=120)
    assert proc.returncode != 0
    assert 'no images' in proc.stderr
