"""COCO 2014/2017 instance annotations (pycocotools), seen as a segmentation dataset.

Image ids are the image file stems as strings (``"000000000089"`` for ``000000000089.jpg``; COCO 2014
stems such as ``"COCO_val2014_000000000042"`` work the same). Class ids are contiguous and 0-based in
increasing COCO category-id order (COCO's 80 categories have ids 1..90 with gaps).

One annotation file is one split (``"all"``); a dataset with train and val (COCO's ``train2017`` and
``val2017``, or the synthetic set written by ``irn export --what coco --ground-truth``) is opened with one
(image folder, annotation file) pair per split.

A file whose annotations carry only ``category_id`` (no ``segmentation``) holds image-level labels only
(your own photos): :meth:`COCODataset.class_labels` reads them; the masks (:meth:`COCODataset.instance_masks`,
:meth:`COCODataset.semantic_mask`) raise :class:`DatasetError` naming the file, image and annotation.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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


@dataclass
class _Part:
    """One annotation file and its image folder (one split)."""

    split: str
    image_dir: Path
    annotation_file: Path
    coco: COCO


def _load_part(split: str, image_dir: str | os.PathLike[str], annotation_file: str | os.PathLike[str]) -> _Part:
    annotation_file = Path(annotation_file)
    if not annotation_file.is_file():
        raise DatasetError(f"{annotation_file}: COCO annotation file not found")
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            coco = COCO(str(annotation_file))
    except Exception as error:  # json errors, KeyError on a malformed file, ...
        raise DatasetError(f"{annotation_file}: unreadable COCO annotation file ({error!r})") from error
    logger.debug("%s", output.getvalue().strip())
    for key in ("images", "annotations", "categories"):
        if key not in coco.dataset:
            raise DatasetError(f"{annotation_file}: COCO annotation file has no {key!r} list")
    return _Part(split, Path(image_dir), annotation_file, coco)


class COCODataset:
    """COCO images and instance annotations: one annotation file (``image_dir``, ``annotation_file``; its
    one split is ``"all"``), or one file per split (``splits``: split name -> (image folder, annotation
    file), e.g. ``{"train": ("train2017", "instances_train2017.json"), "val": ...}``).

    With several files, every file must list the same categories, and an image id (file stem) may appear
    in one file only. ``coco``: the pycocotools ``COCO`` object of a single file (what
    :func:`irn_core.evaluation.coco_mask_ap` takes); :meth:`ground_truth` gives that of a split.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike[str] | None = None,
        annotation_file: str | os.PathLike[str] | None = None,
        *,
        splits: Mapping[str, tuple[str | os.PathLike[str], str | os.PathLike[str]]] | None = None,
    ) -> None:
        if (annotation_file is None) == (splits is None):
            raise DatasetError("COCODataset takes either (image_dir, annotation_file) or splits, not both or neither")
        if splits is not None:
            if not splits:
                raise DatasetError("COCODataset: splits is empty")
            self._parts = [_load_part(name, folder, file) for name, (folder, file) in splits.items()]
        else:
            if image_dir is None:
                raise DatasetError(f"{annotation_file}: COCODataset needs the image folder")
            self._parts = [_load_part("all", image_dir, annotation_file)]
        self._single = splits is None
        self._merged: COCO | None = None
        first = self._parts[0]
        self.image_dir = first.image_dir
        self.annotation_file = first.annotation_file
        categories = sorted(first.coco.dataset["categories"], key=lambda category: category["id"])
        table = [(int(category["id"]), str(category["name"])) for category in categories]
        for part in self._parts[1:]:
            other = sorted(part.coco.dataset["categories"], key=lambda category: category["id"])
            if [(int(category["id"]), str(category["name"])) for category in other] != table:
                raise DatasetError(
                    f"{part.annotation_file}: categories differ from those of {first.annotation_file} "
                    "(every split must list the same categories)"
                )
        self._category_ids: list[int] = [category_id for category_id, _ in table]
        self.class_names: list[str] = [name for _, name in table]
        if len(self.class_names) >= VOID_LABEL:
            raise DatasetError(f"{self.annotation_file}: {len(self.class_names)} categories do not fit a uint8 map")
        self._class_of_category: dict[int, int] = {
            category_id: index for index, category_id in enumerate(self._category_ids)
        }
        self._records: dict[str, dict] = {}
        self._part_of: dict[str, _Part] = {}
        self._split_ids: dict[str, list[str]] = {}
        for part in self._parts:
            stems = []
            for record in part.coco.dataset["images"]:
                image_id = Path(str(record["file_name"])).stem
                if image_id in self._records:
                    earlier = self._part_of[image_id]
                    where = "" if earlier is part else f" and in {earlier.annotation_file}"
                    raise DatasetError(
                        f"{part.annotation_file}: image id {image_id} listed twice{where} "
                        f"(COCO ids {self._records[image_id]['id']} and {record['id']})"
                    )
                self._records[image_id] = record
                self._part_of[image_id] = part
                stems.append(image_id)
            self._split_ids[part.split] = sorted(stems)
            for annotation in part.coco.dataset["annotations"]:
                if int(annotation["category_id"]) not in self._class_of_category:
                    raise DatasetError(
                        f"{part.annotation_file}: annotation {annotation.get('id')} names unknown category "
                        f"{annotation['category_id']}"
                    )
        self._ids = sorted(self._records)

    @property
    def coco(self) -> COCO:
        """The pycocotools ``COCO`` object of the annotation file (a dataset of one file only)."""
        if len(self._parts) > 1:
            raise DatasetError(
                f"{self!r} has one annotation file per split: use ground_truth(split) for a split's COCO object"
            )
        return self._parts[0].coco

    def ground_truth(self, split: str | None = None) -> COCO:
        """The pycocotools ``COCO`` object of ``split``'s annotation file (None or "all": the only file, or,
        with one file per split and no split named "all", every file merged: :meth:`merged_ground_truth`)."""
        if split in (None, "all") and len(self._parts) == 1:
            return self._parts[0].coco
        for part in self._parts:
            if part.split == split:
                return part.coco
        if split in (None, "all"):
            return self.merged_ground_truth()
        raise DatasetError(f"{self!r}: no split {split!r} (splits: {', '.join(self.splits)})")

    def merged_ground_truth(self) -> COCO:
        """One pycocotools ``COCO`` object holding the images and annotations of every split's file (the
        ground truth of ``ids("all")``, e.g. a run whose pseudo labels cover train and val). The files must
        not share a COCO image id or annotation id (true of the train/val files cut from one file, as
        ``benchmarks/real_photos/build_set.py --val-fraction`` writes them); a shared id raises DatasetError."""
        if self._merged is None:
            dataset: dict[str, list] = {"images": [], "annotations": [], "categories": []}
            owner: dict[tuple[str, int], Path] = {}
            for part in self._parts:
                for key, records in (("images", part.coco.dataset["images"]),
                                     ("annotations", part.coco.dataset["annotations"])):
                    for record in records:
                        earlier = owner.setdefault((key, int(record["id"])), part.annotation_file)
                        if earlier != part.annotation_file:
                            raise DatasetError(
                                f"{part.annotation_file}: {key[:-1]} id {record['id']} is also in {earlier}; "
                                "the splits cannot be merged into one ground truth"
                            )
                    dataset[key].extend(records)
            dataset["categories"] = list(self._parts[0].coco.dataset["categories"])
            merged = COCO()
            merged.dataset = dataset
            with contextlib.redirect_stdout(io.StringIO()):
                merged.createIndex()
            self._merged = merged
        return self._merged

    @property
    def splits(self) -> list[str]:
        """Split names: ``["all"]`` for one annotation file, else the keys of ``splits``."""
        return [part.split for part in self._parts]

    def __repr__(self) -> str:
        if self._single:
            return f"COCODataset(image_dir={str(self.image_dir)!r}, annotation_file={str(self.annotation_file)!r})"
        splits = {part.split: (str(part.image_dir), str(part.annotation_file)) for part in self._parts}
        return f"COCODataset(splits={splits!r})"

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
        """Image ids of ``split``, sorted. One annotation file is one split: ``split`` must be None or "all".
        With one file per split: a split's ids; None or "all" (unless a split has that name): every id."""
        if split in self._split_ids and not self._single:
            return list(self._split_ids[split])
        if split not in (None, "all"):
            if self._single:
                raise DatasetError(
                    f"{self.annotation_file}: a COCO annotation file holds one split; asked for {split!r} "
                    "(pass None or 'all', and choose the split by annotation file)"
                )
            raise DatasetError(f"{self!r}: no split {split!r} (splits: {', '.join(self.splits)})")
        return list(self._ids)

    def coco_file_name(self, image_id: str) -> str:
        """The image's ``file_name`` in its annotation file (relative to its image folder)."""
        return str(self._record(image_id)["file_name"])

    def image_path(self, image_id: str) -> Path:
        return self._part_of[image_id].image_dir / self.coco_file_name(image_id)

    def image(self, image_id: str) -> np.ndarray:
        """``image``: (H, W, 3) uint8 RGB; a size differing from the annotation file's raises DatasetError."""
        image = read_image(self.image_path(image_id), image_id=image_id)
        expected = self.image_size(image_id)
        if image.shape[:2] != expected:
            raise DatasetError(
                f"{self.image_path(image_id)} (image id {image_id}): image size {image.shape[:2]} differs from "
                f"{expected} in {self._part_of[image_id].annotation_file}"
            )
        return image

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(height, width) as recorded in the annotation file."""
        record = self._record(image_id)
        return int(record["height"]), int(record["width"])

    def annotations(self, image_id: str, *, crowd: bool | None = False) -> list[dict]:
        """The image's annotations sorted by annotation id: non-crowd (default), crowd only (True) or all (None)."""
        coco_id = self.coco_image_id(image_id)
        coco = self._part_of[image_id].coco
        annotations = sorted(coco.imgToAnns.get(coco_id, []), key=lambda annotation: annotation["id"])
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

    def require_segmentation(self, image_id: str) -> None:
        """Raise :class:`DatasetError` (naming the file, the image and the annotation) when an annotation of
        the image has no ``segmentation``: a file of image-level labels only (``category_id`` per
        annotation) holds no ground truth to evaluate against (``evaluation.ground_truth: false``)."""
        for annotation in self.annotations(image_id, crowd=None):
            if not annotation.get("segmentation"):
                raise DatasetError(
                    f"{self._part_of[image_id].annotation_file} (image id {image_id}): annotation "
                    f"{annotation.get('id')} has no segmentation (image-level labels only); set "
                    "evaluation.ground_truth: false to run without ground truth"
                )

    def _mask(self, annotation: dict, image_id: str, size: tuple[int, int]) -> np.ndarray:
        source = self._part_of[image_id]
        if not annotation.get("segmentation"):
            self.require_segmentation(image_id)
        try:
            with quiet_pycocotools():
                mask = source.coco.annToMask(annotation)
        except Exception as error:  # malformed polygons or RLE
            raise DatasetError(
                f"{source.annotation_file} (image id {image_id}): annotation {annotation.get('id')} has an unreadable "
                f"segmentation ({error!r})"
            ) from error
        if mask.shape != size:
            raise DatasetError(
                f"{source.annotation_file} (image id {image_id}): annotation {annotation.get('id')} mask size "
                f"{mask.shape} differs from image size {size}"
            )
        return mask.astype(bool)

    def _record(self, image_id: str) -> dict:
        try:
            return self._records[image_id]
        except KeyError:
            raise DatasetError(f"{self.annotation_file}: image id {image_id} is not in the annotation file") from None
