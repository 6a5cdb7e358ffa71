"""Deterministic synthetic dataset in the PASCAL VOC layout, built so that IRNet visibly works on it.

Every object is a plain, compact *body* (a rotated, slightly wobbly super-ellipse whose colour and
shape are drawn from one class-independent distribution) carrying a small discriminative *head*
at one end of its long axis: a disk, about 15-30 % of the object's area, filled with a
class-specific texture (stripes, checkerboard, dots, rings, ...) in a class-specific ink colour.
A classifier only needs the heads, so its class activation maps come out incomplete, as on real
photos; the bodies still have a visible edge against the background (colour contrast and a dark
rim), so class boundaries are learnable. The background is textured (gradient, blotches,
low-contrast stripes, noise) and cluttered with head-less body look-alikes and small shapes, so body
appearance alone is not discriminative. Images hold 1-5 instances; with ``touch_probability`` a new
instance is placed so that it touches (and may slightly occlude) an earlier instance of the same
class, with a different body colour, so that the centroid-based instance split has work to do.

Everything is drawn from ``numpy.random.default_rng([seed, index])``: image ``index`` comes out
identical whichever other images are generated, in whatever order or process. The written bytes
are identical for the same configuration given the same numpy / Pillow (libjpeg, zlib) builds.

Layout written by :func:`generate` (``<id>`` like ``syn_000000``)::

    JPEGImages/<id>.jpg              RGB, JPEG quality ``jpeg_quality``, 4:4:4 chroma
    SegmentationClass/<id>.png       VOC palette; 0 background, k + 1 class k, 255 void band
    SegmentationObject/<id>.png      VOC palette; 1..N instances (XML order), 0 background, 255 void
    SegmentationPart/<id>.png        (if ``write_part_masks``) 0 background, 1 body, 2 head; no void
    Annotations/<id>.xml             VOC annotation: every object with name, bndbox, difficult 0
    ImageSets/Segmentation/{train,val,trainval}.txt
    classes.txt                      one class name per line, 0-based class order
    synthetic.json                   generator name and version, the full parameter set, split sizes
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy import ndimage

from irn_core.atomic import atomic_path, write_text_atomic
from irn_core.data.palette import write_indexed_png
from irn_core.errors import DatasetError

logger = logging.getLogger(__name__)

#: Bumped whenever the same configuration would produce different bytes.
GENERATOR_VERSION: str = "1"
GENERATOR_NAME: str = "irn_core.data.synthetic"

#: The head textures, one per class, in class order; their count bounds ``num_classes``.
HEAD_TEXTURES: tuple[str, ...] = (
    "striped",
    "checkered",
    "dotted",
    "ringed",
    "gridded",
    "zigzag",
    "speckled",
    "solid",
)
MAX_CLASSES: int = len(HEAD_TEXTURES)

#: Class-specific head ink colours (RGB), used when ``head_colour_cue`` is on.
INK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (225, 35, 35),
    (35, 75, 235),
    (30, 190, 60),
    (245, 185, 15),
    (215, 40, 205),
    (20, 205, 215),
    (15, 15, 15),
    (250, 250, 250),
)

VOID_LABEL: int = 255
ID_PREFIX: str = "syn_"
ID_DIGITS: int = 6
SPLITS: tuple[str, ...] = ("train", "val", "trainval")

_CLASS_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
_PLACEMENT_ATTEMPTS = 24
_TOUCH_DIRECTIONS = 12
_FREE_POSITIONS = 24
_COLOUR_ATTEMPTS = 24


class SyntheticConfig(BaseModel):
    """Every parameter of the synthetic dataset (see ``docs/synthetic.md`` for their effects).

    Ranges are ``(low, high)`` pairs, both inclusive, sampled uniformly per image or per object.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="Master seed; image i is drawn from numpy default_rng([seed, i]).")
    num_train: int = Field(200, ge=1, le=500_000, description="Number of train images (ids syn_000000 onwards).")
    num_val: int = Field(
        50, ge=0, le=500_000, description="Number of val images (ids continue after the train ids)."
    )
    num_classes: int = Field(
        4,
        ge=1,
        le=MAX_CLASSES,
        description=f"Number of foreground classes; class k gets head texture k of {HEAD_TEXTURES}.",
    )
    class_names: tuple[str, ...] | None = Field(
        None,
        description="Class names in class order (letters, digits, '_' or '-', starting with a letter); "
        "None uses the head texture names.",
    )
    image_size_range: tuple[int, int] = Field(
        (192, 256), description="Range of image height and of image width in pixels (each drawn independently)."
    )
    objects_per_image: tuple[int, int] = Field(
        (1, 5),
        description="Range of the number of instances per image (an instance that finds no place in 24 tries at "
        "shrinking sizes is dropped; an image that cannot hold even one raises DatasetError).",
    )
    touch_probability: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Probability that each instance after the first is placed touching an earlier instance "
        "of the same class (falling back to a free placement when no touching position fits).",
    )
    touch_overlap_range: tuple[int, int] = Field(
        (0, 3),
        description="Extra pixels a touching instance is pushed into its partner beyond first contact "
        "(the later instance occludes the earlier one).",
    )
    max_occluded_fraction: float = Field(
        0.15,
        ge=0.0,
        le=0.5,
        description="Largest fraction of an instance's area a touching instance may cover (its head always "
        "keeps at least 90 % of its pixels).",
    )
    object_size_range: tuple[float, float] = Field(
        (0.35, 0.7),
        description="Range of an instance's body length (long axis) as a fraction of the image's shorter side.",
    )
    aspect_ratio_range: tuple[float, float] = Field(
        (1.2, 1.9), description="Range of the body's long-axis / short-axis ratio."
    )
    head_fraction_range: tuple[float, float] = Field(
        (0.15, 0.3), description="Range of the head's share of the whole object's area (head disk / object)."
    )
    head_colour_cue: bool = Field(
        True,
        description="Heads use a class-specific ink colour; False draws every texture in black or white "
        "(whichever contrasts with the body), leaving the texture as the only class cue (harder).",
    )
    min_body_contrast: float = Field(
        60.0,
        ge=0.0,
        le=300.0,
        description="Smallest RGB distance between a body's colour and the mean background under it "
        "(best of several draws if unreachable).",
    )
    min_instance_colour_distance: float = Field(
        70.0,
        ge=0.0,
        le=300.0,
        description="Smallest RGB distance between the body colours of two touching instances "
        "(best of several draws if unreachable).",
    )
    min_ink_contrast: float = Field(
        110.0,
        ge=0.0,
        le=300.0,
        description="Smallest RGB distance between a body's colour and its head's class ink colour, so the "
        "texture stays visible (best of several draws if unreachable; unused without head_colour_cue).",
    )
    min_gap: int = Field(
        3, ge=0, le=32, description="Smallest gap in pixels between instances that are not placed touching."
    )
    distractor_count_range: tuple[int, int] = Field(
        (1, 4),
        description="Range of the number of head-less body look-alikes (background clutter, label 0) per image.",
    )
    speck_count_range: tuple[int, int] = Field(
        (4, 14), description="Range of the number of small plain shapes (background clutter, label 0) per image."
    )
    background_texture_strength: float = Field(
        1.0,
        ge=0.0,
        le=4.0,
        description="Multiplier of the background's gradient, blotch and stripe amplitudes (0 = flat colour).",
    )
    outline_strength: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Darkening of the 1-pixel rim of every object's and distractor's silhouette (0 = no rim).",
    )
    noise_std: float = Field(
        3.0, ge=0.0, le=50.0, description="Standard deviation of the per-pixel Gaussian noise over the whole image."
    )
    void_band_width: int = Field(
        2,
        ge=0,
        le=16,
        description="Width in pixels of the VOC-like void (255) band along every boundary between "
        "different instance labels (background included) in both segmentation PNGs; even, half on each side; "
        "0 disables it.",
    )
    jpeg_quality: int = Field(
        95, ge=50, le=100, description="JPEG quality of JPEGImages (4:4:4 chroma, no subsampling)."
    )
    write_part_masks: bool = Field(
        True, description="Also write SegmentationPart/<id>.png (0 background, 1 body, 2 head) for part analyses."
    )

    @field_validator(
        "image_size_range",
        "objects_per_image",
        "touch_overlap_range",
        "object_size_range",
        "aspect_ratio_range",
        "head_fraction_range",
        "distractor_count_range",
        "speck_count_range",
    )
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError(f"range low {value[0]} exceeds high {value[1]}")
        return value

    @field_validator("image_size_range")
    @classmethod
    def _image_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] < 64 or value[1] > 2048:
            raise ValueError("image sides must lie in [64, 2048]")
        return value

    @field_validator("objects_per_image")
    @classmethod
    def _object_count(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] < 1 or value[1] > 8:
            raise ValueError("objects per image must lie in [1, 8]")
        return value

    @field_validator("touch_overlap_range", "distractor_count_range", "speck_count_range")
    @classmethod
    def _non_negative(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] < 0 or value[1] > 64:
            raise ValueError("counts must lie in [0, 64]")
        return value

    @field_validator("object_size_range")
    @classmethod
    def _object_size(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] < 0.1 or value[1] > 0.8:
            raise ValueError("object sizes must lie in [0.1, 0.8] of the shorter image side")
        return value

    @field_validator("aspect_ratio_range")
    @classmethod
    def _aspect(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] < 1.0 or value[1] > 3.0:
            raise ValueError("aspect ratios must lie in [1, 3]")
        return value

    @field_validator("head_fraction_range")
    @classmethod
    def _head_fraction(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] < 0.05 or value[1] > 0.5:
            raise ValueError("head fractions must lie in [0.05, 0.5]")
        return value

    @field_validator("void_band_width")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("void band width must be even (half of it lies on each side of a boundary)")
        return value

    @model_validator(mode="after")
    def _names(self) -> SyntheticConfig:
        if self.class_names is not None:
            if len(self.class_names) != self.num_classes:
                raise ValueError(f"{len(self.class_names)} class names given for {self.num_classes} classes")
            if len(set(self.class_names)) != len(self.class_names):
                raise ValueError("class names must be distinct")
            for name in self.class_names:
                if not _CLASS_NAME_PATTERN.match(name) or name.lower() == "background":
                    raise ValueError(f"invalid class name {name!r}")
        return self

    @property
    def resolved_class_names(self) -> tuple[str, ...]:
        """The class names in class order (the head texture names unless ``class_names`` is set)."""
        return self.class_names if self.class_names is not None else HEAD_TEXTURES[: self.num_classes]

    @property
    def num_images(self) -> int:
        """Train plus val images."""
        return self.num_train + self.num_val


