"""Multi-scale, flip-augmented class activation maps of one image (``step/make_cam.py`` of the reference)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from irn_core.data.transforms import BICUBIC, hwc_to_chw, normalize, pil_rescale
from irn_core.errors import InputError
from irn_core.models.cam import CAMNet

REFERENCE_SCALES: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
NORMALISATION_EPSILON = 1e-5


def check_rgb_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        description = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"expected a uint8 RGB image of shape (H, W, 3), got {description}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"expected a non-empty image, got shape {image.shape}")


def flip_pair(image: np.ndarray, device: torch.device) -> Tensor:
    """uint8 RGB (H, W, 3) -> normalised float32 (2, 3, H, W) on ``device``: [image, image flipped along W]."""
    chw = torch.from_numpy(hwc_to_chw(normalize(image))).to(device)
    return torch.stack([chw, chw.flip(-1)])


def train_range_base_scale(height: int, width: int, long_side_range: tuple[int, int]) -> float:
    """The factor that brings an image's long side into the training's ``resize_long`` range.

    1.0 when ``max(height, width)`` lies in ``[low, high]``; otherwise the factor that makes the long side
    equal to the nearer end of the range (``low / long`` for a smaller image, ``high / long`` for a larger one).
    """
    low, high = long_side_range
    long_side = max(height, width)
    if min(height, width) < 1 or low < 1 or low > high:
        raise InputError(
            f"need a positive image size and a range 1 <= low <= high, got {(height, width)} and {long_side_range}"
        )
    if long_side < low:
        return low / long_side
    if long_side > high:
        return high / long_side
    return 1.0


def multiscale_cams(
    model: CAMNet,
    image: np.ndarray,
    *,
    scales: Sequence[float] = REFERENCE_SCALES,
    flip: bool = True,
    base_scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Class activation maps of every class, summed over scales and (optionally) the horizontal flip.

    ``image``: uint8 RGB (H, W, 3). For each scale s the image is rescaled with Pillow bicubic to
    (round(H s b), round(W s b)), b = ``base_scale`` (s b = 1 keeps the original; b = 1, the default, is
    the reference; see :func:`train_range_base_scale`), normalised, paired with its flip and run as a
    batch of 2 through ``model.class_activation_maps``; the scale's map is ``out[0] + flip_W(out[1])``
    (``out[0]`` alone if ``flip`` is False, a deviation from the reference). Each scale's map is resized
    bilinearly (align_corners=False) directly to (ceil(H/4), ceil(W/4)) and summed over scales, giving
    ``cam_s4``; and to (16 ceil(H/16), 16 ceil(W/16)), summed, then cropped to (H, W), giving ``high_res``.

    Returns ``(cam_s4 (C, ceil(H/4), ceil(W/4)), high_res (C, H, W))``, float32, unnormalised, on the
    model's device. The model is put in eval mode; runs under ``torch.inference_mode()``.
    """
    check_rgb_image(image)
    if len(scales) == 0:
        raise InputError("multiscale_cams needs at least one scale")
    if not base_scale > 0:
        raise InputError(f"base_scale must be positive, got {base_scale}")
    height, width = image.shape[:2]
    strided_size = (math.ceil(height / 4), math.ceil(width / 4))
    strided_up_size = (16 * math.ceil(height / 16), 16 * math.ceil(width / 16))
    device = next(model.parameters()).device
    model.eval()
    cam_s4: Tensor | None = None
    high_res: Tensor | None = None
    with torch.inference_mode():
        for scale in scales:
            factor = scale * base_scale
            scaled = image if factor == 1.0 else pil_rescale(image, factor, BICUBIC)
            if flip:
                maps = model.class_activation_maps(flip_pair(scaled, device))
                scale_map = maps[0] + maps[1].flip(-1)
            else:
                batch = torch.from_numpy(hwc_to_chw(normalize(scaled))).to(device)[None]
                scale_map = model.class_activation_maps(batch)[0]
            scale_map = scale_map[None]
            strided = F.interpolate(scale_map, strided_size, mode="bilinear", align_corners=False)[0]
            upsampled = F.interpolate(scale_map, strided_up_size, mode="bilinear", align_corners=False)[0]
            # running sums in scale order (on CPU bit-identical to the reference's stack-then-sum, less memory)
            cam_s4 = strided if cam_s4 is None else cam_s4.add_(strided)
            high_res = upsampled if high_res is None else high_res.add_(upsampled)
        assert cam_s4 is not None and high_res is not None
        high_res = high_res[:, :height, :width]
    return cam_s4, high_res


def select_classes(cam_s4: Tensor, high_res: Tensor, class_ids: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
    """Keep the channels of the present classes and divide each by its own spatial max (+ 1e-5).

    ``cam_s4``: (C, h, w), ``high_res``: (C, H, W); ``class_ids``: 0-based class ids, strictly ascending
    (the reference's ``nonzero(label)``). Returns (K, h, w) and (K, H, W) with values in [0, 1).
    """
    ids = torch.as_tensor(class_ids, dtype=torch.long).reshape(-1).cpu()
    if cam_s4.ndim != 3 or high_res.ndim != 3 or cam_s4.shape[0] != high_res.shape[0]:
        raise InputError(f"expected cam_s4 (C, h, w) and high_res (C, H, W), got {tuple(cam_s4.shape)} and {tuple(high_res.shape)}")
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= cam_s4.shape[0]):
        raise InputError(f"class ids {ids.tolist()} out of range for {cam_s4.shape[0]} classes")
    if len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all()):
        raise InputError(f"class ids must be strictly ascending, got {ids.tolist()}")
    selected = []
    for maps in (cam_s4, high_res):
        kept = maps[ids.to(maps.device)]
        maximum = kept.amax(dim=(1, 2), keepdim=True) if len(ids) else kept[:, :1, :1]
        selected.append(kept / (maximum + NORMALISATION_EPSILON))
    return selected[0], selected[1]
