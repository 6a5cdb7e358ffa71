"""Confident-region ("inter-pixel relation") labels from CAMs (reference §5, ``cam_to_ir_label``).

1. Foreground-confident: prepend a background channel equal to ``fg_threshold`` (0.30) to the
   full-resolution CAMs, argmax, dense CRF → ``fg`` labels (0 or k+1). With ``fg_threshold_rule="otsu"``
   (a deviation, off by default) each channel k has its own threshold t_k, the larger of ``fg_threshold``
   and Otsu's cut of that CAM: argmax over [1, CAM_k / t_k] (the same as the reference's rule when every
   t_k is ``fg_threshold``, up to the rounding of the division).
2. Background-confident: the same with ``bg_threshold`` (0.05) → ``bg`` labels.
3. Combine: start from ``fg``; where ``fg`` is background set 255 (unknown); where both ``fg`` and
   ``bg`` are background set 0. So a pixel is class k+1 where the high-threshold CRF says so,
   background only where even the low-threshold CRF says background, 255 elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from irn_core.crf import dense_crf_labels
from irn_core.errors import InputError
from irn_core.relations import _inputs
from irn_core.thresholds import otsu_thresholds

__all__ = ["confident_region_labels", "foreground_thresholds", "IGNORE_LABEL"]

IGNORE_LABEL = 255


def _thresholded_argmax(cams: np.ndarray, threshold: float) -> np.ndarray:
    """Argmax over [constant background, CAMs] (ties go to the background, as ``np.argmax``)."""
    background = np.full((1, *cams.shape[1:]), threshold, dtype=cams.dtype)
    return np.argmax(np.concatenate([background, cams], axis=0), axis=0)


def foreground_thresholds(cams: np.ndarray, fg_threshold: float, rule: str = "fixed") -> np.ndarray:
    """The foreground-confident threshold of each CAM channel: ``(K,)`` float32.

    ``rule`` "fixed": ``fg_threshold`` for every channel; "otsu": the larger of ``fg_threshold`` and
    Otsu's cut of the channel's values (:func:`irn_core.thresholds.otsu_thresholds`, 100 bins on [0, 1]).

    Args:
        cams: ``(K, H, W)`` max-normalised CAMs.
    """
    if rule == "fixed":
        return np.full(cams.shape[0], fg_threshold, dtype=np.float32)
    if rule != "otsu":
        raise InputError(f"ir_labels: fg_threshold_rule must be 'fixed' or 'otsu', got {rule!r}")
    return otsu_thresholds(torch.from_numpy(np.ascontiguousarray(cams)), limits=(fg_threshold, 1.0)).numpy()


def _scaled_argmax(cams: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Argmax over [1, CAM_k / t_k] (ties go to the background)."""
    scaled = cams / thresholds.reshape(-1, 1, 1).astype(cams.dtype)
    return _thresholded_argmax(scaled, 1.0)


def confident_region_labels(
    image: np.ndarray,
    cam_high_res: np.ndarray | torch.Tensor,
    class_ids: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    fg_threshold: float = 0.30,
    bg_threshold: float = 0.05,
    fg_threshold_rule: str = "fixed",
    iterations: int = 10,
    gt_prob: float = 0.7,
    gaussian_sxy: float = 3,
    gaussian_compat: float = 3,
    bilateral_sxy: float = 50,
    bilateral_srgb: float = 5,
    bilateral_compat: float = 10,
    ignore_label: int = IGNORE_LABEL,
    image_id: str | None = None,
) -> np.ndarray:
    """Confident-region labels of one image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB image (not normalised).
        cam_high_res: ``(K, H, W)`` full-resolution CAMs of the present classes (max-normalised).
        class_ids: ``(K,)`` 0-based classes of the CAM channels (non-empty).
        fg_threshold, bg_threshold: the two background scores (reference 0.30 and 0.05).
        fg_threshold_rule: "fixed" (reference) or "otsu" (see :func:`foreground_thresholds`).
        iterations, gt_prob, gaussian_*, bilateral_*: CRF parameters (see :mod:`irn_core.crf`).
        ignore_label: label of the unknown region (255).
        image_id: named in error messages.

    Returns:
        ``(H, W)`` uint8 in {0, k+1, ``ignore_label``}.
    """
    context = _inputs.where("ir_labels.confident_region_labels", image_id)
    cams = _inputs.as_float_tensor(cam_high_res, "cam_high_res", context).detach().cpu().numpy()
    if cams.ndim != 3:
        raise InputError(f"{context}: cam_high_res must be (K, H, W), got shape {cams.shape}")
    ids = _inputs.class_id_array(class_ids, cams.shape[0], context)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"{context}: image must be (H, W, 3) uint8, got shape {image.shape} {image.dtype}")
    if image.shape[:2] != cams.shape[1:]:
        raise InputError(
            f"{context}: the image is {image.shape[0]}x{image.shape[1]} but the CAMs are "
            f"{cams.shape[1]}x{cams.shape[2]} (shape mismatch)"
        )
    keys = np.concatenate([[0], ids + 1]).astype(np.int64)
    crf_parameters = dict(
        iterations=iterations,
        gt_prob=gt_prob,
        gaussian_sxy=gaussian_sxy,
        gaussian_compat=gaussian_compat,
        bilateral_sxy=bilateral_sxy,
        bilateral_srgb=bilateral_srgb,
        bilateral_compat=bilateral_compat,
        image_id=image_id,
    )
    n_labels = keys.shape[0]
    if fg_threshold_rule == "fixed":
        foreground_seeds = _thresholded_argmax(cams, fg_threshold)
    else:
        foreground_seeds = _scaled_argmax(cams, foreground_thresholds(cams, fg_threshold, fg_threshold_rule))
    foreground = keys[dense_crf_labels(image, foreground_seeds, n_labels, **crf_parameters)]
    background = keys[dense_crf_labels(image, _thresholded_argmax(cams, bg_threshold), n_labels, **crf_parameters)]
    combined = foreground.copy()
    combined[foreground == 0] = ignore_label
    combined[(foreground == 0) & (background == 0)] = 0
    return combined.astype(np.uint8)