@dataclasses.dataclass(frozen=True)
class SyntheticObject:
    """One instance of a rendered image.

    ``bbox`` = (y_min, x_min, y_max, x_max), inclusive 0-based pixel indices of its visible pixels
    (before the void band); ``area`` and ``head_area`` count visible pixels; ``centroid`` = (y, x)
    of the visible pixels; ``touching`` lists the instance ids of same-class instances whose
    visible pixels are 4-adjacent to this one's.
    """

    instance_id: int
    class_index: int
    class_name: str
    bbox: tuple[int, int, int, int]
    area: int
    head_area: int
    centroid: tuple[float, float]
    touching: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SyntheticSample:
    """One rendered image and its ground truth.

    image: (H, W, 3) uint8 RGB (before JPEG coding);
    class_mask: (H, W) uint8, 0 background, k + 1 for class k, 255 void band;
    instance_mask: (H, W) uint8, 0 background, 1..N instance ids, 255 void band;
    part_mask: (H, W) uint8, 0 background, 1 body, 2 head (no void band);
    objects: the N instances in instance-id order.
    """

    image_id: str
    image: np.ndarray
    class_mask: np.ndarray
    instance_mask: np.ndarray
    part_mask: np.ndarray
    objects: tuple[SyntheticObject, ...]

    @property
    def class_indices(self) -> tuple[int, ...]:
        """The sorted, distinct 0-based classes present (the image-level label)."""
        return tuple(sorted({item.class_index for item in self.objects}))


