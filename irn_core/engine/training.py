"""Pieces shared by the training loops: the data loader and the data-parallel wrapper."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from irn_core.engine.distributed import DistributedContext
from irn_core.engine.optim import PolySGD

logger = logging.getLogger(__name__)


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


class LoopSettings(Protocol):
    """The fields of a stage's training settings that :func:`train_loop` reads."""

    batch_size: int
    epochs: int
    num_workers: int
    seed: int
    learning_rate: float
    head_lr_multiplier: float
    weight_decay: float
    momentum: float
    poly_power: float
    log_every: int
    max_steps: int | None


class EpochDataset(Protocol):
    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class TrainingRecord:
    """Per-step losses and timings, saved in the checkpoint."""

    steps: int = 0
    losses: list[float] = field(default_factory=list)
    images_per_second: float = 0.0
    seconds: float = 0.0


LossStep = Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
"""(network, batch on the device) -> named scalar losses, ``total`` among them (already scaled
so that DDP's gradient average gives the one-process gradient)."""


def train_loop(
    model: nn.Module,
    training_set: EpochDataset,
    parameter_groups: tuple[list[nn.Parameter], list[nn.Parameter]],
    loss_step: LossStep,
    settings: LoopSettings,
    *,
    device: torch.device,
    context: DistributedContext,
    name: str,
) -> TrainingRecord:
    """The reference's training schedule: ``(len // batch) * epochs`` steps of SGD with the poly
    learning rate (head group at ``head_lr_multiplier``), shuffled, ``drop_last``; logs every
    ``log_every`` steps. Trains ``model`` in place (wrapped in DDP under torchrun)."""
    loader, sampler = make_loader(
        training_set, settings.batch_size, num_workers=settings.num_workers, seed=settings.seed, context=context
    )
    steps_per_epoch = len(training_set) // settings.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(training_set)} training images are fewer than one batch of {settings.batch_size}")
    max_step = steps_per_epoch * settings.epochs
    max_step_run = max_step if settings.max_steps is None else min(max_step, settings.max_steps)
    base_parameters, head_parameters = parameter_groups
    optimizer = PolySGD(
        [(base_parameters, 1.0), (head_parameters, settings.head_lr_multiplier)],
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        momentum=settings.momentum,
        max_step=max_step,
        power=settings.poly_power,
    )
    network = wrap_data_parallel(model, device, context)
    record = TrainingRecord()
    window: dict[str, list[float]] = {}
    started = time.perf_counter()
    images = 0
    model.train()
    for epoch in range(settings.epochs):
        training_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        for batch in loader:
            if record.steps >= max_step_run:
                break
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            losses = loss_step(network, batch)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            record.steps += 1
            # under DDP each process's loss is scaled by the world size (see LossStep)
            values = {key: float(value.detach()) / context.world_size for key, value in losses.items()}
            record.losses.append(values["total"])
            for key, value in values.items():
                window.setdefault(key, []).append(value)
            images += len(batch[next(iter(batch))]) * context.world_size
            if context.is_main and (record.steps % settings.log_every == 0 or record.steps == max_step_run):
                elapsed = time.perf_counter() - started
                summary = " ".join(f"{key} {np.mean(value):.4f}" for key, value in window.items())
                logger.info(
                    "%s step %d/%d epoch %d %s lr %.5f %.1f images/s",
                    name, record.steps, max_step, epoch, summary, optimizer.param_groups[0]["lr"],
                    images / max(elapsed, 1e-9),
                )
                window = {}
    record.seconds = time.perf_counter() - started
    record.images_per_second = images / max(record.seconds, 1e-9)
    model.eval()
    return record
