import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import vitattn_mm  # noqa: E402,F401  (registers our modules)

# Tiny architectures for fast unit tests; the real ones are built where the test is about them.
TINY_LAVIT = dict(embed_dims=[16, 32, 40, 64], depths=[3, 2, 3, 2], num_heads=[1, 2, 5, 8],
                  mlp_ratios=[2, 2, 2, 2], num_vanilla=[1, 1, 2, 1])


# Under pytest-xdist (tools/run_tests.sh) each worker gets its share of the CPUs, and so do the tools it starts
# (OMP_NUM_THREADS is inherited by subprocesses): more threads than cores makes OpenMP spin and runs 5-30x slower.
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
TORCH_THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
os.environ['OMP_NUM_THREADS'] = str(TORCH_THREADS)
# The tests that share one trained model (a module fixture) run on one worker.
LEARNING_GROUP_ORDER = ('det_learning', 'seg_learning', 'cls_learning')


def tiny_lavit(**kw):
    """A LaViT with TINY_LAVIT's architecture (unless ``arch`` is given), no drop path, initialised."""
    from vitattn_mm import LaViT
    kw.setdefault('arch', TINY_LAVIT)
    kw.setdefault('drop_path_rate', 0.0)
    model = LaViT(**kw)
    model.init_weights()
    return model


def randomised_lavit(kind: str, **kw):
    """A tiny LaViT in eval mode with random LA kernels, peaked attention and strong, uneven carry gates."""
    model = tiny_lavit(attention_kind=kind, **kw).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('kernel_logits'):
                p.normal_(0, 1.5)  # random, far from the near-identity initialisation
            elif name.endswith(('q.weight', 'k.weight')):
                p.mul_(10)  # peaked attention
            elif name.endswith(('gate_logits', 'head_mix_logits')):
                p.normal_()  # a large share of the carried attention, uneven head mixing
    return model


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(TORCH_THREADS)
    yield


def pytest_collection_modifyitems(items):
    """The learning runs are the longest work units: start them first, so that no worker is left with one of
    them at the end while the other sits idle (the order is the same in every worker, as xdist requires)."""
    def rank(item):
        mark = item.get_closest_marker('xdist_group')
        group = mark.args[0] if mark and mark.args else mark.kwargs.get('name') if mark else None
        return LEARNING_GROUP_ORDER.index(group) if group in LEARNING_GROUP_ORDER else len(LEARNING_GROUP_ORDER)
    items.sort(key=rank)  # stable: the collection order within each rank is kept
    # a test that uses a trained model without its group would train that model again on the other worker
    for item in items:
        if {'trained', 'trained_classifier'} & set(item.fixturenames) and rank(item) == len(LEARNING_GROUP_ORDER):
            raise pytest.UsageError(f'{item.nodeid} uses a trained model: mark it with its xdist_group')
