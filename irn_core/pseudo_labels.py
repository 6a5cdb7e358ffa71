"""Semantic and instance pseudo labels from CAMs and IRNet outputs (reference §7.3 and §8).

Semantic (``make_sem_seg_labels``): stride-4 CAMs of the present classes → random walk →
bilinear ×4 upsampling (``align_corners=False``) cropped to the image → divided by the global
maximum over all classes and pixels → a constant background score (0.25) prepended → argmax →
0 background, k+1 for class k.

Instances (``make_ins_seg_labels``): refined centroids → class-agnostic clusters → instance-wise
CAMs ``cam[k] · cluster[i]`` (class-major) → one walk over all of them → upsampling, global max,
background 0.25, argmax → 4-connected fragments of each channel, score = max normalised walk
score in the fragment, 0 for fragments under 1% of the image (kept).

Deliberate deviations (the reference would produce garbage or crash):

* If every seed is zero after the ``(1 − boundary)`` suppression, the reference divides by a zero
  maximum and its argmax over NaN labels every pixel with the first class; here every pixel is
  background and there are no instances.
* No fragment at all → an empty :class:`~irn_core.instances.InstanceLabels` (the reference's
  ``np.stack([])`` raises).

Channels whose seeds are all zero are not walked (their walk is exactly zero).

``background="walked"`` (a named deviation, ``random_walk.background``). The walk is an averaging
operator (every column of ``T`` sums to 1: a constant map stays constant), so a walked score is a
weighted average of the seeds ``cam · (1 − boundary)`` over the area the walk reaches from the pixel.
The reference divides the walked class scores by their largest value in the image and compares them
with the constant 0.25: where the boundary map does not enclose the objects, every average is low,
the division lifts them all, and the classes flood the image. Here the background is a seed map of
the constant, suppressed by ``(1 − boundary)`` like the class seeds and walked with them, and the
argmax compares the walked maps on one scale: a class wins where its CAM's average over the reached
area, weighted as the background's, exceeds the constant, on the CAMs' own scale (each CAM has
maximum 1) as in the CAM evaluation. Because the walk is linear, the background is walked once as a
map of ones and scaled by each threshold; instance scores are still the walked scores divided by
their maximum.

``threshold_rule="otsu"`` (a named deviation, ``random_walk.threshold_rule``). The reference compares
every class of every image with one background score (0.25). On photographs the right score differs
by class: on the pet photos the semantic labels' IoU peaks near 0.10 for dogs and near 0.30 for cats
(docs/real_photos.md, "Per-image thresholds"). With ``"otsu"`` each channel of each image gets its own
threshold, chosen without ground truth: the walked channel on the thresholds' scale (divided by the
global maximum with the constant background, by the walked map of ones with the walked one; then a
pixel is the channel's where this exceeds the threshold, as under the fixed rule) is split in two by
Otsu's rule (the cut of a 100-bin histogram on [0, 1] that maximises the between-class variance),
clamped to [0.05, 0.60], the range of the CAM threshold curve. Each channel's scores are divided by
its threshold and compared with 1; the instance scores stay the normalised walked scores.

The margin (:func:`semantic_and_instance_labels_with_margin`): at each pixel, the best class score divided
by its threshold under either rule, the quantity the assignment compares with 1 (a class wins where it is
at least 1). :func:`uncertain_mask` marks the pixels whose margin lies in a band around 1; the pipeline
stores them beside the semantic labels (``random_walk.uncertain_band``, a named deviation) and DeepLab v2
trained on the pseudo labels ignores them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from irn_core.errors import InputError
from irn_core.instances import InstanceLabels, cluster_centroids, detect_instances, find_centroids
from irn_core.random_walk import propagate
from irn_core.relations import _inputs
from irn_core.thresholds import otsu_thresholds

__all__ = [
    "Background", "InstanceLabels", "ThresholdRule", "otsu_thresholds", "semantic_label", "instance_labels",
    "semantic_and_instance_labels", "semantic_and_instance_labels_with_margin", "uncertain_mask",
]

#: How the background score meets the walked class scores: ``"constant"`` after the walk (reference),
#: or ``"walked"`` as one more seed map walked with the classes.
Background = Literal["constant", "walked"]
BACKGROUNDS: tuple[str, ...] = get_args(Background)

#: How the background threshold is chosen: ``"fixed"`` (``bg_threshold``, reference) or ``"otsu"``
#: (per image and channel, :func:`otsu_thresholds`).
ThresholdRule = Literal["fixed", "otsu"]
THRESHOLD_RULES: tuple[str, ...] = get_args(ThresholdRule)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Inputs:
    cams: torch.Tensor  # (K, h, w)
    class_ids: np.ndarray  # (K,)
    boundary: torch.Tensor  # (h, w) on the CAMs' device
    image_size: tuple[int, int]


def _check_common(
    cam_s4: object,
    class_ids: object,
    boundary: object,
    image_size: Sequence[int],
    stride: int,
    context: str,
) -> _Inputs:
    cams = _inputs.as_float_tensor(cam_s4, "cam_s4", context)
    if cams.dim() != 3:
        raise InputError(f"{context}: cam_s4 must be (K, h, w), got shape {tuple(cams.shape)}")
    count, height, width = cams.shape
    ids = _inputs.class_id_array(class_ids, count, context)
    if height < 1 or width < 1:
        raise InputError(f"{context}: cam_s4 has an empty map {height}x{width}")
    boundary_tensor = _inputs.as_float_tensor(boundary, "boundary", context, device=cams.device)
    boundary_tensor = _inputs.boundary_map(boundary_tensor, height, width, context)
    _inputs.check_probability(boundary_tensor, "boundary", context)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise InputError(f"{context}: stride must be a positive integer, got {stride!r}")
    image_height, image_width = _inputs.image_size_pair(image_size, context)
    if height * stride < image_height or width * stride < image_width:
        raise InputError(
            f"{context}: {height}x{width} maps at stride {stride} cover {height * stride}x{width * stride} pixels, "
            f"less than the image size {image_height}x{image_width}"
        )
    return _Inputs(cams=cams, class_ids=ids, boundary=boundary_tensor, image_size=(image_height, image_width))


def _check_displacement(displacement: object, height: int, width: int, context: str) -> np.ndarray:
    field = _inputs.as_float_tensor(displacement, "displacement", context)
    if tuple(field.shape) != (2, height, width):
        raise InputError(
            f"{context}: displacement must be (2, {height}, {width}) like the CAMs, got {tuple(field.shape)} "
            "(shape mismatch)"
        )
    return field.detach().cpu().numpy().astype(np.float32, copy=False)


def _walk_nonzero(
    seeds: torch.Tensor, boundary: torch.Tensor, beta: float, exp_times: int, radius: float
) -> torch.Tensor:
    """Walk of every channel; channels whose suppressed seeds are all zero are left at zero."""
    result = torch.zeros(seeds.shape, dtype=torch.float32, device=seeds.device)
    # seed · (1 − boundary) is non-zero exactly where the seed is non-zero and the boundary below 1
    active = torch.nonzero(((seeds != 0) & (boundary < 1)).flatten(1).any(dim=1)).flatten()
    if active.numel():
        walked = propagate(seeds[active], boundary, beta=beta, exp_times=exp_times, radius=radius)
        result[active] = walked.to(torch.float32)
    logger.debug("walked %d of %d channels", int(active.numel()), seeds.shape[0])
    return result


def _check_background(background: str, context: str) -> None:
    if background not in BACKGROUNDS:
        raise InputError(f"{context}: background must be one of {BACKGROUNDS}, got {background!r}")


def _walk_with_background(
    seeds: torch.Tensor, boundary: torch.Tensor, beta: float, exp_times: int, radius: float, background: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Walk ``seeds (C, h, w)``; with ``background="walked"`` also a map of ones: ``(walked, walked ones (h, w))``."""
    if background == "constant":
        return _walk_nonzero(seeds, boundary, beta, exp_times, radius), None
    ones = torch.ones((1, *seeds.shape[1:]), dtype=seeds.dtype, device=seeds.device)
    walked = _walk_nonzero(torch.cat([ones, seeds], dim=0), boundary, beta, exp_times, radius)
    return walked[1:], walked[0]


