"""Boundary map and displacement field of one image (``EdgeDisplacement`` of the reference, §7.1)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from irn_core.cam.infer import check_rgb_image, flip_pair
from irn_core.errors import InputError
from irn_core.models.irnet import IRNet

REFERENCE_PAD_TO = 512
OVERSIZE_MULTIPLE = 16


def padded_canvas_size(
    height: int, width: int, *, pad_to: int | None = REFERENCE_PAD_TO, oversize_multiple: int = OVERSIZE_MULTIPLE
) -> tuple[int, int]:
    """(height, width) of the zero-padded network input for an H x W image.

    ``pad_to`` = P: each side is P if the image fits (the reference pads every image to 512 x 512); a side
    longer than P becomes the next multiple of ``oversize_multiple`` covering it (the reference would crop
    such an image through a negative pad; here it is never cropped). ``pad_to=None``: no padding at all
    (a deviation: GroupNorm statistics then see only the image).
    """
    if pad_to is None:
        return height, width

    def side(length: int) -> int:
        if length <= pad_to:
            return pad_to
        return oversize_multiple * math.ceil(length / oversize_multiple)

    return side(height), side(width)


def boundary_and_displacement(
    model: IRNet, image: np.ndarray, *, pad_to: int | None = REFERENCE_PAD_TO, oversize_multiple: int = OVERSIZE_MULTIPLE
) -> tuple[Tensor, Tensor]:
    """Class-boundary probabilities and displacement field at stride 4 of one uint8 RGB (H, W, 3) image.

    The normalised image and its horizontal flip, each zero-padded at the right/bottom to the canvas
    of :func:`padded_canvas_size`, run as one batch of 2; both outputs are cropped to
    (h, w) = (ceil(H/4), ceil(W/4)). ``boundary_s4`` = sigmoid(logits[0] / 2 + flip_W(logits[1]) / 2)
    (cropped before flipping, as the reference; for W not divisible by 4 the flipped grid is offset by a
    fraction of a cell). ``displacement_s4`` = the unflipped image's displacement after the
    :class:`~irn_core.models.irnet.MeanShift` subtraction, channel 0 = y, 1 = x.

    Returns ``(boundary_s4 (h, w), displacement_s4 (2, h, w))`` float32 on the model's device. The
    model is put in eval mode; runs under ``torch.inference_mode()``.
    """
    check_rgb_image(image)
    if pad_to is not None and pad_to <= 0:
        raise InputError(f"pad_to must be positive or None, got {pad_to}")
    height, width = image.shape[:2]
    feature_size = (math.ceil(height / 4), math.ceil(width / 4))
    canvas_height, canvas_width = padded_canvas_size(height, width, pad_to=pad_to, oversize_multiple=oversize_multiple)
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        pair = flip_pair(image, device)
        pair = F.pad(pair, [0, canvas_width - width, 0, canvas_height - height])
        boundary_logits, displacement = model(pair)
        boundary_logits = boundary_logits[..., : feature_size[0], : feature_size[1]]
        displacement = displacement[..., : feature_size[0], : feature_size[1]]
        boundary_s4 = torch.sigmoid(boundary_logits[0, 0] / 2 + boundary_logits[1, 0].flip(-1) / 2)
        displacement_s4 = displacement[0]
    return boundary_s4, displacement_s4
