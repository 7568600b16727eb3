"""Shared fixtures: seeded RNG and the path to the real datasets (LOCALLEARN_DATA)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# Tests import benchmark scripts (benchmarks/sweep.py and its helpers), which import each other by module name
# (`from _run import ...`), as they do when run from benchmarks/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Thousands of small ops: one thread is as fast on an idle CPU and avoids OpenMP stalls on a busy one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data() -> Path:
    """The folder holding the canonical CIFAR-10 archive; tests using it skip when it is absent."""
    root = os.environ.get("LOCALLEARN_DATA")
    if not root or not (Path(root) / "cifar-10-python.tar.gz").exists():
        pytest.skip("set LOCALLEARN_DATA to a folder with cifar-10-python.tar.gz")
    return Path(root)