def _upsample(maps: torch.Tensor, image_size: tuple[int, int], stride: int) -> torch.Tensor:
    """``(C, h, w)`` -> bilinear ×stride (``align_corners=False``) cropped to ``image_size``: ``(C, H, W)``."""
    image_height, image_width = image_size
    upsampled = F.interpolate(maps.unsqueeze(0), scale_factor=stride, mode="bilinear", align_corners=False)[0]
    return upsampled[:, :image_height, :image_width]


def _assignment(normalised: torch.Tensor, background: float | torch.Tensor) -> torch.Tensor:
    """Argmax over [background, channels]: ``(H, W)`` int64, 0 background, j+1 channel j.

    ``background`` is a constant score or an ``(H, W)`` map. Ties go to the earlier channel (the
    background first), as ``torch.argmax``; computed with one pass per channel, which is much faster
    than an argmax over the channel axis.
    """
    if isinstance(background, torch.Tensor):
        best = background.to(dtype=normalised.dtype, device=normalised.device).clone()
    else:
        best = torch.full(normalised.shape[1:], background, dtype=normalised.dtype, device=normalised.device)
    assignment = torch.zeros(normalised.shape[1:], dtype=torch.int64, device=normalised.device)
    for channel in range(normalised.shape[0]):
        better = normalised[channel] > best
        best = torch.where(better, normalised[channel], best)
        assignment.masked_fill_(better, channel + 1)
    return assignment


