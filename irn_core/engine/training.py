"""Pieces shared by the training loops: the data loader and the data-parallel wrapper."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from irn_core.engine.distributed import DistributedContext


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    num_workers: int,
    seed: int,
    context: DistributedContext,
    shuffle: bool = True,
    drop_last: bool = True,
) -> tuple[DataLoader, DistributedSampler]:
    """A loader over this process's share of a global batch of ``batch_size``.

    The same shuffled order is drawn whatever the number of processes (a ``DistributedSampler``
    seeded with ``seed`` even for one process); process r takes every world_size-th sample, so the
    union of the processes' batches is the one-process batch.
    """
    if batch_size % context.world_size:
        raise ValueError(f"global batch size {batch_size} is not divisible by {context.world_size} processes")
    sampler = DistributedSampler(
        dataset,
        num_replicas=context.world_size,
        rank=context.rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size // context.world_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )
    return loader, sampler


def wrap_data_parallel(model: nn.Module, device: torch.device, context: DistributedContext) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` under torchrun, else the model itself."""
    if not context.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
