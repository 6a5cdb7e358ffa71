"""Pieces shared by the training loops: the data loader and the data-parallel wrapper."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from irn_core.data.registry import SegmentationDataset
from irn_core.engine.distributed import DistributedContext, all_reduce_sum
from irn_core.engine.optim import GroupSpec, Schedule, ScheduledSGD, poly_schedule
from irn_core.engine.runtime import autocast, gradient_scaler, sample_rng, tensor_to_device, to_memory_format

logger = logging.getLogger(__name__)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    num_workers: int,
    seed: int,
    context: DistributedContext,
    device: torch.device | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
) -> tuple[DataLoader, DistributedSampler]:
    """A loader over this process's share of a global batch of ``batch_size``.

    ``num_workers`` worker processes (kept alive across epochs) prepare the batches; on a CUDA
    ``device`` they are put in pinned memory, so that the copies to the GPU can be asynchronous.

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
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    return loader, sampler


def batch_to_device(
    batch: dict[str, torch.Tensor], device: torch.device, *, channels_last: bool = False
) -> dict[str, torch.Tensor]:
    """A collated batch on ``device`` (non-blocking copies); its 4-D float ``image`` (N, C, H, W) in
    channels-last memory format when ``channels_last``."""
    return {
        key: tensor_to_device(value, device, channels_last=channels_last and key == "image"
                              and value.is_floating_point())
        for key, value in batch.items()
    }


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
    weight_decay: float
    momentum: float
    poly_power: float
    log_every: int
    max_steps: int | None
    steps: int | None
    min_steps: int
    precision: str
    channels_last: bool


class EpochDataset(Protocol):
    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


class KeyedSamples(Dataset):
    """Training samples of ``image_ids`` whose augmentation depends only on (seed, epoch, index)
    (:meth:`rng`), so that results do not depend on worker or process counts. Subclasses read
    ``self.image_ids[index]`` and draw from ``self.rng(index)`` in ``__getitem__``."""

    def __init__(self, dataset: SegmentationDataset, image_ids: Sequence[str], *, seed: int) -> None:
        self.dataset = dataset
        self.image_ids = list(image_ids)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.image_ids)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch."""
        return sample_rng(self.seed, self.epoch, index)


@dataclass
class TrainingRecord:
    """Per-step losses (total and per term), learning rates and timings, saved in the checkpoint."""

    steps: int = 0
    losses: list[float] = field(default_factory=list)
    loss_terms: dict[str, list[float]] = field(default_factory=dict)
    learning_rates: list[float] = field(default_factory=list)
    epochs: int = 0
    images_per_second: float = 0.0
    seconds: float = 0.0
    step_ends: list[float] = field(default_factory=list)
    """Seconds from the loop's start to the end of each step (after the losses reached the host, so
    on CUDA the step's kernels have finished): lets a benchmark leave warm-up steps out."""


LossStep = Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
"""(network, batch on the device) -> named scalar losses, ``total`` among them (already scaled
so that DDP's gradient average gives the one-process gradient)."""