@dataclass(frozen=True)
class _Scored:
    normalised: torch.Tensor  # (C, H, W) upsampled scores divided by their global maximum
    assignment: torch.Tensor  # (H, W) int64, 0 background, j+1 channel j
    margin: torch.Tensor | None  # (H, W) the best channel's score divided by its threshold; None: not asked for


def _rule_assignment(
    walked: torch.Tensor,
    image_size: tuple[int, int],
    stride: int,
    bg_threshold: float,
    walked_ones: torch.Tensor | None,
    threshold_rule: str,
    with_margin: bool = True,
) -> _Scored | None:
    """Upsampled class scores divided by their global max ``(C, H, W)``, the argmax assignment
    ``(H, W)`` (0 background, j+1 channel j) under ``threshold_rule`` and the margin ``(H, W)`` (the largest
    ratio of a channel's score to its threshold; None unless ``with_margin``); None if the maximum is not > 0.

    ``"fixed"``: the background is ``bg_threshold`` (reference) or, given the walked map of ones ``(h, w)``,
    ``bg_threshold ·`` its upsampled walk divided by the same maximum ``(H, W)``. ``"otsu"``: each channel on
    the thresholds' scale (the normalised scores, or the upsampled walk divided by the upsampled walked
    ones; 0 where those are 0, the walk reaching no seed there) is divided by its :func:`otsu_thresholds`
    and compared with 1.
    """
    upsampled = _upsample(walked, image_size, stride)
    maximum = upsampled.max()
    if not bool(maximum > 0):
        return None
    normalised = upsampled / maximum
    ones = None if walked_ones is None else _upsample(walked_ones.unsqueeze(0), image_size, stride)[0]
    tiny = torch.finfo(normalised.dtype).tiny
    if threshold_rule == "fixed":
        if ones is None:
            background = torch.full_like(normalised[0], bg_threshold)
        else:
            background = ones * (bg_threshold / maximum)
        margin = normalised.max(0).values / background.clamp_min(tiny) if with_margin else None
        return _Scored(normalised, _assignment(normalised, background), margin)
    if ones is None:
        scaled, defined = normalised, None
    else:
        defined = ones > 0
        scaled = upsampled / ones.clamp_min(tiny) * defined
    thresholds = otsu_thresholds(scaled, defined).to(dtype=scaled.dtype)
    ratios = scaled / thresholds[:, None, None]
    return _Scored(normalised, _assignment(ratios, 1.0), ratios.max(0).values if with_margin else None)


