"""One panel per product of one image: pure functions, arrays in, (H, W, 3) uint8 RGB out.

Every panel has the image's size (H, W): stride-4 maps are upsampled by their stride and cropped,
as the pipeline itself does. Label maps use the VOC palette (label k -> palette entry k, void 255
-> palette entry 255); instance maps give instance k (0-based, in stored order) palette entry
k + 1, as VOC's ``SegmentationObject`` PNGs do, on black.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from irn_core.errors import InputError
from irn_core.instances import cluster_centroids, find_centroids
from irn_core.report.colours import flow_to_rgb, label_colours, palette_array

STRIDE = 4
"""Stride of the ``*_s4`` maps."""


@dataclass(frozen=True)
class Panel:
    """One picture of a row: ``key`` (file-name safe), ``title`` (caption) and ``rgb`` (H, W, 3) uint8."""

    key: str
    title: str
    rgb: np.ndarray


def _image_size(image_size: Sequence[int]) -> tuple[int, int]:
    if len(image_size) != 2 or min(int(value) for value in image_size) < 1:
        raise InputError(f"image size must be (H, W) with positive entries, got {tuple(image_size)}")
    return int(image_size[0]), int(image_size[1])


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8, got {image.dtype}")
    return image


def upsample(map_s4: np.ndarray, image_size: Sequence[int], *, stride: int = STRIDE, smooth: bool = True) -> np.ndarray:
    """(h, w) float map at ``stride`` -> (H, W) float32: resized to (h·stride, w·stride), bilinear
    (``smooth``) or nearest, then cropped to ``image_size``."""
    height, width = _image_size(image_size)
    map_s4 = np.asarray(map_s4, dtype=np.float32)
    if map_s4.ndim != 2:
        raise InputError(f"map must be (h, w), got shape {map_s4.shape}")
    if map_s4.shape[0] * stride < height or map_s4.shape[1] * stride < width:
        raise InputError(f"map {map_s4.shape} at stride {stride} does not cover an image of {(height, width)}")
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    resized = Image.fromarray(map_s4, mode="F").resize((map_s4.shape[1] * stride, map_s4.shape[0] * stride), resample)
    return np.asarray(resized, dtype=np.float32)[:height, :width]


def image_panel(image: np.ndarray) -> np.ndarray:
    """The image itself: (H, W, 3) uint8 -> a copy."""
    return _check_rgb(image).copy()


def cam_panel(image: np.ndarray, cam: np.ndarray, *, opacity: float = 0.5) -> np.ndarray:
    """One class's CAM over the image: ``cam`` (H, W) in [0, 1] as the 'jet' colour map, blended
    with opacity ``opacity`` over the image (``(1 − opacity) · image + opacity · jet(cam)``)."""
    from matplotlib import colormaps

    image = _check_rgb(image)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != image.shape[:2]:
        raise InputError(f"CAM {cam.shape} and image {image.shape[:2]} differ in size")
    if not 0 <= opacity <= 1:
        raise InputError(f"opacity must be in [0, 1], got {opacity}")
    coloured = colormaps["jet"](np.clip(np.nan_to_num(cam), 0, 1))[..., :3] * 255
    blended = (1 - opacity) * image.astype(np.float32) + opacity * coloured
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def boundary_panel(boundary_s4: np.ndarray, image_size: Sequence[int], *, stride: int = STRIDE) -> np.ndarray:
    """Class-boundary probabilities (h, w) in [0, 1] -> grey levels, boundaries dark on white
    (``255 · (1 − b)``), upsampled bilinearly to the image."""
    boundary = np.clip(upsample(boundary_s4, image_size, stride=stride), 0, 1)
    grey = np.round(255 * (1 - boundary)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def instance_centres(
    displacement_s4: np.ndarray, *, iterations: int = 300, threshold: float = 2.5, spread_ratio: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Class-agnostic instance map and the centroid of each instance, from a displacement field.

    ``displacement_s4``: (2, h, w), channel 0 = y. Returns the clusters of
    :func:`irn_core.instances.cluster_centroids` ((n, h, w) bool, with ``iterations`` refinement
    steps and candidate threshold ``threshold``, as the pipeline uses them) and (m, 2) float64
    (y, x) at stride 4: the mean refined centroid of the clusters whose pixels converge, i.e. whose
    refined centroids land on a candidate centroid (not the extra cluster) and lie closer together
    than ``spread_ratio`` times the pixels themselves (mean distance to their mean). Clusters whose
    pixels stay where they are, as the background's (displacement about 0), have no centroid.
    """
    displacement_s4 = np.asarray(displacement_s4, dtype=np.float32)
    refined = find_centroids(displacement_s4, iterations=iterations)
    clusters = cluster_centroids(refined, displacement_s4, threshold=threshold)
    strength = np.sqrt(displacement_s4[1] ** 2 + displacement_s4[0] ** 2)  # as cluster_centroids
    converged = strength[refined[0], refined[1]] < np.float32(threshold)
    rows, columns = np.indices(strength.shape)
    centres = []
    for cluster in clusters:
        if not converged[cluster].all():
            continue
        landed = np.stack([refined[0][cluster], refined[1][cluster]], axis=1).astype(np.float64)
        pixels = np.stack([rows[cluster], columns[cluster]], axis=1).astype(np.float64)
        landed_spread = np.linalg.norm(landed - landed.mean(axis=0), axis=1).mean()
        pixel_spread = np.linalg.norm(pixels - pixels.mean(axis=0), axis=1).mean()
        if landed_spread <= spread_ratio * pixel_spread:
            centres.append(landed.mean(axis=0))
    return clusters, np.asarray(centres, dtype=np.float64).reshape(-1, 2)


