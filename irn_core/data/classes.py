"""Class tables: the 20 PASCAL VOC foreground classes and plain-text class lists.

Class ids are 0-based foreground ids (``0`` = aeroplane for VOC); semantic label maps use
``0`` for background and ``k + 1`` for class ``k``.
"""

from __future__ import annotations

import os
from pathlib import Path

from irn_core.errors import DatasetError

#: The VOC 2012 foreground classes in the reference order (``voc12/make_cls_labels.py``).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def load_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Read a class table: one name per line, in 0-based class-id order.

    Surrounding whitespace and blank lines are ignored; lines starting with ``#`` are comments.
    A missing file, an empty table or a name listed twice raises :class:`DatasetError`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: class table not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: class table unreadable ({error})") from error
    names: list[str] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in names:
            raise DatasetError(f"{path}:{line_number}: class name {name!r} listed twice")
        names.append(name)
    if not names:
        raise DatasetError(f"{path}: class table is empty")
    return names
