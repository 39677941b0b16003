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


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield
