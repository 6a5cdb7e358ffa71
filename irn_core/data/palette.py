"""PASCAL VOC colour palette and indexed ("P" mode) PNG label maps."""

from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

from irn_core.atomic import atomic_path


@functools.cache
def voc_palette() -> tuple[int, ...]:
    """The 256-entry VOC colour map as a flat (r, g, b, r, g, b, ...) tuple of 768 ints.

    Entry k takes the bits of k, three at a time, into the high bits of r, g and b
    (index 255, the void label, comes out as (224, 224, 192)).
    """
    palette = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette.extend((red, green, blue))
    return tuple(palette)


def write_indexed_png(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Write an (H, W) uint8 label map as a palette PNG with the VOC palette, atomically."""
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"{path}: label map must be 2-D uint8, got {labels.dtype} {labels.shape}")
    image = Image.fromarray(labels, mode="P")
    image.putpalette(list(voc_palette()))
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