# --------------------------------------------------------------------------- ids


def image_id(index: int) -> str:
    """The id of image ``index`` (0-based over train then val), e.g. ``syn_000042``."""
    return f"{ID_PREFIX}{index:0{ID_DIGITS}d}"


def image_ids(config: SyntheticConfig) -> list[str]:
    """All image ids, train first then val, computed without rendering anything."""
    return [image_id(index) for index in range(config.num_images)]


def split_ids(config: SyntheticConfig) -> dict[str, list[str]]:
    """Ids per split ``train``, ``val`` and ``trainval`` (train + val), computed without rendering."""
    identifiers = image_ids(config)
    return {
        "train": identifiers[: config.num_train],
        "val": identifiers[config.num_train :],
        "trainval": list(identifiers),
    }


def index_of(identifier: str) -> int:
    """The 0-based index of a synthetic image id (inverse of :func:`image_id`)."""
    if not identifier.startswith(ID_PREFIX) or not identifier[len(ID_PREFIX) :].isdigit():
        raise DatasetError(f"{identifier!r}: not a synthetic image id (expected {ID_PREFIX}NNNNNN)")
    return int(identifier[len(ID_PREFIX) :])


# --------------------------------------------------------------------------- colours and masks


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    """One HSV colour (components in [0, 1]) as an RGB float (3,) in [0, 255]."""
    sector = int(hue * 6.0) % 6
    fraction = hue * 6.0 - math.floor(hue * 6.0)
    low = value * (1.0 - saturation)
    falling = value * (1.0 - saturation * fraction)
    rising = value * (1.0 - saturation * (1.0 - fraction))
    rgb = [
        (value, rising, low),
        (falling, value, low),
        (low, value, rising),
        (low, falling, value),
        (rising, low, value),
        (value, low, falling),
    ][sector]
    return np.array(rgb, dtype=np.float64) * 255.0


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A body / clutter colour: any hue, low to medium saturation (class-independent)."""
    return _hsv_to_rgb(rng.random(), rng.uniform(0.08, 0.42), rng.uniform(0.3, 0.88))


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion of an (h, w) bool mask; pixels outside count as empty."""
    return ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)


@dataclasses.dataclass
class _Sprite:
    """A shape rendered in its own small frame, pasted at ``offset`` = (y, x) of its top-left pixel.

    mask / head: (h, w) bool (object, head disk); field: (h, w, 2) float, first the body-aligned
    (u, v) coordinates, after :func:`_decorate` the (shading factor, ink) field; anchor = (y, x) of the
    body centre in the sprite frame.
    """

    mask: np.ndarray
    head: np.ndarray
    field: np.ndarray
    anchor: tuple[int, int]
    offset: tuple[int, int] = (0, 0)
    class_index: int = -1
    body_colour: np.ndarray | None = None
    semi_major: float = 1.0
    head_radius: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape  # type: ignore[return-value]


def _window(
    offset: tuple[int, int], shape: tuple[int, int], canvas: tuple[int, int]
) -> tuple[slice, slice, slice, slice] | None:
    """Overlapping slices (canvas y, canvas x, sprite y, sprite x) of a sprite at ``offset`` on a canvas."""
    y0, x0 = offset
    height, width = shape
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y0 + height, canvas[0]), min(x0 + width, canvas[1])
    if cy0 >= cy1 or cx0 >= cx1:
        return None
    return slice(cy0, cy1), slice(cx0, cx1), slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0)


def _overlap(
    first: np.ndarray, first_offset: tuple[int, int], second: np.ndarray, second_offset: tuple[int, int]
) -> int:
    """Number of pixels where two placed (h, w) bool masks are both set."""
    y0 = max(first_offset[0], second_offset[0])
    x0 = max(first_offset[1], second_offset[1])
    y1 = min(first_offset[0] + first.shape[0], second_offset[0] + second.shape[0])
    x1 = min(first_offset[1] + first.shape[1], second_offset[1] + second.shape[1])
    if y0 >= y1 or x0 >= x1:
        return 0
    first_part = first[y0 - first_offset[0] : y1 - first_offset[0], x0 - first_offset[1] : x1 - first_offset[1]]
    second_part = second[y0 - second_offset[0] : y1 - second_offset[0], x0 - second_offset[1] : x1 - second_offset[1]]
    return int(np.count_nonzero(first_part & second_part))


# --------------------------------------------------------------------------- shapes


