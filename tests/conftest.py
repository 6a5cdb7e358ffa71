"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = REPO_ROOT / "tests" / "fixtures" / "real_samples"


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """Real VOC 2012 and COCO 2017 files (see tests/fixtures/real_samples/README.md)."""
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
