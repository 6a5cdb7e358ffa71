"""COCO 2014/2017 instance annotations (pycocotools), seen as a segmentation dataset.

Image ids are the image file stems as strings (``"000000000089"`` for ``000000000089.jpg``; COCO 2014
stems such as ``"COCO_val2014_000000000042"`` work the same). Class ids are contiguous and 0-based in
increasing COCO category-id order (COCO's 80 categories have ids 1..90 with gaps).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from irn_core.data.images import read_image
from irn_core.errors import DatasetError

logger = logging.getLogger(__name__)

#: Label value of void pixels (crowd regions) in semantic maps.
VOID_LABEL = 255


@contextlib.contextmanager
def quiet_pycocotools() -> Iterator[None]:
    """Silence pycocotools' NumPy 2 copy-keyword DeprecationWarning (raised inside its Cython decoder)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword")
        yield


class COCODataset:
    """COCO images under ``image_dir`` with the instance annotations of ``annotation_file``.

    ``coco``: the pycocotools ``COCO`` object (also what :func:`irn_core.evaluation.coco_mask_ap` takes).
    """

    def __init__(self, image_dir: str | os.PathLike[str], annotation_file: str | os.PathLike[str]) -> None:
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        if not self.annotation_file.is_file():
            raise DatasetError(f"{self.annotation_file}: COCO annotation file not found")
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                self.coco = COCO(str(self.annotation_file))
        except Exception as error:  # json errors, KeyError on a malformed file, ...
            raise DatasetError(f"{self.annotation_file}: unreadable COCO annotation file ({error!r})") from error
        logger.debug("%s", output.getvalue().strip())
        dataset = self.coco.dataset
        for key in ("images", "annotations", "categories"):
            if key not in dataset:
                raise DatasetError(f"{self.annotation_file}: COCO annotation file has no {key!r} list")
        categories = sorted(dataset["categories"], key=lambda category: category["id"])
        self._category_ids: list[int] = [int(category["id"]) for category in categories]
        self.class_names: list[str] = [str(category["name"]) for category in categories]
        if len(self.class_names) >= VOID_LABEL:
            raise DatasetError(f"{self.annotation_file}: {len(self.class_names)} categories do not fit a uint8 map")
        self._class_of_category: dict[int, int] = {
            category_id: index for index, category_id in enumerate(self._category_ids)
        }
        self._records: dict[str, dict] = {}
        for record in dataset["images"]:
            image_id = Path(str(record["file_name"])).stem
            if image_id in self._records:
                raise DatasetError(
                    f"{self.annotation_file}: image id {image_id} listed twice "
                    f"(COCO ids {self._records[image_id]['id']} and {record['id']})"
                )
            self._records[image_id] = record
        self._ids = sorted(self._records)
        for annotation in dataset["annotations"]:
            if int(annotation["category_id"]) not in self._class_of_category:
                raise DatasetError(
                    f"{self.annotation_file}: annotation {annotation.get('id')} names unknown category "
                    f"{annotation['category_id']}"
                )

    def __repr__(self) -> str:
        return f"COCODataset(image_dir={str(self.image_dir)!r}, annotation_file={str(self.annotation_file)!r})"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def category_id(self, class_id: int) -> int:
        """COCO category id of a 0-based contiguous class id."""
        if not 0 <= int(class_id) < len(self._category_ids):
            raise DatasetError(f"{self.annotation_file}: class id {class_id} outside 0..{self.num_classes - 1}")
        return self._category_ids[int(class_id)]

    def class_id(self, category_id: int) -> int:
        """0-based contiguous class id of a COCO category id."""
        try:
            return self._class_of_category[int(category_id)]
        except KeyError:
            raise DatasetError(f"{self.annotation_file}: unknown COCO category id {category_id}") from None

    def coco_image_id(self, image_id: str) -> int:
        """The integer COCO ``image_id`` of an image id (file stem)."""
        return int(self._record(image_id)["id"])

    def ids(self, split: str | None = None) -> list[str]:
        """All image ids of the annotation file, sorted. One file is one split: ``split`` must be None or "all"."""
        if split not in (None, "all"):
            raise DatasetError(
                f"{self.annotation_file}: a COCO annotation file holds one split; asked for {split!r} "
                "(pass None or 'all', and choose the split by annotation file)"
            )
        return list(self._ids)

    def image_path(self, image_id: str) -> Path:
        return self.image_dir / str(self._record(image_id)["file_name"])

    def image(self, image_id: str) -> np.ndarray:
        """``image``: (H, W, 3) uint8 RGB; a size differing from the annotation file's raises DatasetError."""
        image = read_image(self.image_path(image_id), image_id=image_id)
        expected = self.image_size(image_id)
        if image.shape[:2] != expected:
            raise DatasetError(
                f"{self.image_path(image_id)} (image id {image_id}): image size {image.shape[:2]} differs from "
                f"{expected} in {self.annotation_file}"
            )
        return image

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(height, width) as recorded in the annotation file."""
        record = self._record(image_id)
        return int(record["height"]), int(record["width"])

    def annotations(self, image_id: str, *, crowd: bool | None = False) -> list[dict]:
        """The image's annotations sorted by annotation id: non-crowd (default), crowd only (True) or all (None)."""
        coco_id = self.coco_image_id(image_id)
        annotations = sorted(self.coco.imgToAnns.get(coco_id, []), key=lambda annotation: annotation["id"])
        if crowd is None:
            return annotations
        return [annotation for annotation in annotations if bool(annotation.get("iscrowd", 0)) == crowd]

    def class_labels(self, image_id: str) -> np.ndarray:
        """Sorted distinct 0-based class ids of the image's non-crowd annotations: (K,) int64."""
        classes = {self._class_of_category[int(annotation["category_id"])] for annotation in self.annotations(image_id)}
        return np.array(sorted(classes), dtype=np.int64)

    def instance_masks(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Non-crowd instances in annotation-id order: ``masks`` (N, H, W) bool, ``class_ids`` (N,) int64."""
        height, width = self.image_size(image_id)
        annotations = self.annotations(image_id)
        masks = np.zeros((len(annotations), height, width), dtype=bool)
        class_ids = np.zeros(len(annotations), dtype=np.int64)
        for index, annotation in enumerate(annotations):
            masks[index] = self._mask(annotation, image_id, (height, width))
            class_ids[index] = self._class_of_category[int(annotation["category_id"])]
        return masks, class_ids

    def semantic_mask(self, image_id: str) -> np.ndarray:
        """Class map: (H, W) uint8, 0 background, k + 1 class k, 255 crowd regions not covered by an instance.

        Overlap rule: crowd regions are painted first (255); then the non-crowd instances in decreasing order
        of their pixel count (ties: annotation id), each over what is below it, so a smaller object lying
        on a larger one stays visible, and an annotated instance inside a crowd region keeps its class.
        """
        height, width = self.image_size(image_id)
        semantic = np.zeros((height, width), dtype=np.uint8)
        for annotation in self.annotations(image_id, crowd=True):
            semantic[self._mask(annotation, image_id, (height, width))] = VOID_LABEL
        masks, class_ids = self.instance_masks(image_id)
        areas = masks.sum(axis=(1, 2))
        # Stable sort on -area keeps annotation-id order among equal areas.
        for index in np.argsort(-areas, kind="stable"):
            semantic[masks[index]] = class_ids[index] + 1
        return semantic

    def _mask(self, annotation: dict, image_id: str, size: tuple[int, int]) -> np.ndarray:
        try:
            with quiet_pycocotools():
                mask = self.coco.annToMask(annotation)
        except Exception as error:  # malformed polygons or RLE
            raise DatasetError(
                f"{self.annotation_file} (image id {image_id}): annotation {annotation.get('id')} has an unreadable "
                f"segmentation ({error!r})"
            ) from error
        if mask.shape != size:
            raise DatasetError(
                f"{self.annotation_file} (image id {image_id}): annotation {annotation.get('id')} mask size "
                f"{mask.shape} differs from image size {size}"
            )
        return mask.astype(bool)

    def _record(self, image_id: str) -> dict:
        try:
            return self._records[image_id]
        except KeyError:
            raise DatasetError(f"{self.annotation_file}: image id {image_id} is not in the annotation file") from None
