"""The fabricated run folder, made once per session (tests that change it work on a copy)."""

from __future__ import annotations

import pytest
from report_fabrication import FabricatedRun, fabricate


@pytest.fixture(scope="session")
def fabricated(tmp_path_factory: pytest.TempPathFactory) -> FabricatedRun:
    return fabricate(tmp_path_factory.mktemp("fabricated"))
