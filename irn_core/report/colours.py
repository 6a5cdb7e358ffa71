"""Colour conventions of the report: the PASCAL VOC palette and the optical-flow colour wheel.

The flow colour wheel is the Middlebury convention (Baker et al., "A Database and Evaluation
Methodology for Optical Flow", IJCV 2011): hue gives the direction, saturation the magnitude
(white = no motion, full colour = the largest motion in the image). With image axes (x right,
y down) a vector pointing right is red, down is yellow-orange, left is cyan and up is blue-violet.
The wheel has 55 hues in six ramps: red->yellow (15), yellow->green (6), green->cyan (4),
cyan->blue (11), blue->magenta (13), magenta->red (6).
"""

from __future__ import annotations

import functools

import numpy as np

from irn_core.data.palette import voc_palette
from irn_core.errors import InputError

#: Hue ramps of the Middlebury wheel: (number of steps, start colour, end colour).
_WHEEL_RAMPS: tuple[tuple[int, tuple[int, int, int], tuple[int, int, int]], ...] = (
    (15, (255, 0, 0), (255, 255, 0)),
    (6, (255, 255, 0), (0, 255, 0)),
    (4, (0, 255, 0), (0, 255, 255)),
    (11, (0, 255, 255), (0, 0, 255)),
    (13, (0, 0, 255), (255, 0, 255)),
    (6, (255, 0, 255), (255, 0, 0)),
)


@functools.cache
def palette_array() -> np.ndarray:
    """The VOC palette as a (256, 3) uint8 array: row k is the colour of label k (255 = void)."""
    array = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    array.setflags(write=False)
    return array


def label_colours(labels: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8 VOC colours (labels taken modulo 256)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"label map must be (H, W), got shape {labels.shape}")
    return palette_array()[np.mod(labels.astype(np.int64), 256)]


@functools.cache
def flow_colour_wheel() -> np.ndarray:
    """The 55 hues of the Middlebury wheel: (55, 3) float64 in [0, 255], in ramp order.

    Within a ramp of n steps the changing channel moves by ``floor(255 · i / n)`` for i = 0 … n−1
    (the ramp's end colour is the next ramp's first entry).
    """
    hues = []
    for steps, start, end in _WHEEL_RAMPS:
        for step in range(steps):
            moved = np.floor(255 * step / steps)
            hues.append([s + (moved if e > s else -moved if e < s else 0) for s, e in zip(start, end)])
    wheel = np.asarray(hues, dtype=np.float64)
    wheel.setflags(write=False)
    return wheel


def flow_to_rgb(flow_y: np.ndarray, flow_x: np.ndarray, *, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow / displacement field: (H, W) y and x components -> (H, W, 3) uint8.

    The vectors are divided by ``max_magnitude`` (default: the largest magnitude in the field, so
    the strongest vector is fully saturated). Direction picks a hue by linear interpolation between
    the two nearest wheel entries; a normalised magnitude r <= 1 blends it towards white
    (``1 − r · (1 − hue)``), a larger one (only with an explicit ``max_magnitude``) is darkened to
    75 %. No motion is white.
    """
    flow_y = np.asarray(flow_y, dtype=np.float64)
    flow_x = np.asarray(flow_x, dtype=np.float64)
    if flow_y.shape != flow_x.shape or flow_y.ndim != 2:
        raise InputError(f"flow components must be two (H, W) maps of one shape, got {flow_y.shape} and {flow_x.shape}")
    if not (np.all(np.isfinite(flow_y)) and np.all(np.isfinite(flow_x))):
        raise InputError("flow components must be finite")
    magnitude = np.hypot(flow_x, flow_y)
    scale = float(magnitude.max()) if max_magnitude is None else float(max_magnitude)
    if scale <= 0:
        scale = 1.0
    radius = magnitude / scale
    wheel = flow_colour_wheel() / 255.0
    count = wheel.shape[0]
    angle = np.arctan2(-flow_y, -flow_x) / np.pi  # in [-1, 1]
    position = (angle + 1) / 2 * (count - 1)
    lower = np.floor(position).astype(np.int64)
    upper = (lower + 1) % count
    fraction = (position - lower)[..., None]
    hue = (1 - fraction) * wheel[lower] + fraction * wheel[upper]
    inside = (radius <= 1)[..., None]
    colour = np.where(inside, 1 - radius[..., None] * (1 - hue), hue * 0.75)
    return np.floor(255 * np.clip(colour, 0, 1)).astype(np.uint8)


def colour_wheel_legend(size: int = 96) -> np.ndarray:
    """A (size, size, 3) uint8 picture of the wheel (vectors up to the disc's radius), white outside."""
    if size < 8:
        raise InputError(f"legend size must be at least 8 pixels, got {size}")
    centre = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    flow_y, flow_x = (y - centre) / centre, (x - centre) / centre
    picture = flow_to_rgb(flow_y, flow_x, max_magnitude=1.0)
    picture[np.hypot(flow_y, flow_x) > 1] = 255
    return picture
