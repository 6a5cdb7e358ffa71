"""Image transforms of the reference pipeline.

All resizing goes through Pillow, as the reference does (bicubic for images, nearest for
label maps; Pillow's bicubic is antialiased when downscaling). Randomness comes from an explicit
``numpy.random.Generator`` so that a data loader worker is reproducible from its seed.

Arrays are HWC ``uint8``/``float32`` images or HW label maps; coordinates are (y, x).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

BICUBIC = 3
NEAREST = 0


def pil_resize(array: np.ndarray, size: tuple[int, int], order: int) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) uint8/float array to ``size`` = (height, width) with Pillow.

    ``order`` 3 is bicubic, 0 is nearest. Float arrays are resized channel by channel in mode "F".
    """
    height, width = int(size[0]), int(size[1])
    if array.shape[:2] == (height, width):
        return array
    resample = Image.Resampling.BICUBIC if order == BICUBIC else Image.Resampling.NEAREST
    if array.dtype == np.uint8:
        return np.array(Image.fromarray(array).resize((width, height), resample))
    if array.ndim == 2:
        channels = [array]
    else:
        channels = [array[..., index] for index in range(array.shape[2])]
    resized = [
        np.asarray(Image.fromarray(channel.astype(np.float32), mode="F").resize((width, height), resample))
        for channel in channels
    ]
    out = resized[0] if array.ndim == 2 else np.stack(resized, axis=-1)
    return out.astype(array.dtype)


def pil_rescale(array: np.ndarray, scale: float, order: int) -> np.ndarray:
    """Rescale by ``scale`` to (round(H * scale), round(W * scale)); a no-op if the size is unchanged."""
    height, width = array.shape[:2]
    return pil_resize(array, (int(round(height * scale)), int(round(width * scale))), order)


def random_resize_long(image: np.ndarray, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """Resize so that the longer side is a uniform integer in [low, high] (inclusive), bicubic."""
    target = int(rng.integers(low, high + 1))
    height, width = image.shape[:2]
    scale = target / max(height, width)
    return pil_rescale(image, scale, BICUBIC)


def random_scale(
    arrays: Sequence[np.ndarray], scale_range: tuple[float, float], orders: Sequence[int], rng: np.random.Generator
) -> list[np.ndarray]:
    """Rescale every array by one factor ``low + U[0, 1) * (high - low)`` with its own order."""
    low, high = scale_range
    scale = low + float(rng.random()) * (high - low)
    return [pil_rescale(array, scale, order) for array, order in zip(arrays, orders, strict=True)]


def random_lr_flip(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Flip all arrays horizontally together with probability 0.5."""
    if rng.random() < 0.5:
        return [np.ascontiguousarray(np.flip(array, axis=1)) for array in arrays]
    return list(arrays)


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (H, W, 3), ``(x / 255 - mean) / std`` per channel (ImageNet)."""
    image = image.astype(np.float32) / 255.0
    return (image - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


def _crop_window(size: int, crop: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """(container start, image start, length) for one axis of the reference's random crop."""
    if size > crop:
        image_start = int(rng.integers(0, size - crop + 1))
        return 0, image_start, crop
    container_start = int(rng.integers(0, crop - size + 1))
    return container_start, 0, size


def random_crop(
    arrays: Sequence[np.ndarray], crop_size: int, fill_values: Sequence[float], rng: np.random.Generator
) -> list[np.ndarray]:
    """The reference's random crop: a ``crop_size``² container filled with ``fill_values``.

    Along each axis independently, a larger image contributes a random window; a smaller one is
    pasted whole at a random offset. The same window applies to every array.
    """
    height, width = arrays[0].shape[:2]
    box_y, image_y, length_y = _crop_window(height, crop_size, rng)
    box_x, image_x, length_x = _crop_window(width, crop_size, rng)
    out = []
    for array, fill in zip(arrays, fill_values, strict=True):
        container = np.full((crop_size, crop_size) + array.shape[2:], fill, dtype=array.dtype)
        container[box_y : box_y + length_y, box_x : box_x + length_x] = array[
            image_y : image_y + length_y, image_x : image_x + length_x
        ]
        out.append(container)
    return out


def top_left_crop(array: np.ndarray, crop_size: int, fill_value: float) -> np.ndarray:
    """Paste the top-left min(H, crop) x min(W, crop) block into a filled ``crop_size``² container."""
    container = np.full((crop_size, crop_size) + array.shape[2:], fill_value, dtype=array.dtype)
    height, width = min(array.shape[0], crop_size), min(array.shape[1], crop_size)
    container[:height, :width] = array[:height, :width]
    return container


def hwc_to_chw(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> contiguous (C, H, W)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1))
