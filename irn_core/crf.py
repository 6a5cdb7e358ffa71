"""Dense CRF refinement of a label map (pydensecrf), as the reference's ``crf_inference_label`` (§5).

Unary from hard labels (``gt_prob`` on the given label, the rest shared by the other labels;
label 0 is an ordinary label, ``zero_unsure=False``), a Gaussian pairwise term (``sxy`` 3,
``compat`` 3) and a bilateral one (``sxy`` 50, ``srgb`` 5, ``compat`` 10), 10 mean-field
iterations, argmax.
"""

from __future__ import annotations

import numpy as np

from irn_core.errors import InputError

__all__ = ["dense_crf_labels"]


def dense_crf_labels(
    image: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    *,
    iterations: int = 10,
    gt_prob: float = 0.7,
    gaussian_sxy: float = 3,
    gaussian_compat: float = 3,
    bilateral_sxy: float = 50,
    bilateral_srgb: float = 5,
    bilateral_compat: float = 10,
    image_id: str | None = None,
) -> np.ndarray:
    """Refine a hard label map with a fully connected CRF.

    Args:
        image: ``(H, W, 3)`` uint8 RGB image.
        labels: ``(H, W)`` integer labels in ``0 .. n_labels − 1``.
        n_labels: number of labels (≥ 2).
        iterations, gt_prob, gaussian_*, bilateral_*: the reference's CRF parameters.
        image_id: named in error messages.

    Returns:
        ``(H, W)`` int64 labels (argmax of the CRF marginals).
    """
    import pydensecrf.densecrf as densecrf
    from pydensecrf.utils import unary_from_labels

    context = f"crf.dense_crf_labels (image {image_id})" if image_id else "crf.dense_crf_labels"
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"{context}: image must be (H, W, 3) uint8, got shape {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    if labels.shape != (height, width):
        raise InputError(f"{context}: labels are {labels.shape}, the image is {height}x{width} (shape mismatch)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{context}: labels must be integers, got {labels.dtype}")
    if isinstance(n_labels, bool) or not isinstance(n_labels, (int, np.integer)) or n_labels < 2:
        raise InputError(f"{context}: n_labels must be an integer >= 2, got {n_labels!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise InputError(f"{context}: labels must lie in 0..{n_labels - 1}, got {labels.min()}..{labels.max()}")
    if not 0 < gt_prob < 1:
        raise InputError(f"{context}: gt_prob must lie in (0, 1), got {gt_prob}")
    crf = densecrf.DenseCRF2D(width, height, int(n_labels))
    crf.setUnaryEnergy(unary_from_labels(labels.astype(np.int64), int(n_labels), gt_prob=gt_prob, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.ascontiguousarray(image), compat=bilateral_compat
    )
    marginals = np.asarray(crf.inference(int(iterations)))
    return np.argmax(marginals.reshape((int(n_labels), height, width)), axis=0)
