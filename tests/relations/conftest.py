"""Relations tests run the walk single-threaded.

The walk is 256 small sparse products; on a shared 2-core machine an OpenMP barrier per product
costs more than the product itself when the other core is busy, so each test (not the session)
runs with one intra-op thread and restores the previous setting.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_intra_op_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