def _check_threshold_rule(threshold_rule: str, context: str) -> None:
    if threshold_rule not in THRESHOLD_RULES:
        raise InputError(f"{context}: threshold_rule must be one of {THRESHOLD_RULES}, got {threshold_rule!r}")


def _semantic_from_walk(
    walked: torch.Tensor,
    class_ids: np.ndarray,
    image_size: tuple[int, int],
    stride: int,
    bg_threshold: float,
    walked_ones: torch.Tensor | None = None,
    threshold_rule: str = "fixed",
) -> tuple[np.ndarray, np.ndarray]:
    """The label map ``(H, W)`` uint8 and the margin ``(H, W)`` float32 (0 where no seed survived)."""
    scored = _rule_assignment(walked, image_size, stride, bg_threshold, walked_ones, threshold_rule)
    if scored is None:
        return np.zeros(image_size, dtype=np.uint8), np.zeros(image_size, dtype=np.float32)
    assignment = scored.assignment.cpu().numpy()
    keys = np.concatenate([[0], class_ids + 1]).astype(np.uint8)
    return keys[assignment], scored.margin.float().cpu().numpy()


def _instances_from_walk(
    walked: torch.Tensor,
    channel_class_ids: np.ndarray,
    image_size: tuple[int, int],
    stride: int,
    bg_threshold: float,
    min_fragment: float,
    walked_ones: torch.Tensor | None = None,
    threshold_rule: str = "fixed",
) -> InstanceLabels:
    scored = _rule_assignment(walked, image_size, stride, bg_threshold, walked_ones, threshold_rule, with_margin=False)
    if scored is None:
        empty = np.zeros((0,), dtype=np.int64)
        return InstanceLabels(
            masks=np.zeros((0, *image_size), dtype=bool), class_ids=empty, scores=empty.astype(np.float32)
        )
    return detect_instances(
        scored.normalised.cpu().numpy(), scored.assignment.cpu().numpy(), channel_class_ids, min_fragment=min_fragment
    )


def _instance_seeds(
    checked: _Inputs, displacement: np.ndarray, centroid_iterations: int, cluster_threshold: float
) -> tuple[torch.Tensor, np.ndarray]:
    """Class-major instance-wise CAMs ``(K·n, h, w)`` and the class of each channel."""
    centroids = find_centroids(displacement, iterations=centroid_iterations)
    clusters = cluster_centroids(centroids, displacement, threshold=cluster_threshold)  # (n, h, w)
    cluster_tensor = torch.from_numpy(clusters).to(device=checked.cams.device, dtype=checked.cams.dtype)
    seeds = (checked.cams.unsqueeze(1) * cluster_tensor.unsqueeze(0)).flatten(0, 1)
    return seeds, np.repeat(checked.class_ids, clusters.shape[0])


