"""Centroid detection and class-agnostic instance maps (supplementary §1, reference §8).

* :func:`find_centroids`: every pixel follows the displacement field for ``iterations`` steps,
  ``c ← clip(c + D(c))`` with ``D(c)`` read by bilinear interpolation, then rounds (the
  reference's ``find_centroids_with_refinement``; its first step is the paper's ``x + D(x)``).
* :func:`cluster_centroids`: candidate centroids ``{x : ‖D(x)‖ < threshold}``, their 4-connected
  components, each pixel assigned the component its refined centroid lands in; pixels whose
  centroid lands outside every component form one extra cluster (the reference's id compaction).
* :func:`detect_instances`: 4-connected fragments of the per-channel argmax masks, with scores.

All of it runs on CPU numpy (as the reference does); torch inputs are copied to the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import torch

from irn_core.errors import InputError
from irn_core.relations import _inputs

__all__ = ["InstanceLabels", "find_centroids", "cluster_centroids", "detect_instances", "connected_components"]

logger = logging.getLogger(__name__)

_FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


@dataclass(frozen=True, eq=False)
class InstanceLabels:
    """Instance pseudo labels of one image, in the reference's order (class-major channels, then fragments).

    Attributes:
        masks: ``(N, H, W)`` bool.
        class_ids: ``(N,)`` int64, 0-based foreground classes.
        scores: ``(N,)`` float32 (0 for fragments under the minimum size).
    """

    masks: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])


def _displacement_array(displacement: object, context: str) -> np.ndarray:
    tensor = _inputs.as_float_tensor(displacement, "displacement", context)
    if tensor.dim() != 3 or tensor.shape[0] != 2:
        raise InputError(f"{context}: displacement must be (2, h, w), got shape {tuple(tensor.shape)}")
    if tensor.shape[1] < 1 or tensor.shape[2] < 1:
        raise InputError(f"{context}: displacement has an empty map {tuple(tensor.shape)}")
    return tensor.detach().cpu().numpy().astype(np.float32, copy=False)


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a bool map, labelled 1..n in raster order of their first pixel (0 = off)."""
    labels, count = scipy.ndimage.label(mask, structure=_FOUR_CONNECTED)
    return labels, int(count)


def find_centroids(displacement: torch.Tensor | np.ndarray, *, iterations: int = 300) -> np.ndarray:
    """Refined centroid of every pixel (the reference's 300-step bilinear refinement).

    Args:
        displacement: ``(2, h, w)`` displacement in feature pixels, channel 0 = y.
        iterations: refinement steps (the reference's default 300; "any integer ≥ 100").

    Returns:
        ``(2, h, w)`` int32 ``(y, x)`` of each pixel's centroid, inside the map.

    Arithmetic follows the reference: positions in float32, bilinear weights and moves in float64
    (NumPy's promotion in the reference), the four neighbours are ``floor``/``ceil`` of the current
    position, both coordinates move with weights computed before the move, then are clipped to
    ``[0, h − 1] × [0, w − 1]``; finally rounded half to even.
    """
    context = "instances.find_centroids"
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise InputError(f"{context}: iterations must be a non-negative integer, got {iterations!r}")
    field = _displacement_array(displacement, context)
    _, height, width = field.shape
    flat_field = field.reshape(2, height * width)
    centroid_y = np.repeat(np.arange(height, dtype=np.float32), width)
    centroid_x = np.tile(np.arange(width, dtype=np.float32), height)
    # Pixels move independently, and a pixel whose position did not change is at a fixed point of
    # the update: only the pixels still moving are updated (the result is the same).
    moving = np.arange(height * width)
    for _ in range(iterations):
        if moving.size == 0:
            break
        position_y = centroid_y[moving]
        position_x = centroid_x[moving]
        # The reference subtracts int32 floors from float32 positions, which NumPy promotes to
        # float64: weights and moves are float64, positions stay float32. Same order of operations.
        up_y = np.ceil(position_y).astype(np.int64)
        down_y = np.floor(position_y).astype(np.int64)
        fraction_y = position_y.astype(np.float64) - down_y
        up_x = np.ceil(position_x).astype(np.int64)
        down_x = np.floor(position_x).astype(np.int64)
        fraction_x = position_x.astype(np.float64) - down_x
        up_row, down_row = up_y * width, down_y * width
        move = (
            flat_field[:, up_row + up_x] * fraction_y * fraction_x
            + flat_field[:, down_row + up_x] * (1 - fraction_y) * fraction_x
            + flat_field[:, up_row + down_x] * fraction_y * (1 - fraction_x)
            + flat_field[:, down_row + down_x] * (1 - fraction_y) * (1 - fraction_x)
        )
        new_y = np.clip((position_y + move[0]).astype(np.float32), np.float32(0), np.float32(height - 1))
        new_x = np.clip((position_x + move[1]).astype(np.float32), np.float32(0), np.float32(width - 1))
        changed = (new_y != position_y) | (new_x != position_x)
        centroid_y[moving] = new_y
        centroid_x[moving] = new_x
        moving = moving[changed]
    centroid_y = centroid_y.reshape(height, width)
    centroid_x = centroid_x.reshape(height, width)
    return np.stack([np.round(centroid_y).astype(np.int32), np.round(centroid_x).astype(np.int32)], axis=0)


