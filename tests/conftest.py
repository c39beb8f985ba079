"""Shared test setup: the Triton interpreter on machines without CUDA, the `cuda` marker, and seeded generators.

TRITON_INTERPRET must be set before anything imports triton (pytest imports this file before the test modules), so
the Triton kernels run on CPU tensors here; on a CUDA machine they compile for the GPU as usual.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped where torch sees no GPU (and run with `pytest -m cuda` where it does)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state, so random inputs are the same on every run."""
    torch.manual_seed(0)


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator for tests that draw their own random inputs."""
    return torch.Generator().manual_seed(0)
