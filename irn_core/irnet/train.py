"""Training of IRNet (``step/train_irn.py`` of the reference) and the displacement-mean pass.

Samples: random rescale in [0.5, 1.5] (image bicubic, IR label nearest) -> normalise -> random
horizontal flip -> random crop (image pad 0, label pad 255) -> label reduced x0.25 with Pillow
nearest. The data loader ships that small uint8 label map; pair labels over the radius-10 path
index are built on the training device inside the loss.

Loss reduction is over the whole global batch (the reference gathers every per-pair loss on one
GPU before reducing). Under data parallelism each process divides its local sums by the global
pair counts (summed over processes) and scales by the world size, so the gradient that DDP
averages equals the one-process gradient.

After training, ``MeanShift.running_mean`` is set to the mean displacement over top-left-cropped,
zero-padded images of the inference list (batch means averaged, padding included, as the reference).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from irn_core.data.registry import SegmentationDataset
from irn_core.data.transforms import (
    BICUBIC,
    NEAREST,
    hwc_to_chw,
    normalize,
    pil_rescale,
    random_crop,
    random_lr_flip,
    random_scale,
    top_left_crop,
)
from irn_core.engine.distributed import DistributedContext, all_reduce_sum
from irn_core.engine.training import KeyedSamples, TrainingRecord, train_loop
from irn_core.models.irnet import IRNet
from irn_core.relations.losses import affinity_displacement_loss
from irn_core.relations.path_index import path_index

logger = logging.getLogger(__name__)

LabelSource = Callable[[str], np.ndarray]
"""image id -> uint8 (H, W) confident-region label map (0 background, k+1, 255 ignore)."""


class IRNetTrainingDataset(KeyedSamples):
    """Samples: image float32 (3, crop, crop), label uint8 (crop/4, crop/4)."""

    def __init__(
        self,
        dataset: SegmentationDataset,
        image_ids: Sequence[str],
        labels: LabelSource,
        *,
        crop_size: int,
        scale_range: tuple[float, float],
        seed: int,
    ) -> None:
        super().__init__(dataset, image_ids, seed=seed)
        self.labels = labels
        self.crop_size = crop_size
        self.scale_range = scale_range

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        rng = self.rng(index)
        image = self.dataset.image(image_id)
        label = self.labels(image_id)
        if label.shape != image.shape[:2]:
            raise ValueError(f"image id {image_id!r}: IR label {label.shape} does not match image {image.shape[:2]}")
        image, label = random_scale([image, label], self.scale_range, (BICUBIC, NEAREST), rng)
        image = normalize(image)
        image, label = random_lr_flip([image, label], rng)
        image, label = random_crop([image, label], self.crop_size, [0.0, 255], rng)
        label = pil_rescale(label, 0.25, NEAREST)
        return {
            "image": torch.from_numpy(hwc_to_chw(image)),
            "label": torch.from_numpy(np.ascontiguousarray(label)),
            "index": index,
        }


class TopLeftImageDataset(Dataset):
    """Normalised images pasted top-left into a zero ``crop_size``² canvas (the displacement-mean pass)."""

    def __init__(self, dataset: SegmentationDataset, image_ids: Sequence[str], *, crop_size: int) -> None:
        self.dataset = dataset
        self.image_ids = list(image_ids)
        self.crop_size = crop_size

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = normalize(self.dataset.image(self.image_ids[index]))
        return torch.from_numpy(hwc_to_chw(top_left_crop(image, self.crop_size, 0.0)))


@dataclass(frozen=True)
class IRNetTrainSettings:
    batch_size: int
    epochs: int
    crop_size: int
    scale_range: tuple[float, float]
    radius: float
    learning_rate: float
    head_lr_multiplier: float
    weight_decay: float
    momentum: float
    poly_power: float
    num_workers: int
    seed: int
    displacement_mean_batches: int | None = None
    steps: int | None = None
    """Total optimizer steps instead of ``epochs`` (see :func:`irn_core.engine.training.schedule_length`)."""
    min_steps: int = 0
    """At least this many steps (small datasets are cycled over more epochs)."""
    log_every: int = 20
    max_steps: int | None = None
    displacement_bg_weight: float = 1.0
    """Weight w of the background displacement term in the total (reference 1; ``fixed`` preset 0.1)."""
    precision: str = "float32"
    """``compute.precision``: the forward pass under autocast (see :func:`~irn_core.engine.training.train_loop`)."""
    channels_last: bool = False
    """``compute.channels_last``: model and images in channels-last memory format."""


def _loss_step(radius: float, context: DistributedContext, bg_weight: float = 1.0):  # noqa: ANN202
    """The LossStep of IRNet: the total is ``(L_pos + L_neg)/2 + (L_Dfg + w L_Dbg)/2`` with w =
    ``bg_weight`` (the reference's when 1); the recorded terms are unweighted, plus
    ``displacement_fg_constant`` (see :func:`affinity_displacement_loss`)."""
    index = path_index(radius)

    def loss_step(network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        boundary_logits, displacement = (output.float() for output in network(batch["image"]))  # float32 losses
        reducer = (lambda counts: all_reduce_sum(counts, context)) if context.enabled else None
        losses = affinity_displacement_loss(
            boundary_logits, displacement, batch["label"], index, count_reducer=reducer, constant_reference=True
        )
        if bg_weight != 1.0:
            losses["total"] = losses["total"] - (1.0 - bg_weight) * losses["displacement_bg"] / 2
        if not context.enabled:
            return losses
        # DDP averages gradients over processes; the losses were divided by global counts.
        return {name: value * context.world_size for name, value in losses.items()}

    return loss_step


def train_irnet(
    model: IRNet,
    dataset: SegmentationDataset,
    image_ids: Sequence[str],
    labels: LabelSource,
    settings: IRNetTrainSettings,
    *,
    device: torch.device,
    context: DistributedContext = DistributedContext(),
) -> TrainingRecord:
    """Train the heads of ``model`` (already on ``device``) in place; returns the record."""
    torch.manual_seed(settings.seed)
    training_set = IRNetTrainingDataset(
        dataset, image_ids, labels, crop_size=settings.crop_size, scale_range=settings.scale_range, seed=settings.seed
    )
    boundary_parameters, displacement_parameters = model.parameter_groups()
    groups = [(boundary_parameters, 1.0), (displacement_parameters, settings.head_lr_multiplier)]
    return train_loop(
        model, training_set, groups, _loss_step(settings.radius, context, settings.displacement_bg_weight), settings,
        device=device, context=context, name="irnet",
    )


def measure_displacement_mean(
    model: IRNet,
    dataset: SegmentationDataset,
    image_ids: Sequence[str],
    *,
    crop_size: int,
    batch_size: int,
    device: torch.device,
    max_batches: int | None = None,
    num_workers: int = 0,
    on_batch: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """The mean displacement (2,) over images of ``image_ids`` (reference: train.txt, batch 32).

    Batches are full batches in list order (``drop_last``, as the reference); when the list is
    shorter than one batch, the single partial batch is used instead. Returns the average of the
    per-batch means over (batch, H, W), padding included. The model's ``running_mean`` is not changed.
    ``on_batch`` receives every batch's displacement (B, 2, h, w) (e.g. to collect statistics).
    """
    images = TopLeftImageDataset(dataset, image_ids, crop_size=crop_size)
    drop_last = len(images) >= batch_size
    loader = DataLoader(
        images, batch_size=batch_size, shuffle=False, drop_last=drop_last, num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    model.eval()
    saved = model.mean_shift.running_mean.clone()
    model.mean_shift.running_mean.zero_()
    batch_means = []
    try:
        with torch.inference_mode():
            for index, batch in enumerate(loader):
                if max_batches is not None and index >= max_batches:
                    break
                _, displacement = model(batch.to(device, non_blocking=True))
                displacement = displacement.float()  # under the caller's autocast: the mean in float32
                batch_means.append(displacement.mean(dim=(0, 2, 3)))
                if on_batch is not None:
                    on_batch(displacement)
    finally:
        model.mean_shift.running_mean.copy_(saved)
    if not batch_means:
        raise ValueError("no images for the displacement-mean pass")
    return torch.stack(batch_means).mean(dim=0)
