"""Training of the CAM network (``step/train_cam.py`` of the reference).

Multi-label soft-margin loss on global-average-pooled features, SGD with the poly schedule,
10x learning rate on the classifier, ``max_step = (len(ids) // batch) * epochs`` with shuffling and
``drop_last``. Augmentation (reference): long side resized to a random integer in [320, 640]
(bicubic), normalisation, random horizontal flip, random 512 crop padded with 0 (the mean colour).

Data-parallel: the global batch is split over processes (torchrun); every sample's augmentation
depends only on (seed, epoch, sample index), so one process and several give the same update.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from irn_core.data.registry import SegmentationDataset
from irn_core.data.transforms import hwc_to_chw, normalize, random_crop, random_lr_flip, random_resize_long
from irn_core.engine.distributed import DistributedContext
from irn_core.engine.optim import PolySGD
from irn_core.engine.runtime import sample_rng
from irn_core.engine.training import make_loader, wrap_data_parallel
from irn_core.models.backbones import build_backbone
from irn_core.models.cam import CAMNet

logger = logging.getLogger(__name__)


def multi_hot(class_ids: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """0-based class ids -> float32 (num_classes,) multi-hot vector."""
    vector = np.zeros(num_classes, np.float32)
    vector[np.asarray(class_ids, dtype=np.int64)] = 1.0
    return vector


class CAMTrainingDataset(Dataset):
    """Augmented (image, multi-hot label) samples: image float32 (3, crop, crop), label (num_classes,)."""

    def __init__(
        self,
        dataset: SegmentationDataset,
        image_ids: Sequence[str],
        *,
        crop_size: int,
        resize_long: tuple[int, int],
        seed: int,
    ) -> None:
        self.dataset = dataset
        self.image_ids = list(image_ids)
        self.crop_size = crop_size
        self.resize_long = resize_long
        self.seed = seed
        self.epoch = 0
        self.num_classes = len(dataset.class_names)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        rng = sample_rng(self.seed, self.epoch, index)
        image = self.dataset.image(image_id)
        image = random_resize_long(image, self.resize_long[0], self.resize_long[1], rng)
        image = normalize(image)
        (image,) = random_lr_flip([image], rng)
        (image,) = random_crop([image], self.crop_size, [0.0], rng)
        label = multi_hot(self.dataset.class_labels(image_id), self.num_classes)
        return {"image": torch.from_numpy(hwc_to_chw(image)), "label": torch.from_numpy(label), "index": index}


@dataclass(frozen=True)
class CAMTrainSettings:
    """What :func:`train_cam` needs (the ``cam`` config section, resolved)."""

    backbone: str
    weights: str
    frozen_batchnorm: bool
    frozen_stages: int
    batch_size: int
    epochs: int
    crop_size: int
    resize_long: tuple[int, int]
    learning_rate: float
    head_lr_multiplier: float
    weight_decay: float
    momentum: float
    poly_power: float
    num_workers: int
    seed: int
    log_every: int = 20
    max_steps: int | None = None
    """Stop after this many steps (tests); None: the full schedule."""


@dataclass
class TrainingRecord:
    """Per-step losses and timings, saved in the checkpoint."""

    steps: int = 0
    losses: list[float] = field(default_factory=list)
    images_per_second: float = 0.0
    seconds: float = 0.0


def build_cam_network(settings: CAMTrainSettings, num_classes: int) -> CAMNet:
    backbone = build_backbone(settings.backbone, weights=settings.weights, frozen_batchnorm=settings.frozen_batchnorm)
    return CAMNet(backbone, num_classes, frozen_stages=settings.frozen_stages)


def train_cam(
    dataset: SegmentationDataset,
    image_ids: Sequence[str],
    settings: CAMTrainSettings,
    *,
    device: torch.device,
    context: DistributedContext = DistributedContext(),
) -> tuple[CAMNet, TrainingRecord]:
    """Train a CAM network on ``image_ids``; returns the (unwrapped) model and the record."""
    torch.manual_seed(settings.seed)
    model = build_cam_network(settings, len(dataset.class_names)).to(device)
    training_set = CAMTrainingDataset(
        dataset, image_ids, crop_size=settings.crop_size, resize_long=settings.resize_long, seed=settings.seed
    )
    loader, sampler = make_loader(
        training_set, settings.batch_size, num_workers=settings.num_workers, seed=settings.seed, context=context
    )
    steps_per_epoch = len(image_ids) // settings.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(image_ids)} training images are fewer than one batch of {settings.batch_size}")
    max_step = steps_per_epoch * settings.epochs
    backbone_parameters, classifier_parameters = model.parameter_groups()
    optimizer = PolySGD(
        [(backbone_parameters, 1.0), (classifier_parameters, settings.head_lr_multiplier)],
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        momentum=settings.momentum,
        max_step=max_step,
        power=settings.poly_power,
    )
    network = wrap_data_parallel(model, device, context)
    record = TrainingRecord()
    started = time.perf_counter()
    images = 0
    model.train()
    for epoch in range(settings.epochs):
        training_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        for batch in loader:
            if record.steps >= max_step or (settings.max_steps is not None and record.steps >= settings.max_steps):
                break
            image = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            logits = network(image)
            loss = F.multilabel_soft_margin_loss(logits, label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            record.steps += 1
            record.losses.append(float(loss.detach()))
            images += image.shape[0] * context.world_size
            if context.is_main and (record.steps % settings.log_every == 0 or record.steps == max_step):
                elapsed = time.perf_counter() - started
                logger.info(
                    "cam step %d/%d epoch %d loss %.4f lr %.5f %.1f images/s",
                    record.steps, max_step, epoch, float(np.mean(record.losses[-settings.log_every:])),
                    optimizer.param_groups[0]["lr"], images / max(elapsed, 1e-9),
                )
    record.seconds = time.perf_counter() - started
    record.images_per_second = images / max(record.seconds, 1e-9)
    model.eval()
    return model, record
