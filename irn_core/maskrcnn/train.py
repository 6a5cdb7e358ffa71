"""Training of Mask R-CNN on instance labels (the pseudo labels, or the ground truth for an upper bound).

The recipe is the one the authors ran in Detectron (see ``config.MaskRCNNTrainConfig``): SGD with
momentum 0.9, weight decay 1e-4 (none on biases, which learn at twice the rate), a linear warm-up from
1/3 of the rate over 500 steps, step decay by 0.1 at 12k and 16k of 18k steps, 4 images a batch,
horizontal flip; the short side is resized to 512 (long side at most 800) inside the model.

Samples. Every image keeps its size; :class:`MaskRCNNTrainingDataset` pastes it top-left into a canvas
as large as the largest training image and its instances into ``max_instances`` padded slots, so that
the training loop's default collation stacks them; :func:`unpack_batch` cuts them back into the lists
of images and targets torchvision takes. An instance's box is the tight box of its mask in pixel-edge
coordinates (x1, y1, x2, y2) = (min x, min y, max x + 1, max y + 1). Instances whose mask is empty
are dropped; an image left without instances is kept (only background is learnt from it).
Augmentation and the anchor / proposal sampling of a sample depend only on (seed, epoch, index)
(:class:`~irn_core.models.maskrcnn.KeyedSampler`).

Losses are torchvision's: each is a mean over the anchors, proposals or mask pixels sampled in the
local batch. Under DDP the gradient is the average of the processes' means (as in Detectron and in
torchvision's reference scripts); it equals the one-process gradient when every process samples as
many anchors, proposals and positive proposals per image, and its images have one size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torchvision.models.detection import MaskRCNN

from irn_core.data.registry import SegmentationDataset
from irn_core.engine.distributed import DistributedContext
from irn_core.engine.optim import ParameterGroup, step_schedule
from irn_core.engine.training import KeyedSamples, LossStep, TrainingRecord, train_loop
from irn_core.errors import DatasetError, TrainingError
from irn_core.models.maskrcnn import parameter_groups, set_sampling_keys
from irn_core.store import ShardedStore

logger = logging.getLogger(__name__)

SAMPLE_KEY_RANGE = 2**62
"""Sampling keys are drawn in [0, 2**62) (see :class:`~irn_core.models.maskrcnn.KeyedSampler`)."""

REFERENCE_MIN_SCORE = 1e-5
"""The reference's ``make_cocoann.py`` leaves out instance pseudo labels scoring below this."""


