"""Training of DeepLab v2 with the recipe of the PyTorch port kazuto1011/deeplab-pytorch (VOC 2012 config).

What a training sample is (the port's ``_augmentation``): the image and its label map are rescaled by
a factor drawn uniformly from ``scales`` (0.5, 0.75, 1.0, 1.25, 1.5) to (int(H s), int(W s)), the
image bilinearly (as OpenCV's ``INTER_LINEAR``: no antialiasing) and the label with Pillow's nearest
neighbour; both are padded at the bottom/right up to ``crop_size`` (321), the image with the mean
colour (0 after normalisation) and the label with 255; a random ``crop_size``² window is cut; both
are flipped horizontally with probability 1/2. Images are normalised with the ImageNet mean and
standard deviation of the pipeline (the port subtracts Caffe's BGR mean: its backbone is Caffe's).

The loss (the port's ``train``): cross entropy ignoring label 255, computed **at the logit
resolution**: the label map of the crop is reduced to the size of each logit map with Pillow's
nearest neighbour (``resize_labels`` of the port; here the identical rule ``nearest-exact`` of
``torch.nn.functional.interpolate``, run on the training device). With multi-scale inputs
(``input_scales``, the port's ``MSC`` with 0.5 and 0.75) the crop is also resized bilinearly to
int(321 s) and run through the network; the loss is the sum of the cross entropies of the full-scale
logits, of each scale's logits and of their pixel-wise maximum (the smaller logits upsampled
bilinearly to the full-scale logit size first). Each cross entropy is the mean over the non-ignored
pixels of the whole (global) batch; a batch without any labelled pixel contributes 0.

Optimiser (the port's ``get_params`` and ``PolynomialLR``): SGD, momentum 0.9, weight decay 5e-4; the
backbone weights at the base rate 2.5e-4, the ASPP weights at 10x, the ASPP biases at 20x without
weight decay; BatchNorm frozen (running statistics, affine parameters not trained: the port's
optimiser holds convolution weights only). The rate follows the poly schedule with power 0.9 but is
updated every ``lr_decay_every`` (10) steps: lr = lr0 (1 - 10 floor(step / 10) / max_step) ** 0.9.
The port's 20,000 iterations of 5 images with 2 accumulated iterations are 20,000 steps of a batch of
10 here (the same gradient: BatchNorm is frozen).

Data-parallel: the global batch is split over processes (torchrun); every sample's augmentation
depends only on (seed, epoch, sample index), and the cross entropies are divided by the pixel counts
summed over processes, so one process and several give the same update.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from irn_core.data.registry import SegmentationDataset
from irn_core.data.transforms import hwc_to_chw, normalize
from irn_core.engine.distributed import DistributedContext, all_reduce_sum
from irn_core.engine.optim import ParameterGroup, Schedule
from irn_core.engine.training import KeyedSamples, TrainingRecord, train_loop
from irn_core.errors import InputError
from irn_core.models.backbones import build_backbone
from irn_core.models.deeplab import DeepLabV2

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255
"""Label of pixels that do not count in the loss (the pipeline's void label)."""

LabelSource = Callable[[str], np.ndarray]
"""image id -> uint8 (H, W) semantic label map (0 background, k+1 class k, 255 ignore)."""


def check_label_map(label: np.ndarray, image_shape: tuple[int, int], num_classes: int, image_id: str,
                    source: str = "label map") -> None:
    """Raise :class:`InputError` naming ``image_id`` and ``source`` unless ``label`` is an (H, W) integer
    map of the image's size with values in 0 .. num_classes - 1 or 255."""
    if not isinstance(label, np.ndarray) or label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        description = f"{label.dtype} {label.shape}" if isinstance(label, np.ndarray) else type(label).__name__
        raise InputError(f"{source} of image id {image_id!r}: expected an (H, W) integer label map, got {description}")
    if label.shape != tuple(image_shape):
        raise InputError(
            f"{source} of image id {image_id!r} is {label.shape[0]}x{label.shape[1]}, "
            f"the image is {image_shape[0]}x{image_shape[1]}"
        )
    invalid = ((label < 0) | (label >= num_classes)) & (label != IGNORE_LABEL)
    if invalid.any():
        values = sorted({int(value) for value in np.unique(label[invalid])})
        raise InputError(
            f"{source} of image id {image_id!r} holds class ids {values[:10]} outside 0..{num_classes - 1} "
            f"(and {IGNORE_LABEL} = ignore)"
        )


def resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize without antialiasing (align_corners=False, OpenCV's INTER_LINEAR rule).

    ``images``: (B, C, H, W) float -> (B, C, size[0], size[1]); returned unchanged if of that size.
    """
    if tuple(images.shape[2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def resize_label_map(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow nearest-neighbour resize of an (H, W) uint8 label map to ``size`` = (height, width)."""
    if label.shape == tuple(size):
        return label
    return np.asarray(Image.fromarray(label).resize((size[1], size[0]), Image.Resampling.NEAREST))


def labels_at(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Label maps reduced to a logit map's size with Pillow's nearest-neighbour rule (``nearest-exact``:
    output pixel i takes input pixel floor((i + 0.5) H / h)).

    ``labels``: (B, H, W) integer -> (B, size[0], size[1]) int64, on the same device.
    """
    if tuple(labels.shape[1:]) == tuple(size):
        return labels.long()
    resized = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return resized[:, 0].long()


def pad_and_crop(
    image: np.ndarray, label: np.ndarray, crop_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right to at least ``crop_size`` (image 0, label 255), then cut a random ``crop_size``² window.

    ``image``: (H, W, 3) float32, ``label``: (H, W) uint8 -> (crop, crop, 3), (crop, crop).
    """
    height, width = label.shape
    padded_height, padded_width = max(height, crop_size), max(width, crop_size)
    if (padded_height, padded_width) != (height, width):
        padded_image = np.zeros((padded_height, padded_width, 3), image.dtype)
        padded_image[:height, :width] = image
        padded_label = np.full((padded_height, padded_width), IGNORE_LABEL, label.dtype)
        padded_label[:height, :width] = label
        image, label = padded_image, padded_label
    top = int(rng.integers(0, padded_height - crop_size + 1))
    left = int(rng.integers(0, padded_width - crop_size + 1))
    window = (slice(top, top + crop_size), slice(left, left + crop_size))
    return image[window], label[window]


class DeepLabTrainingDataset(KeyedSamples):
    """Augmented samples: ``image`` float32 (3, crop, crop), ``label`` uint8 (crop, crop), ``index``.

    ``labels`` gives each image's label map (pseudo labels or ground truth); a map of the wrong size or
    with class ids out of range raises :class:`InputError` naming the image id and
    ``label_description`` (a text, or a function of the image id naming e.g. the file).
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        image_ids: Sequence[str],
        labels: LabelSource,
        *,
        crop_size: int,
        scales: Sequence[float],
        flip: bool,
        seed: int,
        label_description: str | Callable[[str], str] = "label map",
    ) -> None:
        super().__init__(dataset, image_ids, seed=seed)
        self.labels = labels
        self.crop_size = crop_size
        self.scales = tuple(float(scale) for scale in scales)
        self.flip = flip
        self.num_classes = len(dataset.class_names) + 1
        self.label_description = label_description

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        rng = self.rng(index)
        image = self.dataset.image(image_id)
        label = np.asarray(self.labels(image_id))
        description = self.label_description
        if callable(description):
            description = description(image_id)
        check_label_map(label, image.shape[:2], self.num_classes, image_id, description)
        label = label.astype(np.uint8)
        scale = self.scales[int(rng.integers(len(self.scales)))]
        size = (max(int(image.shape[0] * scale), 1), max(int(image.shape[1] * scale), 1))
        chw = resize_images(torch.from_numpy(hwc_to_chw(normalize(image)))[None], size)[0]
        label = resize_label_map(label, size)
        crop, label = pad_and_crop(chw.permute(1, 2, 0).numpy(), label, self.crop_size, rng)
        if self.flip and rng.random() < 0.5:
            crop, label = crop[:, ::-1], label[:, ::-1]
        return {
            "image": torch.from_numpy(hwc_to_chw(crop)),
            "label": torch.from_numpy(np.ascontiguousarray(label)),
            "index": index,
        }


class MultiScaleInputs(nn.Module):
    """Training wrapper of the recipe's multi-scale inputs (the port's ``MSC``).

    ``forward(x)``: (B, 3, H, W) -> list of logits: the model's logits of ``x``, then those of ``x``
    resized bilinearly to (int(H s), int(W s)) for each of ``input_scales``, then (if there are any)
    the pixel-wise maximum of all of them after resizing each to the first one's size. Without
    ``input_scales`` the list holds the model's logits alone. Shares the model's parameters.
    """

    def __init__(self, model: DeepLabV2, input_scales: Sequence[float] = ()) -> None:
        super().__init__()
        self.model = model
        self.input_scales = tuple(float(scale) for scale in input_scales)

    def forward(self, x: Tensor) -> list[Tensor]:
        logits = self.model(x)
        if not self.input_scales:
            return [logits]
        outputs = [logits]
        for scale in self.input_scales:
            size = (max(int(x.shape[2] * scale), 1), max(int(x.shape[3] * scale), 1))
            outputs.append(self.model(resize_images(x, size)))
        size = tuple(logits.shape[2:])
        maximum = torch.stack([resize_images(output, size) for output in outputs]).amax(dim=0)
        return outputs + [maximum]

    def term_names(self) -> list[str]:
        """Names of the loss terms, in the order of :meth:`forward`'s outputs."""
        if not self.input_scales:
            return ["cross_entropy"]
        return ["scale_1"] + [f"scale_{scale:g}" for scale in self.input_scales] + ["scale_max"]


def cross_entropy_terms(
    logits: Sequence[Tensor], labels: Tensor, context: DistributedContext = DistributedContext()
) -> list[Tensor]:
    """Cross entropy (255 ignored) of each logit map against ``labels`` reduced to its size.

    ``logits``: (B, C, h_i, w_i) each; ``labels``: (B, H, W) integer. Each term is the sum over this
    process's labelled pixels divided by the labelled pixels of the global batch (all processes),
    times the number of processes, so that data parallelism's gradient average equals the one-process
    gradient of the global-batch mean. 0 when no pixel is labelled.
    """
    terms = []
    for logit in logits:
        target = labels_at(labels, tuple(logit.shape[2:]))
        total = F.cross_entropy(logit, target, ignore_index=IGNORE_LABEL, reduction="sum")
        count = all_reduce_sum((target != IGNORE_LABEL).sum().to(logit.dtype), context)
        terms.append(total * context.world_size / count.clamp(min=1))
    return terms


@dataclass(frozen=True)
class DeepLabTrainSettings:
    """What :func:`train_deeplab` needs (the ``deeplab`` config section, resolved). Defaults: the recipe."""

    backbone: str = "resnet50"
    weights: str = "imagenet"
    output_stride: int = 8
    frozen_batchnorm: bool = True
    atrous_rates: tuple[int, ...] = (6, 12, 18, 24)
    frozen_stages: int = 0
    batch_size: int = 10
    epochs: int = 5
    steps: int | None = 20000
    min_steps: int = 0
    crop_size: int = 321
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
    flip: bool = True
    input_scales: tuple[float, ...] = (0.5, 0.75)
    learning_rate: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    lr_decay_every: int = 10
    backbone_lr_multiplier: float = 1.0
    aspp_weight_lr_multiplier: float = 10.0
    aspp_bias_lr_multiplier: float = 20.0
    aspp_bias_weight_decay: float = 0.0
    num_workers: int = 0
    seed: int = 0
    log_every: int = 20
    max_steps: int | None = None
    """Stop after this many steps (tests); None: the full schedule."""
    precision: str = "float32"
    """``compute.precision``: the forward pass under autocast (see :func:`~irn_core.engine.training.train_loop`)."""
    channels_last: bool = False
    """``compute.channels_last``: model and images in channels-last memory format."""


def stepped_poly_schedule(max_step: int, power: float = 0.9, every: int = 10) -> Schedule:
    """``(1 - every * floor(step / every) / max_step) ** power``: the poly rate updated every ``every``
    steps (the port's ``PolynomialLR`` with ``step_size``); ``every`` = 1 is the plain poly schedule."""
    if max_step < 1 or every < 1:
        raise ValueError(f"max_step and every must be >= 1, got {max_step} and {every}")

    def factor(step: int) -> float:
        held = min(every * (step // every), max_step)
        return (1 - held / max_step) ** power

    return factor


def build_deeplab(settings: DeepLabTrainSettings, num_classes: int, *, pretrained: bool = True) -> DeepLabV2:
    """DeepLab v2 on ``settings.backbone`` (``settings.weights`` when ``pretrained``, else random)."""
    backbone = build_backbone(
        settings.backbone,
        weights=settings.weights if pretrained else "none",
        frozen_batchnorm=settings.frozen_batchnorm,
        output_stride=settings.output_stride,
    )
    return DeepLabV2(
        backbone,
        num_classes,
        atrous_rates=settings.atrous_rates,
        frozen_stages=settings.frozen_stages,
        freeze_batchnorm=settings.frozen_batchnorm,
    )


def parameter_groups(model: DeepLabV2, settings: DeepLabTrainSettings) -> list[ParameterGroup]:
    """The recipe's groups: backbone 1x, ASPP weights 10x, ASPP biases 20x without weight decay."""
    backbone, weights, biases = model.parameter_groups()
    return [
        ParameterGroup(backbone, settings.backbone_lr_multiplier),
        ParameterGroup(weights, settings.aspp_weight_lr_multiplier),
        ParameterGroup(biases, settings.aspp_bias_lr_multiplier, weight_decay=settings.aspp_bias_weight_decay),
    ]


def train_deeplab(
    dataset: SegmentationDataset,
    image_ids: Sequence[str],
    labels: LabelSource,
    settings: DeepLabTrainSettings,
    *,
    device: torch.device,
    context: DistributedContext = DistributedContext(),
    label_description: str | Callable[[str], str] = "label map",
) -> tuple[DeepLabV2, TrainingRecord]:
    """Train DeepLab v2 on ``image_ids`` with the label maps of ``labels``; returns the (unwrapped)
    model, in eval mode, and the training record (per-term losses: one per logit map)."""
    torch.manual_seed(settings.seed)
    model = build_deeplab(settings, len(dataset.class_names) + 1).to(device)
    wrapper = MultiScaleInputs(model, settings.input_scales)
    names = wrapper.term_names()
    training_set = DeepLabTrainingDataset(
        dataset, image_ids, labels, crop_size=settings.crop_size, scales=settings.scales, flip=settings.flip,
        seed=settings.seed, label_description=label_description,
    )

    def loss_step(network: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = [logit.float() for logit in network(batch["image"])]  # float32 losses under autocast
        terms = cross_entropy_terms(logits, batch["label"], context)
        losses = dict(zip(names, terms, strict=True))
        losses["total"] = torch.stack(terms).sum()
        return losses

    def schedule(total_steps: int) -> Schedule:
        return stepped_poly_schedule(total_steps, settings.poly_power, settings.lr_decay_every)

    record = train_loop(
        wrapper, training_set, parameter_groups(model, settings), loss_step, settings,
        device=device, context=context, name="deeplab", schedule=schedule,
    )
    model.eval()
    return model, record
