"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = REPO_ROOT / "tests" / "fixtures" / "real_samples"


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """Real VOC 2012 and COCO 2017 files (see tests/fixtures/real_samples/README.md)."""
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _single_intra_op_thread() -> Iterator[None]:
    """Tests run torch single-threaded: their inputs are tiny, and on a shared 2-core machine an
    OpenMP barrier per small operation (the walk is 256 small sparse products) costs more than the
    operation itself when the other core is busy. Restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
