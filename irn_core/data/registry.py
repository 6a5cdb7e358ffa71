"""The interface shared by the dataset readers, and a factory that opens one by name."""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from irn_core.errors import ConfigError


@runtime_checkable
class SegmentationDataset(Protocol):
    """What the pipeline needs from a dataset. Image ids are strings; class ids are 0-based foreground ids."""

    class_names: list[str]

    def ids(self, split: str) -> list[str]:
        """Image ids of a split."""
        ...

    def image(self, image_id: str) -> np.ndarray:
        """``image``: (H, W, 3) uint8 RGB."""
        ...

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(height, width)."""
        ...

    def class_labels(self, image_id: str) -> np.ndarray:
        """Sorted distinct class ids present: (K,) int64."""
        ...

    def semantic_mask(self, image_id: str) -> np.ndarray:
        """(H, W) uint8: 0 background, k + 1 class k, 255 void."""
        ...

    def instance_masks(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``masks`` (N, H, W) bool and ``class_ids`` (N,) int64."""
        ...


#: Dataset kinds known to :func:`open_dataset`.
DATASET_KINDS: tuple[str, ...] = ("voc12", "synthetic", "coco")


def open_dataset(kind: str, **options: Any) -> SegmentationDataset:
    """Open a dataset by kind.

    - ``"voc12"`` and ``"synthetic"`` (a VOC-layout folder written by the generator):
      ``root``, optional ``sbd_root`` and ``class_names`` → :class:`irn_core.data.voc.VOCDataset`.
    - ``"coco"``: ``image_dir`` and ``annotation_file`` (one split, ``all``), or ``splits`` (split name →
      (image folder, annotation file)) → :class:`irn_core.data.coco.COCODataset`.
    """
    if kind in ("voc12", "synthetic"):
        from irn_core.data.voc import VOCDataset

        allowed = {"root", "sbd_root", "class_names"}
        _check_options(kind, options, allowed, required={"root"})
        root: str | os.PathLike[str] = options.pop("root")
        return VOCDataset(root, **options)
    if kind == "coco":
        from irn_core.data.coco import COCODataset

        if "splits" in options:
            _check_options(kind, options, {"splits"}, required={"splits"})
            return COCODataset(splits=options["splits"])
        _check_options(kind, options, {"image_dir", "annotation_file"}, required={"image_dir", "annotation_file"})
        return COCODataset(options["image_dir"], options["annotation_file"])
    raise ConfigError(f"unknown dataset kind {kind!r} (known: {', '.join(DATASET_KINDS)})")


def _check_options(kind: str, options: dict[str, Any], allowed: set[str], *, required: set[str]) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(f"dataset kind {kind!r}: unknown options {sorted(unknown)} (allowed: {sorted(allowed)})")
    missing = required - set(options)
    if missing:
        raise ConfigError(f"dataset kind {kind!r}: missing options {sorted(missing)}")