class InstanceSource(Protocol):
    """Where the training instances of an image come from."""

    def read(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``masks`` (N, H, W) bool and ``class_ids`` (N,) int64, 0-based."""
        ...

    def count(self, image_id: str) -> int:
        """N of :meth:`read` (at least; empty masks are dropped later)."""
        ...

    def describe(self, image_id: str) -> str:
        """Where the image's instances are stored (for error messages)."""
        ...


class StoredInstances:
    """Instances of the HDF5 store (``masks_s1``, ``class_ids``, ``scores``), those scoring at least
    ``min_score`` (the reference keeps pseudo labels with score >= 1e-5).

    The shard files are opened lazily in each process (data loader workers included)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, min_score: float = REFERENCE_MIN_SCORE,
                 product: str = "instances") -> None:
        self.paths = [Path(path) for path in paths]
        self.min_score = float(min_score)
        self.product = product
        self._store: ShardedStore | None = None
        self._pid: int | None = None

    def _open(self) -> ShardedStore:
        if self._store is None or self._pid != os.getpid():
            self._store = ShardedStore(self.paths, product=self.product)
            self._pid = os.getpid()
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_pid": None}

    def _kept(self, image_id: str) -> np.ndarray:
        scores = self._open().read(image_id, ["scores"])["scores"]
        return np.asarray(scores, np.float64).reshape(-1) >= self.min_score

    def read(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        stored = self._open().read(image_id, ["masks_s1", "class_ids", "scores"])
        masks, class_ids, scores = stored["masks_s1"], stored["class_ids"], stored["scores"]
        if masks.ndim != 3 or not len(masks) == len(class_ids) == len(scores):
            raise DatasetError(
                f"{self.describe(image_id)}: image id {image_id!r}: masks {masks.shape}, class_ids "
                f"{class_ids.shape} and scores {scores.shape} do not describe one set of instances"
            )
        kept = np.asarray(scores, np.float64) >= self.min_score
        return masks[kept].astype(bool), np.asarray(class_ids, np.int64)[kept]

    def count(self, image_id: str) -> int:
        return int(self._kept(image_id).sum())

    def describe(self, image_id: str) -> str:
        return str(self._open().reader_for(image_id).path)


class GroundTruthInstances:
    """The dataset's own instance annotations (the fully supervised upper bound)."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def read(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        masks, class_ids = self.dataset.instance_masks(image_id)
        return np.asarray(masks, bool), np.asarray(class_ids, np.int64)

    def count(self, image_id: str) -> int:
        return len(self.dataset.instance_masks(image_id)[1])

    def describe(self, image_id: str) -> str:
        return f"ground truth of {self.dataset!r}"


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of non-empty masks (N, H, W) bool -> (N, 4) float32 (x1, y1, x2, y2), pixel edges:
    a mask covering columns 3..5 has x1 = 3, x2 = 6."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for index, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        columns = np.flatnonzero(mask.any(axis=0))
        boxes[index] = (columns[0], rows[0], columns[-1] + 1, rows[-1] + 1)
    return boxes


def checked_instances(
    masks: np.ndarray, class_ids: np.ndarray, image_size: tuple[int, int], num_classes: int, *, where: str,
    image_id: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate an image's instances and drop empty masks: a wrong mask size, a class id outside
    0..num_classes-1 or mismatched counts raise :class:`DatasetError` naming ``where`` and the image."""
    masks = np.asarray(masks)
    class_ids = np.asarray(class_ids).reshape(-1)
    if masks.ndim != 3 or masks.shape[1:] != tuple(image_size):
        raise DatasetError(
            f"{where}: image id {image_id!r}: instance masks have shape {masks.shape}, "
            f"expected (N, {image_size[0]}, {image_size[1]}) for the image"
        )
    if len(masks) != len(class_ids):
        raise DatasetError(f"{where}: image id {image_id!r}: {len(masks)} masks but {len(class_ids)} class ids")
    outside = class_ids[(class_ids < 0) | (class_ids >= num_classes)]
    if outside.size:
        raise DatasetError(
            f"{where}: image id {image_id!r}: class id {int(outside[0])} outside 0..{num_classes - 1}"
        )
    masks = masks.astype(bool)
    non_empty = masks.any(axis=(1, 2))
    return masks[non_empty], class_ids[non_empty].astype(np.int64)


class MaskRCNNTrainingDataset(KeyedSamples):
    """Samples of fixed shapes for the default collation.

    ``image`` uint8 (3, Hc, Wc) and ``masks`` bool (M, Hc, Wc), the image and its masks top-left in the
    canvas (Hc, Wc) = the largest height and width of the training images; ``size`` int64 (2,) = (H, W);
    ``boxes`` float32 (M, 4); ``labels`` int64 (M,) = class id + 1 (0 in unused slots); ``count`` the
    number of instances; ``key`` the sampling key; ``index`` the sample index. M = ``max_instances``,
    the largest instance count of the training images.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        image_ids: Sequence[str],
        instances: InstanceSource,
        *,
        num_classes: int,
        seed: int,
        flip: bool = True,
    ) -> None:
        super().__init__(dataset, image_ids, seed=seed)
        if not self.image_ids:
            raise DatasetError("Mask R-CNN training: no training images")
        self.instances = instances
        self.num_classes = num_classes
        self.flip = flip
        sizes = [dataset.image_size(image_id) for image_id in self.image_ids]
        self.canvas = (max(size[0] for size in sizes), max(size[1] for size in sizes))
        counts = [instances.count(image_id) for image_id in self.image_ids]
        self.max_instances = max(counts)
        self.empty_images = sum(count == 0 for count in counts)
        logger.info(
            "Mask R-CNN training set: %d images, %d instances, %d images without an instance, canvas %s",
            len(self.image_ids), sum(counts), self.empty_images, self.canvas,
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        rng = self.rng(index)
        key = int(rng.integers(SAMPLE_KEY_RANGE))
        image = self.dataset.image(image_id)
        height, width = image.shape[:2]
        masks, class_ids = self.instances.read(image_id)
        masks, class_ids = checked_instances(
            masks, class_ids, (height, width), self.num_classes, where=self.instances.describe(image_id),
            image_id=image_id,
        )
        if len(masks) > self.max_instances:
            raise DatasetError(
                f"{self.instances.describe(image_id)}: image id {image_id!r}: {len(masks)} instances, "
                f"more than the {self.max_instances} counted when the training set was built"
            )
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
            masks = masks[:, :, ::-1]
        canvas_image = np.zeros((3, *self.canvas), np.uint8)
        canvas_image[:, :height, :width] = image.transpose(2, 0, 1)
        canvas_masks = np.zeros((self.max_instances, *self.canvas), bool)
        canvas_masks[: len(masks), :height, :width] = masks
        boxes = np.zeros((self.max_instances, 4), np.float32)
        boxes[: len(masks)] = mask_boxes(masks)
        labels = np.zeros(self.max_instances, np.int64)
        labels[: len(masks)] = class_ids + 1
        return {
            "image": torch.from_numpy(canvas_image),
            "size": torch.tensor([height, width], dtype=torch.int64),
            "masks": torch.from_numpy(canvas_masks),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "count": torch.tensor(len(masks), dtype=torch.int64),
            "key": torch.tensor(key, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }


def unpack_batch(batch: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A collated batch of :class:`MaskRCNNTrainingDataset` -> torchvision's (images, targets): images
    float (3, H, W) in [0, 1] cut to their sizes, targets with ``boxes`` (N, 4), ``labels`` (N,)
    (1-based) and ``masks`` uint8 (N, H, W)."""
    images, targets = [], []
    for index in range(batch["image"].shape[0]):
        height, width = (int(value) for value in batch["size"][index])
        count = int(batch["count"][index])
        images.append(batch["image"][index, :, :height, :width].float() / 255.0)
        targets.append(
            {
                "boxes": batch["boxes"][index, :count],
                "labels": batch["labels"][index, :count],
                "masks": batch["masks"][index, :count, :height, :width].to(torch.uint8),
            }
        )
    return images, targets


def mask_rcnn_loss_step(model: MaskRCNN) -> LossStep:
    """(network, batch) -> torchvision's five losses (``classifier``, ``box_reg``, ``mask``,
    ``objectness``, ``rpn_box_reg``) and their sum ``total``; ``model`` is the unwrapped network whose
    samplers take the batch's keys."""

    def loss_step(network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, targets = unpack_batch(batch)
        set_sampling_keys(model, batch["key"].tolist())
        try:
            losses = network(images, targets)
        finally:
            set_sampling_keys(model, None)
        named = {name.removeprefix("loss_"): value.float() for name, value in losses.items()}
        total = sum(named.values())
        if not torch.isfinite(total.detach()):
            values = ", ".join(f"{name} {float(value.detach()):.4g}" for name, value in named.items())
            raise TrainingError(
                f"Mask R-CNN loss is not finite ({values}) on the images of sample indices "
                f"{batch['index'].tolist()}: lower maskrcnn.train.learning_rate, or normalise the pyramid "
                "(maskrcnn.model.fpn_norm: group_norm)"
            )
        return {"total": total, **named}

    return loss_step


@dataclass(frozen=True)
class MaskRCNNTrainSettings:
    """What :func:`train_mask_rcnn` needs (the ``maskrcnn.train`` config section, resolved)."""

    batch_size: int
    learning_rate: float
    lr_steps: tuple[int, ...]
    num_workers: int
    seed: int
    epochs: int = 1
    steps: int | None = None
    min_steps: int = 0
    lr_gamma: float = 0.1
    warmup_steps: int = 500
    warmup_factor: float = 1.0 / 3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    bias_lr_multiplier: float = 2.0
    bias_weight_decay: bool = False
    flip: bool = True
    poly_power: float = 0.9
    """Unused (the schedule is step decay); a field of the training loop's settings."""
    log_every: int = 20
    max_steps: int | None = None
    """Stop after this many steps (tests); None: the full schedule."""
    precision: str = "float32"
    """``compute.precision``: the forward pass under autocast (see :func:`~irn_core.engine.training.train_loop`)."""
    channels_last: bool = False
    """Channels-last memory format: left False for Mask R-CNN (torchvision batches the images into a
    new contiguous tensor, so only the weights would change format)."""


def train_mask_rcnn(
    model: MaskRCNN,
    training_set: MaskRCNNTrainingDataset,
    settings: MaskRCNNTrainSettings,
    *,
    device: torch.device,
    context: DistributedContext = DistributedContext(),
) -> TrainingRecord:
    """Train ``model`` (already on ``device``) in place with Detectron's step schedule; returns the record."""
    weights, biases = parameter_groups(model)
    groups = [
        ParameterGroup(weights, 1.0),
        ParameterGroup(biases, settings.bias_lr_multiplier, None if settings.bias_weight_decay else 0.0),
    ]

    def schedule(total_steps: int):  # noqa: ANN202 (a Schedule)
        return step_schedule(
            settings.lr_steps, settings.lr_gamma, warmup_steps=settings.warmup_steps,
            warmup_factor=settings.warmup_factor,
        )

    return train_loop(
        model, training_set, groups, mask_rcnn_loss_step(model), settings,
        device=device, context=context, name="maskrcnn", schedule=schedule,
    )
