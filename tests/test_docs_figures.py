"""The docs' tables of figures follow from their sources: docs/model_zoo.md lists every config, the generated
sections of docs/benchmarks.md are what the benchmark tool renders from their JSON files, and docs/results.md
states the thresholds that the learning tests assert."""
import glob
import os.path as osp
import re

import pytest

from helpers import ROOT, read_doc as read, use_analysis_tools


def test_model_zoo_has_one_row_per_config():
    """docs/model_zoo.md lists every config of configs/ (regenerate it with tools/analysis/model_zoo.py)."""
    zoo = read('docs/model_zoo.md')
    configs = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py'))
                     if '/_base_/' not in p)
    rows = re.findall(r'^\| `(configs/[^`]+)` \|', zoo, re.M)
    missing, extra = sorted(set(configs) - set(rows)), sorted(set(rows) - set(configs))
    assert not missing and not extra and len(rows) == len(set(rows)), (
        f'docs/model_zoo.md is out of date (missing rows: {missing}, rows of configs that do not exist: {extra}); '
        f'run: python tools/analysis/model_zoo.py --out docs/model_zoo.md')


@pytest.mark.parametrize('section, raw', [('main', 'docs/benchmarks.json'),
                                          ('allocator', 'docs/benchmarks_allocator.json')])
def test_benchmark_tables_render_from_their_raw_numbers(section, raw):
    """Each generated section of docs/benchmarks.md is what tools/analysis/benchmark_backbones.py renders from its
    JSON (so the tables, ratios and target verdicts there follow from the recorded measurements): the run of record
    and the run with glibc's malloc reusing memory."""
    import json
    use_analysis_tools()
    from backbone_bench.report import MARK_BEGIN, MARK_END, evaluate_targets, render_markdown
    results = json.loads(read(raw))
    results['targets'] = evaluate_targets(results)
    text = read('docs/benchmarks.md')
    assert MARK_BEGIN.format(section=section) in text, f'docs/benchmarks.md has no generated section {section!r}'
    part = text.split(MARK_BEGIN.format(section=section), 1)[1].split(MARK_END.format(section=section), 1)[0]
    assert part.strip() == render_markdown(results).strip()


def test_results_state_the_learning_thresholds_the_tests_use():
    """docs/results.md's table of the learning tests gives the thresholds that the tests assert (so a threshold
    changed in a test without its measurement in the docs, or the other way round, fails here)."""
    import test_classification
    import test_detection
    import test_segmentation
    table = read('docs/results.md').split('### The learning tests', 1)[1].split('How to read them', 1)[0]
    expected = {'upernet_lavit_t_shapes.py': f'mIoU >= {test_segmentation.MIN_MIOU} and >= frozen + '
                                             f'{test_segmentation.MIN_GAIN}',
                'lavit_t_cls_shapes.py': f'top-1 >= {test_classification.MIN_ACCURACY}',
                'maskrcnn_lavit_t_shapes.py': f'bbox >= {test_detection.MIN_BBOX_MAP}, '
                                              f'segm >= {test_detection.MIN_SEGM_MAP}'}
    for config, threshold in expected.items():
        row = next(line for line in table.splitlines() if line.startswith('|') and config in line)
        assert row.rstrip(' |').endswith(threshold), (config, row, threshold)