def semantic_label(
    cam_s4: torch.Tensor | np.ndarray,
    class_ids: Sequence[int] | np.ndarray | torch.Tensor,
    boundary: torch.Tensor | np.ndarray,
    image_size: Sequence[int],
    *,
    beta: float = 10.0,
    exp_times: int = 8,
    bg_threshold: float = 0.25,
    radius: float = 5,
    stride: int = 4,
    background: Background = "constant",
    threshold_rule: ThresholdRule = "fixed",
    image_id: str | None = None,
) -> np.ndarray:
    """Semantic pseudo label of one image.

    Args:
        cam_s4: ``(K, h, w)`` CAMs of the present classes at stride 4 (numpy or torch, any device).
        class_ids: ``(K,)`` 0-based class of each CAM channel (non-empty).
        boundary: ``(h, w)`` or ``(1, h, w)`` class-boundary probabilities at the same stride.
        image_size: ``(H, W)`` of the image; ``stride · (h, w)`` must cover it.
        beta, exp_times, radius: random-walk parameters (reference 10, 8, 5).
        bg_threshold: constant background score after normalisation (reference 0.25).
        stride: the maps' stride (the reference upsamples ×4).
        background: ``"constant"`` (reference) or ``"walked"``: the background score is a seed map of
            ``bg_threshold`` walked with the classes (see the module docstring).
        threshold_rule: ``"fixed"`` (reference: ``bg_threshold`` for every channel) or ``"otsu"``: each
            channel's own threshold, by Otsu's rule (``bg_threshold`` unused; the module docstring).
        image_id: named in error messages.

    Returns:
        ``(H, W)`` uint8: 0 background, k+1 for class k.
    """
    context = _inputs.where("pseudo_labels.semantic_label", image_id)
    _check_background(background, context)
    _check_threshold_rule(threshold_rule, context)
    checked = _check_common(cam_s4, class_ids, boundary, image_size, stride, context)
    walked, walked_ones = _walk_with_background(checked.cams, checked.boundary, beta, exp_times, radius, background)
    return _semantic_from_walk(
        walked, checked.class_ids, checked.image_size, stride, bg_threshold, walked_ones, threshold_rule
    )[0]


def instance_labels(
    cam_s4: torch.Tensor | np.ndarray,
    class_ids: Sequence[int] | np.ndarray | torch.Tensor,
    boundary: torch.Tensor | np.ndarray,
    displacement: torch.Tensor | np.ndarray,
    image_size: Sequence[int],
    *,
    beta: float = 10.0,
    exp_times: int = 8,
    bg_threshold: float = 0.25,
    centroid_iterations: int = 300,
    cluster_threshold: float = 2.5,
    min_fragment: float = 0.01,
    radius: float = 5,
    stride: int = 4,
    background: Background = "constant",
    threshold_rule: ThresholdRule = "fixed",
    image_id: str | None = None,
) -> InstanceLabels:
    """Instance pseudo labels of one image.

    Args:
        cam_s4, class_ids, boundary, image_size, beta, exp_times, bg_threshold, radius, stride,
            background, threshold_rule, image_id: as :func:`semantic_label`.
        displacement: ``(2, h, w)`` displacement field in stride-4 pixels, channel 0 = y.
        centroid_iterations: centroid refinement steps (reference 300).
        cluster_threshold: candidate centroids have ``‖D‖ < cluster_threshold`` (reference 2.5).
        min_fragment: fragments under this fraction of the image get score 0 (reference 0.01).

    Returns:
        :class:`InstanceLabels` (masks ``(N, H, W)`` bool, 0-based ``class_ids``, float32
        ``scores``), class-major channel order then fragments, as the reference.
    """
    context = _inputs.where("pseudo_labels.instance_labels", image_id)
    _check_background(background, context)
    _check_threshold_rule(threshold_rule, context)
    checked = _check_common(cam_s4, class_ids, boundary, image_size, stride, context)
    field = _check_displacement(displacement, *checked.cams.shape[1:], context)
    seeds, channel_class_ids = _instance_seeds(checked, field, centroid_iterations, cluster_threshold)
    walked, walked_ones = _walk_with_background(seeds, checked.boundary, beta, exp_times, radius, background)
    return _instances_from_walk(
        walked, channel_class_ids, checked.image_size, stride, bg_threshold, min_fragment, walked_ones,
        threshold_rule,
    )


