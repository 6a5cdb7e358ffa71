"""Independent restatements used by the model tests (plain numpy / Pillow, no library code)."""

from __future__ import annotations

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def bilinear_resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) -> (C, H, W), bilinear with half-pixel centres and edge clamping (align_corners=False)."""
    channels, in_height, in_width = maps.shape
    out_height, out_width = size

    def axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        source = np.maximum(source, 0.0)
        low = np.minimum(np.floor(source).astype(int), in_size - 1)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, source - low

    y0, y1, wy = axis(in_height, out_height)
    x0, x1, wx = axis(in_width, out_width)
    maps = maps.astype(np.float64)
    top = maps[:, y0][:, :, x0] * (1 - wx) + maps[:, y0][:, :, x1] * wx
    bottom = maps[:, y1][:, :, x0] * (1 - wx) + maps[:, y1][:, :, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def normalised_chw(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W) ImageNet-normalised."""
    return ((image.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1).copy()


def pillow_bicubic(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (int(round(width * scale)), int(round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