def cluster_centroids(
    centroids: np.ndarray | torch.Tensor,
    displacement: torch.Tensor | np.ndarray,
    *,
    threshold: float = 2.5,
) -> np.ndarray:
    """Class-agnostic instance map from refined centroids (supplementary eqs. 1–2, reference ``cluster_centroids``).

    Args:
        centroids: ``(2, h, w)`` integer ``(y, x)`` from :func:`find_centroids`.
        displacement: ``(2, h, w)`` the (unrefined) displacement field.
        threshold: candidate centroids are pixels with ``‖D(x)‖₂ < threshold``.

    Returns:
        ``(n, h, w)`` bool, one map per cluster, every pixel in exactly one. Cluster ids follow the
        reference: ``component id + 1`` of each pixel's centroid (0 for "fell in the
        strong-displacement area") compacted to ``0..n−1`` in increasing order, so the extra cluster,
        when present, is first; components no centroid reached are dropped. With no candidate
        centroid at all every pixel is in the single extra cluster (n = 1), as in the reference.
    """
    context = "instances.cluster_centroids"
    field = _displacement_array(displacement, context)
    _, height, width = field.shape
    if isinstance(centroids, torch.Tensor):
        centroids = centroids.detach().cpu().numpy()
    centroids = np.asarray(centroids)
    if centroids.shape != (2, height, width):
        raise InputError(f"{context}: centroids must be (2, {height}, {width}), got shape {centroids.shape}")
    if not np.issubdtype(centroids.dtype, np.integer):
        raise InputError(f"{context}: centroids must be integers, got {centroids.dtype}")
    if (
        centroids[0].min() < 0
        or centroids[0].max() >= height
        or centroids[1].min() < 0
        or centroids[1].max() >= width
    ):
        raise InputError(f"{context}: centroids fall outside the {height}x{width} map")
    strength = np.sqrt(field[1] ** 2 + field[0] ** 2)
    components, _ = connected_components(strength < np.float32(threshold))
    cluster_of_pixel = components[centroids[0], centroids[1]] + 1
    _, compact = np.unique(cluster_of_pixel, return_inverse=True)
    compact = compact.reshape(height, width)
    count = int(compact.max()) + 1
    return compact[None, :, :] == np.arange(count)[:, None, None]


def detect_instances(
    scores: np.ndarray | torch.Tensor,
    assignment: np.ndarray | torch.Tensor,
    channel_class_ids: np.ndarray,
    *,
    min_fragment: float = 0.01,
) -> InstanceLabels:
    """Detections from per-channel masks (the reference's ``detect_instance``).

    Args:
        scores: ``(C, H, W)`` normalised walk scores of the class×instance channels.
        assignment: ``(H, W)`` integer argmax with background: 0 background, ``j + 1`` channel ``j``.
        channel_class_ids: ``(C,)`` 0-based class of each channel.
        min_fragment: fragments with fewer than ``min_fragment · H · W`` pixels get score 0
            (they are still emitted, as in the reference).

    Returns:
        :class:`InstanceLabels`: for each channel with pixels, in channel order, each 4-connected
        fragment (in raster order of its first pixel) with score = max of the channel's score
        inside it. No fragment → empty arrays (the reference crashes on ``np.stack([])``).
    """
    context = "instances.detect_instances"
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    if isinstance(assignment, torch.Tensor):
        assignment = assignment.detach().cpu().numpy()
    scores = np.asarray(scores)
    assignment = np.asarray(assignment)
    channel_class_ids = np.asarray(channel_class_ids, dtype=np.int64)
    if scores.ndim != 3:
        raise InputError(f"{context}: scores must be (C, H, W), got shape {scores.shape}")
    channels, height, width = scores.shape
    if assignment.shape != (height, width):
        raise InputError(f"{context}: assignment is {assignment.shape}, scores are {scores.shape} (shape mismatch)")
    if channel_class_ids.shape != (channels,):
        raise InputError(f"{context}: {channel_class_ids.shape} class ids for {channels} channels")
    min_pixels = height * width * min_fragment
    masks: list[np.ndarray] = []
    class_ids: list[int] = []
    fragment_scores: list[float] = []
    present = np.unique(assignment)
    for channel in present[present > 0].tolist():
        components, count = connected_components(assignment == channel)
        channel_scores = scores[channel - 1]
        for component in range(1, count + 1):
            fragment = components == component
            if np.count_nonzero(fragment) < min_pixels:
                fragment_scores.append(0.0)
            else:
                fragment_scores.append(float(channel_scores[fragment].max()))
            class_ids.append(int(channel_class_ids[channel - 1]))
            masks.append(fragment)
    if not masks:
        return InstanceLabels(
            masks=np.zeros((0, height, width), dtype=bool),
            class_ids=np.zeros((0,), dtype=np.int64),
            scores=np.zeros((0,), dtype=np.float32),
        )
    return InstanceLabels(
        masks=np.stack(masks),
        class_ids=np.asarray(class_ids, dtype=np.int64),
        scores=np.asarray(fragment_scores, dtype=np.float32),
    )
