"""DeepLab v2 inference: the multi-scale + flip ensemble of the paper, then an optional dense CRF.

The ensemble (the paper's supplementary, section 2.2): the image is resized to each of ``scales``
(0.5, 1.0, 1.5, 2.0) and, with ``flip``, also flipped horizontally: 8 inputs. Each member's logits are
upsampled bilinearly (align_corners=False) to the image size, turned into probabilities with a softmax
over the classes (a flipped member's are flipped back), and the probabilities of all members are
averaged pixel by pixel. Inputs are resized bilinearly without antialiasing to (round(H s), round(W s)),
as the training crops are (:func:`irn_core.deeplab.train.resize_images`).

The dense CRF (Krähenbühl and Koltun 2011, DeepLab's post-processing) then refines the averaged
probabilities (:func:`irn_core.crf.dense_crf_probabilities`, the recipe's constants by default); the
label of a pixel is the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from irn_core.cam.infer import check_rgb_image
from irn_core.crf import dense_crf_probabilities
from irn_core.data.transforms import hwc_to_chw, normalize
from irn_core.deeplab.train import resize_images
from irn_core.errors import InputError
from irn_core.models.deeplab import DeepLabV2

PAPER_SCALES: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class DeepLabCRFSettings:
    """DeepLab's dense CRF constants (kazuto1011/deeplab-pytorch's defaults)."""

    iterations: int = 10
    pos_w: float = 3.0
    pos_xy_std: float = 1.0
    bi_w: float = 4.0
    bi_xy_std: float = 67.0
    bi_rgb_std: float = 3.0


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(round(H s), round(W s)), at least 1 pixel each."""
    return max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)


def ensemble_members(image: np.ndarray, *, scales: Sequence[float] = PAPER_SCALES,
                     flip: bool = True) -> list[tuple[float, bool]]:
    """The (scale, flipped) pairs of the ensemble, in evaluation order."""
    check_rgb_image(image)
    if len(scales) == 0:
        raise InputError("the DeepLab ensemble needs at least one scale")
    return [(float(scale), flipped) for scale in scales for flipped in ((False, True) if flip else (False,))]


def ensemble_probabilities(
    model: DeepLabV2, image: np.ndarray, *, scales: Sequence[float] = PAPER_SCALES, flip: bool = True
) -> Tensor:
    """Class probabilities of ``image`` averaged over the multi-scale (+ flip) ensemble.

    ``image``: uint8 RGB (H, W, 3). Returns float32 (num_classes, H, W) on the model's device, summing
    to 1 over the classes. The model is put in eval mode; runs under ``torch.inference_mode()``. A
    scale's plain and flipped inputs run as one batch of 2.
    """
    members = ensemble_members(image, scales=scales, flip=flip)
    height, width = image.shape[:2]
    device = next(model.parameters()).device
    model.eval()
    total: Tensor | None = None
    with torch.inference_mode():
        normalised = torch.from_numpy(hwc_to_chw(normalize(image))).to(device)[None]
        for scale in dict.fromkeys(scale for scale, _ in members):
            scaled = resize_images(normalised, scaled_size(height, width, scale))
            batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
            logits = F.interpolate(model(batch), size=(height, width), mode="bilinear", align_corners=False)
            probabilities = logits.softmax(dim=1)
            scale_sum = probabilities[0] + probabilities[1].flip(-1) if flip else probabilities[0]
            total = scale_sum if total is None else total.add_(scale_sum)
    assert total is not None
    return total / len(members)


def predict_labels(
    model: DeepLabV2,
    image: np.ndarray,
    *,
    scales: Sequence[float] = PAPER_SCALES,
    flip: bool = True,
    crf: DeepLabCRFSettings | None = DeepLabCRFSettings(),
    image_id: str | None = None,
) -> np.ndarray:
    """uint8 (H, W) label map of ``image``: argmax of the ensemble's probabilities, after the dense CRF
    unless ``crf`` is None."""
    probabilities = ensemble_probabilities(model, image, scales=scales, flip=flip).float().cpu().numpy()
    if crf is not None:
        probabilities = dense_crf_probabilities(
            image,
            probabilities,
            iterations=crf.iterations,
            pos_w=crf.pos_w,
            pos_xy_std=crf.pos_xy_std,
            bi_w=crf.bi_w,
            bi_xy_std=crf.bi_xy_std,
            bi_rgb_std=crf.bi_rgb_std,
            image_id=image_id,
        )
    return np.argmax(probabilities, axis=0).astype(np.uint8)
