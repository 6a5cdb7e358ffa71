"""Data-parallel training under ``torchrun`` (NCCL on GPUs, gloo on CPU).

A training entry point calls :func:`setup` once; without torchrun's environment it is a
single-process run and every helper degrades to a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_kind: str) -> DistributedContext:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def teardown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum ``tensor`` over processes (a detached copy; the input is left unchanged)."""
    if not context.enabled:
        return tensor.detach()
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_process_first(context: DistributedContext) -> Iterator[None]:
    """Let rank 0 run the block first (e.g. to create caches), then the others."""
    if not context.is_main:
        barrier(context)
    yield
    if context.is_main:
        barrier(context)