def schedule_length(
    num_samples: int, batch_size: int, *, epochs: int, steps: int | None = None, min_steps: int = 0
) -> int:
    """Optimizer steps of a training run: ``steps`` when given, else ``(num_samples // batch_size) *
    epochs`` (the reference's ``max_step``), raised to ``min_steps`` so that a small dataset still
    gets enough updates (the data are then cycled over more epochs)."""
    if num_samples // batch_size == 0:
        raise ValueError(f"{num_samples} training images are fewer than one batch of {batch_size}")
    total = steps if steps is not None else (num_samples // batch_size) * epochs
    return max(int(total), int(min_steps), 1)


def _progress_line(name: str, step: int, total: int, window: dict[str, list[float]], rate: float,
                   elapsed: float) -> str:
    losses = " ".join(f"{key} {np.mean(value):.4f}" for key, value in window.items())
    remaining = (total - step) * elapsed / max(step, 1)
    return f"{name} step {step}/{total} {losses} {rate:.1f} images/s ETA {_duration(remaining)}"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{seconds:02d}"


def _global_loss_values(losses: dict[str, torch.Tensor], context: DistributedContext) -> dict[str, float]:
    """The losses of the global batch: under DDP every process returns either its local mean (whose
    average over processes is the global mean) or, for losses normalised by global counts, its local
    share scaled by the world size (see :data:`LossStep`); either way the global value is the sum over
    processes divided by the world size."""
    names = list(losses)
    stacked = torch.stack([losses[name].detach().float().reshape(()) for name in names])
    summed = all_reduce_sum(stacked, context) / context.world_size
    return {name: float(value) for name, value in zip(names, summed.cpu(), strict=True)}


def train_loop(
    model: nn.Module,
    training_set: EpochDataset,
    parameter_groups: Sequence[GroupSpec],
    loss_step: LossStep,
    settings: LoopSettings,
    *,
    device: torch.device,
    context: DistributedContext,
    name: str,
    schedule: Callable[[int], Schedule] | None = None,
) -> TrainingRecord:
    """The reference's training schedule: :func:`schedule_length` steps of SGD, by default with the
    poly learning rate (``schedule``: total steps -> :data:`~irn_core.engine.optim.Schedule` for
    another one), shuffled, ``drop_last``. Shows a progress bar on a terminal (epoch, step, losses,
    images/s, ETA) and logs a line every ``log_every`` steps. Trains ``model`` in place (wrapped in
    DDP under torchrun).

    ``settings.precision`` (``compute.precision``): the forward pass and ``loss_step`` run under
    :func:`~irn_core.engine.runtime.autocast` (``loss_step`` computes its losses in float32 from
    the network's outputs cast with ``.float()``), the backward pass through the gradient scaler
    (active for float16 on CUDA only); float32 runs exactly the plain loop. ``settings.channels_last``:
    the model and the batch's ``image`` are put in channels-last memory format.
    """
    loader, sampler = make_loader(
        training_set, settings.batch_size, num_workers=settings.num_workers, seed=settings.seed, context=context,
        device=device,
    )
    max_step = schedule_length(
        len(training_set), settings.batch_size, epochs=settings.epochs, steps=settings.steps,
        min_steps=settings.min_steps,
    )
    max_step_run = max_step if settings.max_steps is None else min(max_step, settings.max_steps)
    make_schedule = schedule or (lambda total: poly_schedule(total, settings.poly_power))
    to_memory_format(model, settings.channels_last)  # before the optimizer sees its parameters
    optimizer = ScheduledSGD(
        parameter_groups,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        momentum=settings.momentum,
        schedule=make_schedule(max_step),
    )
    scaler = gradient_scaler(settings.precision, device)
    network = wrap_data_parallel(model, device, context)
    record = TrainingRecord()
    window: dict[str, list[float]] = {}
    started = time.perf_counter()
    images = 0
    bar = tqdm(total=max_step_run, desc=name, unit="step", disable=not context.is_main or None, leave=False)
    model.train()
    epoch = 0
    while record.steps < max_step_run:
        training_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        for batch in loader:
            if record.steps >= max_step_run:
                break
            batch = batch_to_device(batch, device, channels_last=settings.channels_last)
            with autocast(settings.precision, device):
                losses = loss_step(network, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
            record.steps += 1
            values = _global_loss_values(losses, context)
            record.losses.append(values["total"])
            record.learning_rates.append(float(optimizer.param_groups[0]["lr"]))
            for key, value in values.items():
                record.loss_terms.setdefault(key, []).append(value)
                window.setdefault(key, []).append(value)
            images += len(batch[next(iter(batch))]) * context.world_size
            elapsed = time.perf_counter() - started
            record.step_ends.append(elapsed)
            bar.update(1)
            bar.set_postfix(
                {"epoch": epoch, "loss": f"{values['total']:.4f}", "images/s": f"{images / max(elapsed, 1e-9):.1f}"},
                refresh=False,
            )
            if context.is_main and (record.steps % settings.log_every == 0 or record.steps == max_step_run):
                line = _progress_line(name, record.steps, max_step_run, window, images / max(elapsed, 1e-9), elapsed)
                logger.info("%s epoch %d lr %.5f", line, epoch, optimizer.param_groups[0]["lr"])
                window = {}
        epoch += 1
    bar.close()
    record.epochs = epoch
    record.seconds = time.perf_counter() - started
    record.images_per_second = images / max(record.seconds, 1e-9)
    model.eval()
    return record
