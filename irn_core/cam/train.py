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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from irn_core.data.registry import SegmentationDataset
from irn_core.data.transforms import hwc_to_chw, normalize, random_crop, random_lr_flip, random_resize_long
from irn_core.engine.distributed import DistributedContext
from irn_core.engine.training import KeyedSamples, TrainingRecord, train_loop
from irn_core.models.backbones import build_backbone
from irn_core.models.cam import CAMNet

logger = logging.getLogger(__name__)


def multi_hot(class_ids: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """0-based class ids -> float32 (num_classes,) multi-hot vector."""
    vector = np.zeros(num_classes, np.float32)
    vector[np.asarray(class_ids, dtype=np.int64)] = 1.0
    return vector


class CAMTrainingDataset(KeyedSamples):
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
        super().__init__(dataset, image_ids, seed=seed)
        self.crop_size = crop_size
        self.resize_long = resize_long
        self.num_classes = len(dataset.class_names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        rng = self.rng(index)
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
    steps: int | None = None
    """Total optimizer steps instead of ``epochs`` (see :func:`irn_core.engine.training.schedule_length`)."""
    min_steps: int = 0
    """At least this many steps (small datasets are cycled over more epochs)."""
    log_every: int = 20
    max_steps: int | None = None
    """Stop after this many steps (tests); None: the full schedule."""
    precision: str = "float32"
    """``compute.precision``: the forward pass under autocast (see :func:`~irn_core.engine.training.train_loop`)."""
    channels_last: bool = False
    """``compute.channels_last``: model and images in channels-last memory format."""


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

    def loss_step(network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = network(batch["image"]).float()  # float32 loss under autocast
        return {"total": F.multilabel_soft_margin_loss(logits, batch["label"])}

    backbone_parameters, classifier_parameters = model.parameter_groups()
    groups = [(backbone_parameters, 1.0), (classifier_parameters, settings.head_lr_multiplier)]
    record = train_loop(model, training_set, groups, loss_step, settings, device=device, context=context, name="cam")
    return model, record
