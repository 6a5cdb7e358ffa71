"""``compute.cpu_allocator``: with ``retain``, glibc serves a large tensor from its heap and keeps it after ``free``.

Each case runs in a fresh interpreter (the settings last for the whole process) and reads glibc's own
accounting, ``mallinfo2()``: ``hblkhd`` (bytes in mmapped blocks) and ``arena`` (bytes of the heap).
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

from irn_core.engine.runtime import configure_allocator
from irn_core.errors import ConfigError


def _has_glibc_mallinfo2() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


PROBE = r"""
import ctypes, json, sys
import torch
from irn_core.engine.runtime import configure_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
configure_allocator(sys.argv[1])
before = libc.mallinfo2()
tensor = torch.empty(16 * 2**20)          # 64 MB, above glibc's largest mmap threshold (32 MB)
during = libc.mallinfo2()
del tensor
after = libc.mallinfo2()
print(json.dumps({
    "mapped_during": during.hblkhd - before.hblkhd,
    "heap_growth_during": during.arena - before.arena,
    "heap_kept_after": after.arena - before.arena,
}))
"""


def _probe(policy: str) -> dict[str, int]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, policy], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _has_glibc_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_retain_serves_a_large_tensor_from_the_heap_and_keeps_it_after_free() -> None:
    megabytes_64 = 64 * 2**20
    system = _probe("system")
    retain = _probe("retain")
    # glibc's defaults map the block and give it back
    assert system["mapped_during"] >= megabytes_64
    assert system["heap_kept_after"] < megabytes_64
    # retain: no mapping; the heap grows by the block and keeps it for the next tensor
    assert retain["mapped_during"] == 0
    assert retain["heap_growth_during"] >= megabytes_64
    assert retain["heap_kept_after"] >= megabytes_64


def test_an_unknown_allocator_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cpu_allocator"):
        configure_allocator("jemalloc")