def _draw_dots(picture: np.ndarray, points: np.ndarray, radius: float) -> np.ndarray:
    """White dots with a black ring at (y, x) ``points`` (image pixels)."""
    height, width = picture.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    for point_y, point_x in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        distance = np.hypot(y - point_y, x - point_x)
        picture[distance <= radius + max(1.0, radius / 2)] = 0
        picture[distance <= radius] = 255
    return picture


def displacement_panel(
    displacement_s4: np.ndarray,
    image_size: Sequence[int],
    *,
    centres_s4: np.ndarray | None = None,
    max_magnitude: float | None = None,
    stride: int = STRIDE,
) -> np.ndarray:
    """The displacement field (2, h, w) (channel 0 = y) in the optical-flow colour wheel
    (:func:`~irn_core.report.colours.flow_to_rgb`, upsampled bilinearly), with the instance
    centroids ``centres_s4`` ((n, 2) (y, x) at ``stride``) drawn as white dots ringed in black."""
    displacement_s4 = np.asarray(displacement_s4, dtype=np.float32)
    if displacement_s4.ndim != 3 or displacement_s4.shape[0] != 2:
        raise InputError(f"displacement must be (2, h, w), got shape {displacement_s4.shape}")
    flow_y = upsample(displacement_s4[0], image_size, stride=stride)
    flow_x = upsample(displacement_s4[1], image_size, stride=stride)
    picture = flow_to_rgb(flow_y, flow_x, max_magnitude=max_magnitude)
    if centres_s4 is not None and len(centres_s4):
        radius = max(2.0, min(picture.shape[:2]) / 80)
        picture = _draw_dots(picture, np.asarray(centres_s4, dtype=np.float64) * stride + (stride - 1) / 2, radius)
    return picture


def instance_map_panel(clusters: np.ndarray, image_size: Sequence[int], *, stride: int = STRIDE) -> np.ndarray:
    """Class-agnostic instance map (n, h, w) bool (every pixel in one cluster) -> cluster k in VOC
    colour k + 1, upsampled (nearest) to the image."""
    clusters = np.asarray(clusters, dtype=bool)
    if clusters.ndim != 3:
        raise InputError(f"clusters must be (n, h, w), got shape {clusters.shape}")
    index = np.argmax(clusters, axis=0).astype(np.float32) + 1
    index[~clusters.any(axis=0)] = 0
    labels = np.round(upsample(index, image_size, stride=stride, smooth=False)).astype(np.int64)
    return label_colours(labels)


def semantic_panel(labels: np.ndarray) -> np.ndarray:
    """Semantic labels (H, W) (0 background, k + 1 class k, 255 void) in the VOC palette."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"semantic labels must be integers, got {labels.dtype}")
    return label_colours(labels)


def instance_panel(
    masks: np.ndarray, scores: np.ndarray | None = None, *, min_score: float | None = None
) -> np.ndarray:
    """Instances (N, H, W) bool -> instance k in VOC colour k + 1 (wrapping after 254), black elsewhere.

    With ``scores`` ((N,)), instances are painted in increasing score order (the most confident on
    top where masks overlap) and, with ``min_score``, those scoring below it are left out.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise InputError(f"instance masks must be (N, H, W), got shape {masks.shape}")
    count = masks.shape[0]
    order = np.arange(count)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != count:
            raise InputError(f"{count} masks but {scores.shape[0]} scores")
        order = np.argsort(scores, kind="stable")
        if min_score is not None:
            order = order[scores[order] >= min_score]
    picture = np.zeros((*masks.shape[1:], 3), dtype=np.uint8)
    palette = palette_array()
    for index in order:
        picture[masks[index]] = palette[index % 254 + 1]
    return picture
