"""Reading photographs and palette label maps from disk, with errors that name the file.

Pixels are returned exactly as stored: no EXIF rotation (the reference reads with ``imageio``,
which ignores the orientation tag, and the masks are drawn on the stored pixel grid).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from irn_core.errors import DatasetError

#: Image modes whose pixel values are label indices (palette indices or plain 8-bit grey levels).
LABEL_MODES: frozenset[str] = frozenset({"P", "L"})


def _describe(path: Path, image_id: str | None) -> str:
    return f"{path} (image id {image_id})" if image_id is not None else str(path)


def _open(path: Path, image_id: str | None, kind: str) -> Image.Image:
    if not path.is_file():
        raise DatasetError(f"{_describe(path, image_id)}: {kind} file is missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
        raise DatasetError(f"{_describe(path, image_id)}: unreadable {kind} ({error})") from error


def _has_jpeg_end_marker(path: Path) -> bool:
    """True if the file ends with the JPEG end-of-image marker (trailing NUL padding allowed)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 4096))
        tail = handle.read().rstrip(b"\x00")
    return tail.endswith(b"\xff\xd9")


def _decode(image: Image.Image, path: Path, image_id: str | None, kind: str) -> None:
    """Decode all pixels; a truncated or corrupt file raises :class:`DatasetError`."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        problem = "truncated" if "truncated" in str(error).lower() else "corrupt"
        raise DatasetError(f"{_describe(path, image_id)}: {problem} {kind} ({error})") from error
    # Pillow refuses truncated files unless some code switched this global flag on; then check
    # the JPEG end marker ourselves so that a truncated photograph never loads silently.
    if ImageFile.LOAD_TRUNCATED_IMAGES and image.format == "JPEG" and not _has_jpeg_end_marker(path):
        raise DatasetError(f"{_describe(path, image_id)}: truncated {kind} (no JPEG end-of-image marker)")


def read_image(path: str | os.PathLike[str], *, image_id: str | None = None) -> np.ndarray:
    """Read a photograph as RGB.

    Returns ``image``: (H, W, 3) uint8, RGB. Grey-level, palette, CMYK, RGBA (alpha dropped) and
    16-bit grey images (high byte kept) are converted to 8-bit RGB. A missing, unreadable or truncated file raises
    :class:`DatasetError` naming the file, ``image_id`` and the problem.
    """
    path = Path(path)
    with _open(path, image_id, "image") as image:
        _decode(image, path, image_id, "image")
        if image.mode.startswith("I;16"):
            # 16-bit grey: keep the high byte (Pillow's own conversion would clip at 255).
            grey = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
            return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
        if image.mode in ("I", "F"):
            raise DatasetError(f"{_describe(path, image_id)}: unsupported image mode {image.mode!r} for a photograph")
        if image.mode != "RGB":
            image = image.convert("RGB")
        array = np.array(image, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DatasetError(f"{_describe(path, image_id)}: decoded to shape {array.shape}, expected (H, W, 3)")
    return np.ascontiguousarray(array)


def read_label_png(path: str | os.PathLike[str], *, image_id: str | None = None) -> np.ndarray:
    """Read a label map stored as palette indices (VOC ``SegmentationClass``/``SegmentationObject``).

    Returns ``labels``: (H, W) uint8, the stored indices (the palette colours are not used).
    Only palette ("P") and 8-bit grey ("L") images are accepted: an RGB rendering of a mask has lost
    its indices and raises :class:`DatasetError`, as do missing, unreadable and truncated files.
    """
    path = Path(path)
    with _open(path, image_id, "label map") as image:
        if image.mode not in LABEL_MODES:
            raise DatasetError(
                f"{_describe(path, image_id)}: label map has image mode {image.mode!r}; expected a palette ('P') "
                "or 8-bit grey ('L') PNG holding class/instance indices"
            )
        _decode(image, path, image_id, "label map")
        array = np.array(image, dtype=np.uint8)
    return np.ascontiguousarray(array)


def image_size(path: str | os.PathLike[str], *, image_id: str | None = None) -> tuple[int, int]:
    """(height, width) of an image file, read from its header without decoding the pixels."""
    path = Path(path)
    with _open(path, image_id, "image") as image:
        width, height = image.size
    return int(height), int(width)


def image_header(path: str | os.PathLike[str], *, image_id: str | None = None) -> tuple[tuple[int, int], str]:
    """((height, width), format) of an image file from its header, without decoding the pixels."""
    path = Path(path)
    with _open(path, image_id, "image") as image:
        width, height = image.size
        file_format = str(image.format)
    return (int(height), int(width)), file_format


PNG_END = b"IEND\xaeB`\x82"
"""The last 8 bytes of every complete PNG file (the IEND chunk's type and CRC)."""


def image_is_complete(path: str | os.PathLike[str], file_format: str) -> bool:
    """Whether a JPEG or PNG file ends as a complete one does (its end marker; other formats: True),
    read from the file's last bytes only: a truncated download or copy fails this without decoding."""
    path = Path(path)
    if file_format == "JPEG":
        return _has_jpeg_end_marker(path)
    if file_format == "PNG":
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - len(PNG_END)))
            return handle.read() == PNG_END
    return True
