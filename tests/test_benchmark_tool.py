"""tools/analysis/benchmark_backbones.py: what it counts and times (operator calls, the DP loss's share in pairs) and
how it names the machine a figure comes from."""
import pytest
import torch
from conftest import tiny_lavit as build
from helpers import use_analysis_tools


def test_benchmark_counts_the_operator_calls_of_a_steady_state_forward():
    """tools/analysis/benchmark_backbones.py counts aten calls after a warm-up forward: the count of a fresh model
    equals that of a model already run at that size (without the warm-up it would include preparing the transforms)."""
    use_analysis_tools()
    from backbone_bench.measure import count_flops
    x = torch.randn(1, 3, 64, 48)
    fresh, warm = build().eval(), build().eval()
    with torch.no_grad():
        warm(x)
    calls = [count_flops(lambda m=m: m(x))['aten_calls'] for m in (fresh, warm)]
    assert calls[0] == calls[1] > 0


def test_benchmark_machine_line_names_the_allocator_settings(monkeypatch):
    """Fresh large tensors cost page faults, so the allocator's settings move every ratio with PVTv2 (see
    docs/benchmarks.md): the machine line of every report says which were set."""
    from vitattn_mm.utils.machine import ALLOCATOR_VARIABLES, machine_line
    for name in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert machine_line(2).endswith('allocator: default (no allocator variable set)')
    monkeypatch.setenv('MALLOC_MMAP_THRESHOLD_', '268435456')
    monkeypatch.setenv('LD_PRELOAD', '/usr/lib/libjemalloc.so.2')
    assert machine_line(2).endswith('allocator: LD_PRELOAD=/usr/lib/libjemalloc.so.2, MALLOC_MMAP_THRESHOLD_=268435456')


def test_benchmark_times_the_dp_loss_in_pairs_on_one_model():
    """The benchmark's DP-loss share: the same model steps with and without ``loss_dp`` in alternating pairs (the
    loss runs in exactly the 'with' steps and is switched back on afterwards), and the report's share is the median
    of the pairs' ``(with - without) / with``."""
    use_analysis_tools()
    from backbone_bench.measure import paired_aux_loss_steps
    from backbone_bench.report import evaluate_targets
    model = build(dp_loss=dict(type='DiagonalityPreservingLoss', loss_weight=0.1)).train()
    loss = model.dp_loss
    calls = []
    loss.register_forward_hook(lambda *args: calls.append(1))
    times = paired_aux_loss_steps(model, torch.randn(1, 3, 64, 48), pairs=3)
    assert len(times['with']) == len(times['without']) == 3
    assert len(calls) == 4  # one untimed pair, then three timed ones
    assert model.dp_loss is loss and not model.pop_auxiliary_losses()
    with pytest.raises(ValueError, match='dp_loss'):
        paired_aux_loss_steps(build().train(), torch.randn(1, 3, 64, 48), pairs=1)

    pairs = {'with': [1.0, 2.0, 1.0], 'without': [0.9, 1.0, 0.96]}  # shares 0.1, 0.5, 0.04
    results = {'per_size': {}, 'train': {'2x64x48': {'models': {'lavit-s': {'step_median_s': 1.0}, 'lavit-s-nodp': {
        'step_median_s': 0.5}}, 'dp_pairs': pairs}}}
    share = [t for t in evaluate_targets(results) if 'loss_dp <= 0.05' in t['target']]
    assert len(share) == 1 and share[0]['figures'].startswith('median of 3 paired steps: 0.100 ')
    # without pairs the two models' medians (here 0.5) are not taken for the loss's share
    del results['train']['2x64x48']['dp_pairs']
    share = [t for t in evaluate_targets(results) if 'loss_dp <= 0.05' in t['target']]
    assert share[0]['met'] is None and share[0]['figures'] == 'not measured in this run'