def semantic_and_instance_labels(
    cam_s4: torch.Tensor | np.ndarray,
    class_ids: Sequence[int] | np.ndarray | torch.Tensor,
    boundary: torch.Tensor | np.ndarray,
    displacement: torch.Tensor | np.ndarray,
    image_size: Sequence[int],
    **options: object,
) -> tuple[np.ndarray, InstanceLabels]:
    """Both labels with ONE walk over the K class channels and the K·n instance channels.

    Same arguments as :func:`semantic_and_instance_labels_with_margin`; returns the semantic label map and
    the instances (what :func:`semantic_label` and :func:`instance_labels` return, with the same labels).
    """
    semantic, _margin, instances = semantic_and_instance_labels_with_margin(
        cam_s4, class_ids, boundary, displacement, image_size, **options  # type: ignore[arg-type]
    )
    return semantic, instances


def semantic_and_instance_labels_with_margin(
    cam_s4: torch.Tensor | np.ndarray,
    class_ids: Sequence[int] | np.ndarray | torch.Tensor,
    boundary: torch.Tensor | np.ndarray,
    displacement: torch.Tensor | np.ndarray,
    image_size: Sequence[int],
    *,
    beta: float = 10.0,
    exp_times: int = 8,
    bg_threshold: float = 0.25,
    instance_bg_threshold: float | None = None,
    centroid_iterations: int = 300,
    cluster_threshold: float = 2.5,
    min_fragment: float = 0.01,
    radius: float = 5,
    stride: int = 4,
    background: Background = "constant",
    threshold_rule: ThresholdRule = "fixed",
    image_id: str | None = None,
) -> tuple[np.ndarray, np.ndarray, InstanceLabels]:
    """Semantic labels, their margin and instances with ONE walk over the K class channels and the K·n
    instance channels.

    Same arguments as :func:`instance_labels`; ``instance_bg_threshold`` (default: ``bg_threshold``)
    is the instance step's own background score (the reference has ``sem_seg_bg_thres`` and
    ``ins_seg_bg_thres``, both 0.25). Returns the semantic label map ``(H, W)`` uint8 and the instances,
    the same labels as :func:`semantic_label` and :func:`instance_labels` (a channel's walk depends on
    which channels are walked with it only through float64 rounding, ~1e-14 relative, from the sparse
    kernel's vectorisation, far below the float32 in which the labels are decided), and between them the
    semantic margin ``(H, W)`` float32: at each pixel the largest ratio of a class's score to its
    threshold (a class won where it is > 1; see the module docstring), 0 where no seed survived.
    """
    context = _inputs.where("pseudo_labels.semantic_and_instance_labels", image_id)
    _check_background(background, context)
    _check_threshold_rule(threshold_rule, context)
    checked = _check_common(cam_s4, class_ids, boundary, image_size, stride, context)
    field = _check_displacement(displacement, *checked.cams.shape[1:], context)
    instance_seeds, channel_class_ids = _instance_seeds(checked, field, centroid_iterations, cluster_threshold)
    class_count = checked.cams.shape[0]
    walked, walked_ones = _walk_with_background(
        torch.cat([checked.cams, instance_seeds], dim=0), checked.boundary, beta, exp_times, radius, background
    )
    semantic, margin = _semantic_from_walk(
        walked[:class_count], checked.class_ids, checked.image_size, stride, bg_threshold, walked_ones, threshold_rule
    )
    if instance_bg_threshold is None:
        instance_bg_threshold = bg_threshold
    instances = _instances_from_walk(
        walked[class_count:], channel_class_ids, checked.image_size, stride, instance_bg_threshold, min_fragment,
        walked_ones, threshold_rule,
    )
    return semantic, margin, instances


def uncertain_mask(margin: np.ndarray, band: Sequence[float]) -> np.ndarray:
    """Pixels whose margin ``(H, W)`` lies in ``[low, high)`` of ``band``: ``(H, W)`` bool.

    With ``band = (0.5, 1.0)`` these are the pixels labelled background whose best class reached at least
    half its threshold; a band above 1 also takes the weakest class pixels.
    """
    low, high = (float(value) for value in band)
    if not 0 <= low < high:
        raise InputError(f"uncertain band must satisfy 0 <= low < high, got {tuple(band)}")
    return (margin >= low) & (margin < high)
