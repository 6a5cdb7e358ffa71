"""Image and label-map readers on real files and on generated broken ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from irn_core.data.images import image_size, read_image, read_label_png
from irn_core.data.palette import write_indexed_png
from irn_core.errors import DatasetError


@pytest.fixture()
def voc_jpeg(real_samples: Path) -> Path:
    return real_samples / "voc" / "JPEGImages" / "2007_000063.jpg"


def test_real_jpeg_reads_as_rgb_uint8(voc_jpeg: Path) -> None:
    image = read_image(voc_jpeg, image_id="2007_000063")
    assert image.shape == (375, 500, 3) and image.dtype == np.uint8
    assert image_size(voc_jpeg) == (375, 500)
    # Same pixels as a direct Pillow decode.
    np.testing.assert_array_equal(image, np.asarray(Image.open(voc_jpeg).convert("RGB")))


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P"])
def test_other_modes_are_converted_to_rgb(tmp_path: Path, mode: str) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:, :3] = (200, 10, 10)
    source = Image.fromarray(rgb)
    if mode == "L":
        converted = source.convert("L")
    elif mode == "P":
        converted = source.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    else:
        converted = source.convert(mode)
    path = tmp_path / ("image.jpg" if mode in ("L", "CMYK") else "image.png")
    converted.save(path)
    image = read_image(path)
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8
    if mode == "L":
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    if mode in ("RGBA", "P"):
        np.testing.assert_array_equal(image, rgb)


def test_sixteen_bit_grey_keeps_high_byte(tmp_path: Path) -> None:
    values = np.array([[0, 256, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    image = read_image(path)
    np.testing.assert_array_equal(image[..., 0], [[0, 1, 255]])


def test_missing_image_names_file_and_id(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nothing\.jpg \(image id x_1\): image file is missing"):
        read_image(tmp_path / "nothing.jpg", image_id="x_1")
    with pytest.raises(DatasetError, match="missing"):
        image_size(tmp_path / "nothing.jpg")


@pytest.mark.parametrize("cut", [2, 500, 50_000])
def test_truncated_jpeg_raises(tmp_path: Path, voc_jpeg: Path, cut: int) -> None:
    data = voc_jpeg.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) - cut])
    with pytest.raises(DatasetError, match=r"cut\.jpg \(image id cut\): truncated image"):
        read_image(path, image_id="cut")


def test_truncated_jpeg_raises_even_if_pillow_is_told_to_load_truncated_files(
    tmp_path: Path, voc_jpeg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = voc_jpeg.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:-2000])
    with pytest.raises(DatasetError, match="truncated"):
        read_image(path, image_id="cut")
    # A complete file still loads under that flag.
    assert read_image(voc_jpeg).shape == (375, 500, 3)


def test_garbage_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"this is not an image at all")
    with pytest.raises(DatasetError, match=r"garbage\.jpg \(image id g\): unreadable image"):
        read_image(path, image_id="g")


def test_label_png_palette_and_grey(tmp_path: Path, real_samples: Path) -> None:
    labels = np.array([[0, 1, 255], [20, 3, 0]], dtype=np.uint8)
    write_indexed_png(tmp_path / "palette.png", labels)
    np.testing.assert_array_equal(read_label_png(tmp_path / "palette.png"), labels)
    Image.fromarray(labels, mode="L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "grey.png"), labels)
    real = read_label_png(real_samples / "voc" / "SegmentationClass" / "2007_000063.png")
    assert real.shape == (375, 500)
    assert set(np.unique(real).tolist()) == {0, 9, 12, 255}


def test_label_png_rejects_rgb_rendering(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    with pytest.raises(DatasetError, match=r"colour\.png \(image id c\): label map has image mode 'RGB'"):
        read_label_png(tmp_path / "colour.png", image_id="c")


def test_truncated_label_png_raises(tmp_path: Path, real_samples: Path) -> None:
    data = (real_samples / "voc" / "SegmentationClass" / "2007_000063.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut\.png"):
        read_label_png(path)