def _body_field(
    rng: np.random.Generator, semi_major: float, semi_minor: float, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A rotated, wobbly super-ellipse on a (2r+1)² grid centred on the body centre.

    Returns (body mask (n, n) bool, u, v): u, v are the body-aligned coordinates (long axis u).
    """
    angle = rng.uniform(0.0, 2.0 * math.pi)
    exponent = rng.uniform(2.0, 3.2)
    wobble = rng.uniform(-0.06, 0.06, size=2)
    phases = rng.uniform(0.0, 2.0 * math.pi, size=2)
    grid_y, grid_x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float32)
    cosine, sine = math.cos(angle), math.sin(angle)
    u = grid_x * cosine + grid_y * sine
    v = -grid_x * sine + grid_y * cosine
    polar = np.arctan2(v / semi_minor, u / semi_major)
    reach = 1.0 + wobble[0] * np.cos(2.0 * polar + phases[0]) + wobble[1] * np.cos(3.0 * polar + phases[1])
    body = (np.abs(u) / semi_major) ** exponent + (np.abs(v) / semi_minor) ** exponent <= reach**exponent
    return body, u, v


def _head_disk(u: np.ndarray, v: np.ndarray, semi_major: float, head_radius: float) -> np.ndarray:
    """The head disk: radius ``head_radius``, centred on the long axis half a radius inside the body's tip."""
    return (u - (semi_major - 0.5 * head_radius)) ** 2 + v**2 <= head_radius**2


def _head_radius(
    body: np.ndarray, u: np.ndarray, v: np.ndarray, semi_major: float, semi_minor: float, fraction: float
) -> float:
    """Bisect the head radius so that the head disk covers ``fraction`` of body ∪ head (as rasterised)."""
    low, high = 0.25 * semi_minor, 1.3 * semi_minor
    for _ in range(11):
        middle = 0.5 * (low + high)
        head = _head_disk(u, v, semi_major, middle)
        share = np.count_nonzero(head) / max(np.count_nonzero(head | body), 1)
        if share < fraction:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _texture(name: str, rng: np.random.Generator, y: np.ndarray, x: np.ndarray, head_radius: float) -> np.ndarray:
    """The ink pattern of a head texture at head-centred coordinates (y, x): (h, w) bool."""
    angle = rng.uniform(0.0, math.pi)
    cosine, sine = math.cos(angle), math.sin(angle)
    along = x * cosine + y * sine
    across = -x * sine + y * cosine
    period = float(np.clip(head_radius * rng.uniform(0.45, 0.65), 6.0, 12.0))
    phase = rng.uniform(0.0, period)
    if name == "striped":
        return np.mod(along + phase, period) < 0.5 * period
    if name == "checkered":
        cell = 0.5 * period
        return (np.floor((along + phase) / cell) + np.floor((across + phase) / cell)) % 2 == 0
    if name == "dotted":
        dy = np.mod(across + phase, period) - 0.5 * period
        dx = np.mod(along + phase, period) - 0.5 * period
        return dy**2 + dx**2 <= (0.38 * period) ** 2
    if name == "ringed":
        return np.mod(head_radius - np.hypot(y, x), period) < 0.5 * period  # the outermost band is ink
    if name == "gridded":
        dy = np.abs(np.mod(across + phase, period) - 0.5 * period)
        dx = np.abs(np.mod(along + phase, period) - 0.5 * period)
        return np.minimum(dy, dx) < 0.16 * period
    if name == "zigzag":
        triangle = np.abs(np.mod(across / period, 1.0) - 0.5) * period
        return np.mod(along + triangle + phase, period) < 0.5 * period
    if name == "speckled":
        cells = rng.random((int(2 * head_radius) // 2 + 3, int(2 * head_radius) // 2 + 3)) < 0.4
        rows = np.clip(((y + head_radius + 1) // 2).astype(np.int64), 0, cells.shape[0] - 1)
        columns = np.clip(((x + head_radius + 1) // 2).astype(np.int64), 0, cells.shape[1] - 1)
        return cells[rows, columns]
    if name == "solid":
        return np.ones_like(y, dtype=bool)
    raise ValueError(f"unknown head texture {name!r}")


def _make_object(
    rng: np.random.Generator, config: SyntheticConfig, short_side: int, class_index: int | None, size_scale: float = 1.0
) -> _Sprite:
    """The shape of one object (class_index set: body + head disk) or one head-less distractor (None).

    Only the geometry is drawn here; :func:`_decorate` adds shading and the head texture once the
    sprite has found a place (failed placements cost no texture work).
    """
    length = rng.uniform(*config.object_size_range) * short_side * size_scale
    semi_major = 0.5 * length
    semi_minor = semi_major / rng.uniform(*config.aspect_ratio_range)
    # The body reaches 1.12 semi-major axes at most, the head's tip a + 0.65 b (head radius <= 1.3 b).
    radius = int(math.ceil(max(1.13 * semi_major, semi_major + 0.66 * semi_minor))) + 2
    body, u, v = _body_field(rng, semi_major, semi_minor, radius)
    head_radius = 0.0
    if class_index is None:
        mask = body
        head = np.zeros_like(body)
    else:
        fraction = rng.uniform(*config.head_fraction_range)
        head_radius = _head_radius(body, u, v, semi_major, semi_minor, fraction)
        head = _head_disk(u, v, semi_major, head_radius)
        mask = body | head
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    crop = (slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))
    return _Sprite(
        mask=mask[crop],
        head=head[crop],
        field=np.stack([u[crop], v[crop]], axis=-1),
        anchor=(radius - int(rows[0]), radius - int(columns[0])),
        class_index=-1 if class_index is None else class_index,
        semi_major=semi_major,
        head_radius=head_radius,
    )


def _decorate(rng: np.random.Generator, sprite: _Sprite) -> None:
    """Replace a placed object's (u, v) field by its (shading factor, ink) field (h, w, 2), in place.

    Shading: a linear light gradient of up to ±15 % across the body; ink: the class texture ∩ head.
    """
    u, v = sprite.field[..., 0], sprite.field[..., 1]
    light = rng.uniform(0.0, 2.0 * math.pi)
    shade = 1.0 + rng.uniform(0.0, 0.15) * (u * math.cos(light) + v * math.sin(light)) / sprite.semi_major
    if sprite.class_index < 0:
        ink = np.zeros_like(shade)
    else:
        head_centre = sprite.semi_major - 0.5 * sprite.head_radius
        texture = _texture(HEAD_TEXTURES[sprite.class_index], rng, v, u - head_centre, sprite.head_radius)
        ink = (texture & sprite.head).astype(np.float64)
    sprite.field = np.stack([shade, ink], axis=-1)


def _speck(rng: np.random.Generator) -> _Sprite:
    """A small plain clutter shape: a rotated rectangle, a triangle or a disk, 4-16 px across."""
    size = rng.uniform(4.0, 16.0)
    radius = int(math.ceil(size)) + 1
    grid_y, grid_x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    kind = int(rng.integers(3))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    u = grid_x * math.cos(angle) + grid_y * math.sin(angle)
    v = -grid_x * math.sin(angle) + grid_y * math.cos(angle)
    if kind == 0:
        mask = (np.abs(u) <= 0.5 * size) & (np.abs(v) <= 0.5 * size * rng.uniform(0.3, 1.0))
    elif kind == 1:
        mask = np.ones_like(u, dtype=bool)
        for corner in range(3):
            theta = angle + corner * 2.0 * math.pi / 3.0
            mask &= grid_x * math.cos(theta) + grid_y * math.sin(theta) <= 0.35 * size
    else:
        mask = u**2 + v**2 <= (0.5 * size) ** 2
    field = np.stack([np.ones(mask.shape), np.zeros(mask.shape)], axis=-1)  # shading 1, no ink
    return _Sprite(mask=mask, head=np.zeros_like(mask), field=field, anchor=(radius, radius))


# --------------------------------------------------------------------------- painting


def _upsample(cells: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a small (h, w) float grid to (height, width) with Pillow (no BLAS, so the
    result does not depend on thread counts)."""
    image = Image.fromarray(cells.astype(np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)


def _background(rng: np.random.Generator, height: int, width: int, strength: float) -> np.ndarray:
    """A textured background: (H, W, 3) float RGB = base colour + gradient + blotches + faint stripes."""
    base = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.85))
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float64)
    direction = rng.uniform(0.0, 2.0 * math.pi)
    ramp = (grid_x * math.cos(direction) + grid_y * math.sin(direction)) / max(height, width)
    image = base + strength * ramp[..., None] * rng.uniform(-35.0, 35.0, size=3)
    cells = rng.normal(0.0, 1.0, size=(3, height // 24 + 2, width // 24 + 2))
    blotches = np.stack([_upsample(channel, height, width) for channel in cells], axis=-1)
    image = image + strength * rng.uniform(4.0, 12.0) * blotches
    if rng.random() < 0.7:
        period = rng.uniform(8.0, 28.0)
        angle = rng.uniform(0.0, math.pi)
        stripes = np.sin(2.0 * math.pi * (grid_x * math.cos(angle) + grid_y * math.sin(angle)) / period)
        image = image + strength * rng.uniform(3.0, 9.0) * stripes[..., None]
    return image


def _pick_colour(
    rng: np.random.Generator,
    under: np.ndarray,
    avoid: list[tuple[np.ndarray, float]],
    config: SyntheticConfig,
) -> np.ndarray:
    """A muted colour at least ``min_body_contrast`` from ``under`` and at least ``distance`` from each
    ``(colour, distance)`` in ``avoid``; the best of ``_COLOUR_ATTEMPTS`` draws if none satisfies all."""
    best, best_score = None, -math.inf
    for _ in range(_COLOUR_ATTEMPTS):
        colour = _muted_colour(rng)
        score = float(np.linalg.norm(colour - under)) - config.min_body_contrast
        for other, distance in avoid:
            score = min(score, float(np.linalg.norm(colour - other)) - distance)
        if score >= 0.0:
            return colour
        if score > best_score:
            best, best_score = colour, score
    assert best is not None
    return best


def _ink_colour(rng: np.random.Generator, class_index: int, config: SyntheticConfig) -> np.ndarray | None:
    """The head ink: the class colour jittered by up to ±15, or None (black / white chosen later
    against the body colour) without the colour cue."""
    if config.head_colour_cue:
        return np.clip(np.array(INK_COLOURS[class_index], dtype=np.float64) + rng.uniform(-15.0, 15.0, size=3), 0, 255)
    return None


def _neutral_ink(rng: np.random.Generator, body_colour: np.ndarray) -> np.ndarray:
    """Black or white ink (jittered by up to ±10), whichever contrasts more with the body colour."""
    luminance = float(body_colour @ np.array([0.299, 0.587, 0.114]))
    return np.full(3, 20.0 if luminance > 110.0 else 240.0) + rng.uniform(-10.0, 10.0, size=3)


def _paint(image: np.ndarray, sprite: _Sprite, body_colour: np.ndarray, ink: np.ndarray | None, outline: float) -> None:
    """Composite a placed sprite over ``image`` (in place), darkening its rim by ``outline``."""
    window = _window(sprite.offset, sprite.shape, image.shape[:2])
    if window is None:
        return
    canvas_y, canvas_x, sprite_y, sprite_x = window
    shade = sprite.field[..., 0]
    colour = shade[..., None] * body_colour
    if ink is not None:
        ink_mask = sprite.field[..., 1] > 0.5
        colour = np.where(ink_mask[..., None], ink, colour)
    rim = sprite.mask & ~_erode(sprite.mask)
    colour = np.where(rim[..., None], colour * (1.0 - outline), colour)
    mask = sprite.mask[sprite_y, sprite_x]
    region = image[canvas_y, canvas_x]
    region[mask] = colour[sprite_y, sprite_x][mask]


def _mean_under(image: np.ndarray, sprite: _Sprite) -> np.ndarray:
    """Mean colour (3,) of the image under a placed sprite's mask."""
    window = _window(sprite.offset, sprite.shape, image.shape[:2])
    if window is None:
        return image.reshape(-1, 3).mean(axis=0)
    canvas_y, canvas_x, sprite_y, sprite_x = window
    mask = sprite.mask[sprite_y, sprite_x]
    if not mask.any():
        return image.reshape(-1, 3).mean(axis=0)
    return image[canvas_y, canvas_x][mask].mean(axis=0)


# --------------------------------------------------------------------------- placement


def _inside(sprite: _Sprite, offset: tuple[int, int], canvas: tuple[int, int]) -> bool:
    return (
        0 <= offset[0] <= canvas[0] - sprite.shape[0]
        and 0 <= offset[1] <= canvas[1] - sprite.shape[1]
    )


def _dilate(mask: np.ndarray, pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A mask grown by ``pixels`` (square neighbourhood), padded; returns (mask, shift of its origin)."""
    if pixels == 0:
        return mask, (0, 0)
    padded = np.pad(mask, pixels)
    grown = ndimage.binary_dilation(padded, structure=np.ones((3, 3), dtype=bool), iterations=pixels)
    return grown, (-pixels, -pixels)


def _free_offset(
    rng: np.random.Generator, sprite: _Sprite, placed: list[_Sprite], canvas: tuple[int, int], gap: int
) -> tuple[int, int] | None:
    """A random offset keeping the sprite inside the canvas and ``gap`` pixels away from ``placed``."""
    if sprite.shape[0] > canvas[0] or sprite.shape[1] > canvas[1]:
        return None
    grown, shift = _dilate(sprite.mask, gap)
    for _ in range(_FREE_POSITIONS):
        offset = (
            int(rng.integers(0, canvas[0] - sprite.shape[0] + 1)),
            int(rng.integers(0, canvas[1] - sprite.shape[1] + 1)),
        )
        grown_offset = (offset[0] + shift[0], offset[1] + shift[1])
        if all(_overlap(grown, grown_offset, other.mask, other.offset) == 0 for other in placed):
            return offset
    return None


def _touching_offset(
    rng: np.random.Generator,
    sprite: _Sprite,
    partner: _Sprite,
    placed: list[_Sprite],
    canvas: tuple[int, int],
    config: SyntheticConfig,
) -> tuple[int, int] | None:
    """An offset where ``sprite`` touches ``partner`` (drawn over it) without hiding more than
    ``max_occluded_fraction`` of any placed instance or 10 % of its head, and ``min_gap`` away from the others."""
    centre = (partner.offset[0] + partner.anchor[0], partner.offset[1] + partner.anchor[1])
    reach = int(partner.shape[0] + partner.shape[1] + sprite.shape[0] + sprite.shape[1])
    grown, shift = _dilate(sprite.mask, config.min_gap)
    start = rng.uniform(0.0, 2.0 * math.pi)
    for turn in range(_TOUCH_DIRECTIONS):
        direction = start + 2.0 * math.pi * turn / _TOUCH_DIRECTIONS
        step_y, step_x = math.sin(direction), math.cos(direction)

        def offset_at(distance: int) -> tuple[int, int]:
            return (
                int(round(centre[0] + distance * step_y)) - sprite.anchor[0],
                int(round(centre[1] + distance * step_x)) - sprite.anchor[1],
            )

        if _overlap(sprite.mask, offset_at(0), partner.mask, partner.offset) == 0:
            continue
        low, high = 0, reach  # overlap at low, none at high
        while high - low > 1:
            middle = (low + high) // 2
            if _overlap(sprite.mask, offset_at(middle), partner.mask, partner.offset) > 0:
                low = middle
            else:
                high = middle
        distance = max(low - int(rng.integers(config.touch_overlap_range[0], config.touch_overlap_range[1] + 1)), 0)
        offset = offset_at(distance)
        if not _inside(sprite, offset, canvas):
            continue
        acceptable = True
        for other in placed:
            if other is partner:
                covered = _overlap(sprite.mask, offset, other.mask, other.offset)
                head_covered = _overlap(sprite.mask, offset, other.head, other.offset)
                if (
                    covered == 0
                    or covered > config.max_occluded_fraction * np.count_nonzero(other.mask)
                    or head_covered > 0.1 * np.count_nonzero(other.head)
                ):
                    acceptable = False
                    break
            elif _overlap(grown, (offset[0] + shift[0], offset[1] + shift[1]), other.mask, other.offset) > 0:
                acceptable = False
                break
        if acceptable:
            return offset
    return None


# --------------------------------------------------------------------------- rendering


def _void_band(instance_mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width / 2`` (Chebyshev) of a pixel with another instance label: (H, W) bool."""
    if width == 0:
        return np.zeros(instance_mask.shape, dtype=bool)
    size = width + 1
    high = ndimage.maximum_filter(instance_mask, size=size, mode="nearest")
    low = ndimage.minimum_filter(instance_mask, size=size, mode="nearest")
    return high != low


def _touching_pairs(instance_mask: np.ndarray, classes: list[int]) -> set[tuple[int, int]]:
    """Pairs (i < j) of same-class instance ids whose pixels are 4-adjacent in ``instance_mask``."""
    pairs: set[tuple[int, int]] = set()
    for first, second in (
        (instance_mask[:-1, :], instance_mask[1:, :]),
        (instance_mask[:, :-1], instance_mask[:, 1:]),
    ):
        differ = (first != second) & (first > 0) & (second > 0)
        for a, b in np.unique(np.stack([first[differ], second[differ]], axis=1), axis=0):
            a, b = int(a), int(b)
            if classes[a - 1] == classes[b - 1]:
                pairs.add((min(a, b), max(a, b)))
    return pairs


def render_image(config: SyntheticConfig, index: int) -> SyntheticSample:
    """Render image ``index`` (0-based over train then val) from ``default_rng([seed, index])``.

    The result depends on (config, index) only, never on which other images are rendered.
    """
    if not 0 <= index < config.num_images:
        raise DatasetError(f"{image_id(max(index, 0))}: image index {index} outside 0..{config.num_images - 1}")
    rng = np.random.default_rng([config.seed, index])
    height = int(rng.integers(config.image_size_range[0], config.image_size_range[1] + 1))
    width = int(rng.integers(config.image_size_range[0], config.image_size_range[1] + 1))
    canvas = (height, width)
    short_side = min(height, width)
    image = _background(rng, height, width, config.background_texture_strength)

    # Background clutter, drawn first (label 0): body look-alikes without heads, then small shapes.
    for _ in range(int(rng.integers(config.distractor_count_range[0], config.distractor_count_range[1] + 1))):
        sprite = _make_object(rng, config, short_side, None, size_scale=rng.uniform(0.6, 1.0))
        sprite.offset = (
            int(rng.integers(-sprite.shape[0] // 3, height - 2 * sprite.shape[0] // 3 + 1)),
            int(rng.integers(-sprite.shape[1] // 3, width - 2 * sprite.shape[1] // 3 + 1)),
        )
        _decorate(rng, sprite)
        colour = _pick_colour(rng, _mean_under(image, sprite), [], config)
        _paint(image, sprite, colour, None, config.outline_strength)
    for _ in range(int(rng.integers(config.speck_count_range[0], config.speck_count_range[1] + 1))):
        sprite = _speck(rng)
        sprite.offset = (int(rng.integers(-4, height - 4)), int(rng.integers(-4, width - 4)))
        _paint(image, sprite, _muted_colour(rng), None, config.outline_strength)

    # Instances, in drawing order (a later one occludes an earlier one it touches).
    wanted = int(rng.integers(config.objects_per_image[0], config.objects_per_image[1] + 1))
    placed: list[_Sprite] = []
    for number in range(wanted):
        for attempt in range(_PLACEMENT_ATTEMPTS):
            shrink = max(0.5, 0.95**attempt)  # crowded images get smaller objects
            touch = bool(placed) and rng.random() < config.touch_probability
            partner = placed[int(rng.integers(len(placed)))] if touch else None
            class_index = partner.class_index if partner is not None else int(rng.integers(config.num_classes))
            sprite = _make_object(rng, config, short_side, class_index, size_scale=shrink)
            if partner is not None:
                offset = _touching_offset(rng, sprite, partner, placed, canvas, config)
            else:
                offset = _free_offset(rng, sprite, placed, canvas, config.min_gap)
            if offset is None:
                continue
            sprite.offset = offset
            _decorate(rng, sprite)
            ink = _ink_colour(rng, class_index, config)
            avoid = [] if ink is None else [(ink, config.min_ink_contrast)]
            if partner is not None and partner.body_colour is not None:
                avoid.append((partner.body_colour, config.min_instance_colour_distance))
            sprite.body_colour = _pick_colour(rng, _mean_under(image, sprite), avoid, config)
            if ink is None:
                ink = _neutral_ink(rng, sprite.body_colour)
            _paint(image, sprite, sprite.body_colour, ink, config.outline_strength)
            placed.append(sprite)
            break
        else:
            if number == 0:
                raise DatasetError(
                    f"{image_id(index)}: could not place a single object in a {height}x{width} image; "
                    "lower object_size_range"
                )
            logger.debug("%s: dropped object %d (no free position)", image_id(index), number)

    if config.noise_std > 0:
        image = image + rng.normal(0.0, config.noise_std, size=image.shape)
    image_uint8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    instance_mask = np.zeros(canvas, dtype=np.uint8)
    part_mask = np.zeros(canvas, dtype=np.uint8)
    for number, sprite in enumerate(placed, start=1):
        window = _window(sprite.offset, sprite.shape, canvas)
        assert window is not None
        canvas_y, canvas_x, sprite_y, sprite_x = window
        mask = sprite.mask[sprite_y, sprite_x]
        instance_mask[canvas_y, canvas_x][mask] = number
        part_mask[canvas_y, canvas_x][mask] = np.where(sprite.head[sprite_y, sprite_x][mask], 2, 1)
    classes = [sprite.class_index for sprite in placed]
    class_lookup = np.array([0] + [class_index + 1 for class_index in classes], dtype=np.uint8)
    class_mask = class_lookup[instance_mask]

    pairs = _touching_pairs(instance_mask, classes)
    names = config.resolved_class_names
    objects = []
    for number, class_index in enumerate(classes, start=1):
        ys, xs = np.nonzero(instance_mask == number)
        objects.append(
            SyntheticObject(
                instance_id=number,
                class_index=class_index,
                class_name=names[class_index],
                bbox=(int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())),
                area=int(ys.size),
                head_area=int(np.count_nonzero(part_mask[ys, xs] == 2)),
                centroid=(float(ys.mean()), float(xs.mean())),
                touching=tuple(sorted({b if a == number else a for a, b in pairs if number in (a, b)})),
            )
        )

    void = _void_band(instance_mask, config.void_band_width)
    instance_mask[void] = VOID_LABEL
    class_mask[void] = VOID_LABEL
    return SyntheticSample(
        image_id=image_id(index),
        image=image_uint8,
        class_mask=class_mask,
        instance_mask=instance_mask,
        part_mask=part_mask,
        objects=tuple(objects),
    )


# --------------------------------------------------------------------------- writing


def annotation_xml(sample: SyntheticSample) -> str:
    """The VOC ``Annotations/<id>.xml`` text of a sample (bndbox 1-based inclusive, as in VOC)."""
    height, width = sample.image.shape[:2]
    lines = [
        "<annotation>",
        "\t<folder>synthetic</folder>",
        f"\t<filename>{sample.image_id}.jpg</filename>",
        "\t<source>",
        f"\t\t<database>{GENERATOR_NAME} v{GENERATOR_VERSION}</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>1</segmented>",
    ]
    for item in sample.objects:
        y_min, x_min, y_max, x_max = item.bbox
        lines += [
            "\t<object>",
            f"\t\t<name>{item.class_name}</name>",
            "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>",
            "\t\t<difficult>0</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x_min + 1}</xmin>",
            f"\t\t\t<ymin>{y_min + 1}</ymin>",
            f"\t\t\t<xmax>{x_max + 1}</xmax>",
            f"\t\t\t<ymax>{y_max + 1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def write_sample(root: str | os.PathLike[str], sample: SyntheticSample, config: SyntheticConfig) -> None:
    """Write one sample's JPEG, PNG masks and XML under a dataset ``root`` (each file atomically)."""
    root = Path(root)
    with atomic_path(root / "JPEGImages" / f"{sample.image_id}.jpg") as temporary:
        Image.fromarray(sample.image, mode="RGB").save(
            temporary, format="JPEG", quality=config.jpeg_quality, subsampling=0, optimize=False
        )
    write_indexed_png(root / "SegmentationClass" / f"{sample.image_id}.png", sample.class_mask)
    write_indexed_png(root / "SegmentationObject" / f"{sample.image_id}.png", sample.instance_mask)
    if config.write_part_masks:
        write_indexed_png(root / "SegmentationPart" / f"{sample.image_id}.png", sample.part_mask)
    write_text_atomic(root / "Annotations" / f"{sample.image_id}.xml", annotation_xml(sample))


def metadata(config: SyntheticConfig) -> dict[str, Any]:
    """The content of ``synthetic.json``: generator, version, full parameters, class names, split sizes."""
    return {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "parameters": config.model_dump(mode="json"),
        "class_names": list(config.resolved_class_names),
        "splits": {name: len(identifiers) for name, identifiers in split_ids(config).items()},
    }


def write_metadata(root: str | os.PathLike[str], config: SyntheticConfig) -> None:
    """Write ``classes.txt``, the ``ImageSets/Segmentation`` lists and, last, ``synthetic.json``."""
    root = Path(root)
    write_text_atomic(root / "classes.txt", "".join(f"{name}\n" for name in config.resolved_class_names))
    for name, identifiers in split_ids(config).items():
        write_text_atomic(root / "ImageSets" / "Segmentation" / f"{name}.txt", "".join(f"{i}\n" for i in identifiers))
    write_text_atomic(root / "synthetic.json", json.dumps(metadata(config), indent=2, sort_keys=True) + "\n")


def read_config(root: str | os.PathLike[str]) -> SyntheticConfig:
    """The configuration recorded in ``<root>/synthetic.json``.

    Raises :class:`DatasetError` if the file is missing, unreadable, from another generator
    version, or holds parameters that do not validate.
    """
    path = Path(root) / "synthetic.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: not a synthetic dataset (synthetic.json missing)") from None
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable ({error})") from error
    if not isinstance(record, dict) or record.get("generator_version") != GENERATOR_VERSION:
        version = record.get("generator_version") if isinstance(record, dict) else None
        raise DatasetError(f"{path}: generator version {version!r}, this code writes {GENERATOR_VERSION!r}")
    try:
        return SyntheticConfig.model_validate(record.get("parameters"))
    except ValidationError as error:
        raise DatasetError(f"{path}: parameters do not validate ({error})") from error


def _is_complete(root: Path, config: SyntheticConfig) -> bool:
    """Whether ``root`` holds this configuration's dataset with every file present."""
    try:
        if read_config(root) != config:
            return False
    except DatasetError:
        return False
    folders = [
        ("JPEGImages", "jpg"),
        ("SegmentationClass", "png"),
        ("SegmentationObject", "png"),
        ("Annotations", "xml"),
    ]
    if config.write_part_masks:
        folders.append(("SegmentationPart", "png"))
    required = [root / "classes.txt"] + [root / "ImageSets" / "Segmentation" / f"{name}.txt" for name in SPLITS]
    required += [
        root / folder / f"{identifier}.{suffix}" for identifier in image_ids(config) for folder, suffix in folders
    ]
    return all(path.is_file() for path in required)


def _make_readable(root: Path) -> None:
    """Give the dataset ordinary permissions (files 644, folders 755): temporary files start as 600."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def generate(config: SyntheticConfig, out_dir: str | os.PathLike[str], *, progress: bool = True) -> Path:
    """Write the whole dataset to ``out_dir`` and return it.

    The dataset is built in a temporary sibling directory and renamed into place, so ``out_dir``
    is either absent, the previous content, or complete. If ``out_dir`` already holds a complete
    dataset of the same generator version and parameters it is left untouched; a synthetic
    dataset of other parameters (or an incomplete one), or an empty directory, is replaced; any
    other existing path raises :class:`DatasetError` (nothing is deleted).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if _is_complete(out_dir, config):
            logger.info("%s: synthetic dataset with these parameters already complete", out_dir)
            return out_dir
        replaceable = out_dir.is_dir() and ((out_dir / "synthetic.json").is_file() or not any(out_dir.iterdir()))
        if not replaceable:
            raise DatasetError(f"{out_dir}: exists and is not a synthetic dataset; refusing to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".building", dir=out_dir.parent))
    try:
        indices = range(config.num_images)
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc=f"synthetic {out_dir.name}", unit="image")
        for index in indices:
            write_sample(building, render_image(config, index), config)
        write_metadata(building, config)
        _make_readable(building)
        if out_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, retired / out_dir.name)
            os.replace(building, out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(building, out_dir)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(building)
        raise
    logger.info("%s: wrote %d synthetic images", out_dir, config.num_images)
    return out_dir
