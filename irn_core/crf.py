"""Dense CRF refinement of a label map (pydensecrf), as the reference's ``crf_inference_label`` (§5).

Unary from hard labels (``gt_prob`` on the given label, the rest shared by the other labels;
label 0 is an ordinary label, ``zero_unsure=False``), a Gaussian pairwise term (``sxy`` 3,
``compat`` 3) and a bilateral one (``sxy`` 50, ``srgb`` 5, ``compat`` 10), 10 mean-field
iterations, argmax.
"""

from __future__ import annotations

import numpy as np

from irn_core.errors import InputError

__all__ = ["dense_crf_labels", "dense_crf_probabilities"]


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


def dense_crf_probabilities(
    image: np.ndarray,
    probabilities: np.ndarray,
    *,
    iterations: int = 10,
    pos_w: float = 3,
    pos_xy_std: float = 1,
    bi_w: float = 4,
    bi_xy_std: float = 67,
    bi_rgb_std: float = 3,
    image_id: str | None = None,
) -> np.ndarray:
    """Refine class probabilities with a fully connected CRF (DeepLab's post-processing).

    Unary ``-log(max(p, 1e-5))`` (pydensecrf's ``unary_from_softmax``), a Gaussian pairwise term
    (``sxy`` = ``pos_xy_std``, ``compat`` = ``pos_w``) and a bilateral one (``sxy`` = ``bi_xy_std``,
    ``srgb`` = ``bi_rgb_std``, ``compat`` = ``bi_w``), ``iterations`` mean-field steps. The defaults
    are DeepLab v2's, as kazuto1011/deeplab-pytorch sets them.

    Args:
        image: ``(H, W, 3)`` uint8 RGB image.
        probabilities: ``(C, H, W)`` class probabilities (C >= 2), e.g. a softmax.
        image_id: named in error messages.

    Returns:
        ``(C, H, W)`` float32 marginals of the CRF.
    """
    import pydensecrf.densecrf as densecrf
    from pydensecrf.utils import unary_from_softmax

    context = f"crf.dense_crf_probabilities (image {image_id})" if image_id else "crf.dense_crf_probabilities"
    image = np.asarray(image)
    probabilities = np.asarray(probabilities)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"{context}: image must be (H, W, 3) uint8, got shape {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    if probabilities.ndim != 3 or probabilities.shape[1:] != (height, width) or probabilities.shape[0] < 2:
        raise InputError(
            f"{context}: probabilities must be (C >= 2, {height}, {width}) for a {height}x{width} image, "
            f"got {probabilities.shape}"
        )
    if not np.isfinite(probabilities).all():
        raise InputError(f"{context}: probabilities hold non-finite values")
    classes = probabilities.shape[0]
    crf = densecrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probabilities.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)
    crf.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=np.ascontiguousarray(image), compat=bi_w)
    marginals = np.asarray(crf.inference(int(iterations)), dtype=np.float32)
    return marginals.reshape((classes, height, width))
