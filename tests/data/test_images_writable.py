"""Readers hand out writable arrays (C extensions such as pydensecrf refuse read-only buffers)."""

from __future__ import annotations

from pathlib import Path

from irn_core.data.images import read_image, read_label_png


def test_images_and_label_maps_are_writable(real_samples: Path) -> None:
    image = read_image(real_samples / "voc" / "JPEGImages" / "2007_000063.jpg")
    labels = read_label_png(real_samples / "voc" / "SegmentationClass" / "2007_000063.png")
    assert image.flags.writeable and image.flags.c_contiguous
    assert labels.flags.writeable
