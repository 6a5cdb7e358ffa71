"""PASCAL VOC 2012 devkit reader, with the SBD augmentation (``train_aug``).

Layout read under ``root`` (the ``VOC2012`` folder of the devkit, or the synthetic generator's output)::

    JPEGImages/<id>.jpg                 photographs
    Annotations/<id>.xml                object names (image-level labels)
    SegmentationClass/<id>.png          palette PNG: 0 background, k + 1 class k, 255 void
    SegmentationObject/<id>.png         palette PNG: 1..N instance ids, 0 background, 255 void
    SegmentationClassAug/<id>.png       optional: the SBD-augmented class maps (10,582 + 1,449 files)
    ImageSets/Segmentation/<split>.txt  one id per line (train, val, trainval, ...)
    classes.txt                         optional: class names, one per line (the synthetic generator)

and under ``sbd_root`` (the ``dataset`` folder of SBD's ``benchmark_RELEASE``; the release folder itself
is accepted too)::

    cls/<id>.mat    GTcls.Segmentation: (H, W) 0 background, k + 1 class k (no void)
    inst/<id>.mat   GTinst.Segmentation: (H, W) 0 background, i instance i; GTinst.Categories: class + 1 of each
    train.txt, val.txt

Where a datum has several possible sources, the VOC annotation wins: image-level labels come from the
XML (as the reference's ``make_cls_labels.py``), else from the class map; class maps from
``SegmentationClass``, else ``SegmentationClassAug``, else SBD ``cls``; instances from
``SegmentationObject`` + ``SegmentationClass`` (as chainercv's ``VOCInstanceSegmentationDataset``),
else SBD ``inst``.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.io

from irn_core.data.classes import VOC_CLASSES, load_class_names
from irn_core.data.images import image_size as read_image_size
from irn_core.data.images import read_image, read_label_png
from irn_core.errors import DatasetError

logger = logging.getLogger(__name__)

#: Label value of void pixels in VOC label maps.
VOID_LABEL = 255
#: Name of the split computed from VOC and SBD lists.
TRAIN_AUG = "train_aug"


def read_id_list(path: str | os.PathLike[str]) -> list[str]:
    """Read a split list: one image id per line, blank lines skipped, order kept.

    A missing file, a line holding more than one token, or an id listed twice raises
    :class:`DatasetError` naming the file, the id and the line numbers.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: id list not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: id list unreadable ({error})") from error
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) > 1:
            raise DatasetError(f"{path}:{line_number}: expected one image id per line, got {line.strip()!r}")
        image_id = tokens[0]
        if image_id in first_line:
            raise DatasetError(
                f"{path}:{line_number}: image id {image_id} listed twice (first on line {first_line[image_id]})"
            )
        first_line[image_id] = line_number
        ids.append(image_id)
    return ids


def label_values(mask: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a uint8 label map ``mask`` (H, W): (K,) uint8, as ``np.unique``
    gives them, counted with one ``bincount`` (about ten times faster on a VOC-sized map)."""
    return np.flatnonzero(np.bincount(mask.ravel(), minlength=256)).astype(np.uint8)


def _load_mat_struct(path: Path, image_id: str, variable: str) -> object:
    try:
        content = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise DatasetError(f"{path} (image id {image_id}): SBD file is missing") from None
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError, ... on broken files
        raise DatasetError(f"{path} (image id {image_id}): unreadable SBD .mat file ({error})") from error
    if variable not in content:
        raise DatasetError(f"{path} (image id {image_id}): SBD .mat file has no variable {variable!r}")
    return content[variable]


def _struct_field(struct: object, field: str, path: Path, image_id: str) -> np.ndarray:
    if not hasattr(struct, field):
        raise DatasetError(f"{path} (image id {image_id}): SBD struct has no field {field!r}")
    return np.asarray(getattr(struct, field))


class VOCDataset:
    """PASCAL VOC 2012 (+ SBD) segmentation dataset. Image ids are strings such as ``"2007_000032"``.

    ``class_names``: the foreground classes in 0-based id order; by default ``root/classes.txt`` when that
    file exists, else :data:`VOC_CLASSES`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        sbd_root: str | os.PathLike[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: VOC root folder does not exist")
        self.sbd_root: Path | None = None
        if sbd_root is not None:
            sbd_root = Path(sbd_root)
            if (sbd_root / "dataset" / "cls").is_dir() and not (sbd_root / "cls").is_dir():
                sbd_root = sbd_root / "dataset"
            if not sbd_root.is_dir():
                raise DatasetError(f"{sbd_root}: SBD root folder does not exist")
            self.sbd_root = sbd_root
        if class_names is None:
            table = self.root / "classes.txt"
            class_names = load_class_names(table) if table.is_file() else list(VOC_CLASSES)
        self.class_names: list[str] = list(class_names)
        if len(set(self.class_names)) != len(self.class_names) or not self.class_names:
            raise DatasetError(f"{self.root}: class names must be distinct and non-empty, got {self.class_names}")
        if len(self.class_names) >= VOID_LABEL:
            raise DatasetError(f"{self.root}: at most {VOID_LABEL - 1} classes fit in a uint8 label map")
        self._class_index = {name: index for index, name in enumerate(self.class_names)}
        self._lists: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"VOCDataset(root={str(self.root)!r}, sbd_root={str(self.sbd_root) if self.sbd_root else None!r})"

    @property
    def num_classes(self) -> int:
        """Number of foreground classes."""
        return len(self.class_names)

    # ------------------------------------------------------------------ paths
    @property
    def split_dir(self) -> Path:
        return self.root / "ImageSets" / "Segmentation"

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def annotation_path(self, image_id: str) -> Path:
        return self.root / "Annotations" / f"{image_id}.xml"

    def class_mask_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def object_mask_path(self, image_id: str) -> Path:
        return self.root / "SegmentationObject" / f"{image_id}.png"

    def augmented_class_mask_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClassAug" / f"{image_id}.png"

    def sbd_class_path(self, image_id: str) -> Path | None:
        return None if self.sbd_root is None else self.sbd_root / "cls" / f"{image_id}.mat"

    def sbd_instance_path(self, image_id: str) -> Path | None:
        return None if self.sbd_root is None else self.sbd_root / "inst" / f"{image_id}.mat"

    # ------------------------------------------------------------------ splits
    def available_splits(self) -> list[str]:
        """Names of the split lists under ``ImageSets/Segmentation`` plus ``train_aug`` when computable."""
        names = {path.stem for path in self.split_dir.glob("*.txt")} if self.split_dir.is_dir() else set()
        if self._augmentation_ids_available():
            names.add(TRAIN_AUG)
        return sorted(names)

    def ids(self, split: str) -> list[str]:
        """Image ids of a split, in list order (``train_aug``: sorted).

        ``train``, ``val``, ``trainval`` and any other ``ImageSets/Segmentation/<split>.txt``. ``train_aug`` is
        computed as (SBD train ∪ SBD val ∪ VOC train) − VOC val, with SBD's ``train.txt``/``val.txt`` when
        ``sbd_root`` is given, else the ids of ``SegmentationClassAug/*.png`` (which hold train_aug ∪ val);
        only when neither exists is ``ImageSets/Segmentation/train_aug.txt`` read. On the full datasets this
        gives the reference's 10,582 ids.
        """
        if split not in self._lists:
            if split == TRAIN_AUG:
                self._lists[split] = self._train_aug_ids()
            else:
                path = self.split_dir / f"{split}.txt"
                if not path.is_file():
                    raise DatasetError(
                        f"{path}: split {split!r} not found (available: {', '.join(self.available_splits()) or 'none'})"
                    )
                self._lists[split] = read_id_list(path)
        return list(self._lists[split])

    def _augmentation_ids_available(self) -> bool:
        if self.sbd_root is not None and (self.sbd_root / "train.txt").is_file():
            return True
        return (self.root / "SegmentationClassAug").is_dir()

    def _augmentation_ids(self) -> tuple[set[str], str] | None:
        if self.sbd_root is not None and (self.sbd_root / "train.txt").is_file():
            ids = set(read_id_list(self.sbd_root / "train.txt"))
            val_path = self.sbd_root / "val.txt"
            if val_path.is_file():
                ids |= set(read_id_list(val_path))
            return ids, f"SBD lists in {self.sbd_root}"
        aug_dir = self.root / "SegmentationClassAug"
        if aug_dir.is_dir():
            return {path.stem for path in aug_dir.glob("*.png")}, str(aug_dir)
        return None

    def _train_aug_ids(self) -> list[str]:
        list_path = self.split_dir / f"{TRAIN_AUG}.txt"
        augmentation = self._augmentation_ids()
        if augmentation is None:
            if list_path.is_file():
                return read_id_list(list_path)
            raise DatasetError(
                f"{self.root}: cannot form split {TRAIN_AUG!r}: no SBD root with train.txt, no SegmentationClassAug "
                f"folder and no {list_path}"
            )
        augmentation_ids, source = augmentation
        train = set(self.ids("train"))
        val = set(self.ids("val"))
        ids = sorted((augmentation_ids | train) - val)
        logger.info("train_aug: %d ids from %s and the VOC train/val lists", len(ids), source)
        if list_path.is_file() and sorted(read_id_list(list_path)) != ids:
            logger.warning("%s differs from train_aug computed from %s; using the computed ids", list_path, source)
        return ids

    # ------------------------------------------------------------------ images
    def image(self, image_id: str) -> np.ndarray:
        """``image``: (H, W, 3) uint8 RGB."""
        return read_image(self.image_path(image_id), image_id=image_id)

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(height, width) from the JPEG header."""
        return read_image_size(self.image_path(image_id), image_id=image_id)

    # ------------------------------------------------------------------ labels
    def class_labels(self, image_id: str) -> np.ndarray:
        """Sorted distinct 0-based foreground class ids present in the image: (K,) int64.

        From ``Annotations/<id>.xml`` when present (every ``object``, difficult or not, as the reference's
        ``make_cls_labels.py``; part names such as "head" are not objects), else from the class map
        (:meth:`semantic_mask`).
        """
        xml_path = self.annotation_path(image_id)
        if xml_path.is_file():
            return self._labels_from_xml(xml_path, image_id)
        try:
            mask = self.semantic_mask(image_id, check_size=False)
        except DatasetError as error:
            raise DatasetError(
                f"{xml_path} (image id {image_id}): no XML annotation, and no class map to take labels from ({error})"
            ) from error
        values = label_values(mask)
        values = values[(values != 0) & (values != VOID_LABEL)]
        return (values.astype(np.int64) - 1)

    def _labels_from_xml(self, path: Path, image_id: str) -> np.ndarray:
        try:
            tree = ElementTree.parse(path)
        except (ElementTree.ParseError, OSError) as error:
            raise DatasetError(f"{path} (image id {image_id}): unreadable XML annotation ({error})") from error
        labels: set[int] = set()
        for number, element in enumerate(tree.getroot().iter("object"), start=1):
            name_element = element.find("name")
            name = (name_element.text or "").strip() if name_element is not None else ""
            if not name:
                raise DatasetError(f"{path} (image id {image_id}): object {number} has no name")
            if name not in self._class_index:
                raise DatasetError(
                    f"{path} (image id {image_id}): object {number} names unknown class {name!r} "
                    f"(known: {', '.join(self.class_names)})"
                )
            labels.add(self._class_index[name])
        return np.array(sorted(labels), dtype=np.int64)

    def semantic_mask_source(self, image_id: str) -> Path | None:
        """The file :meth:`semantic_mask` would read, or None if the image has no class map."""
        candidates: list[Path | None] = [
            self.class_mask_path(image_id),
            self.augmented_class_mask_path(image_id),
            self.sbd_class_path(image_id),
        ]
        for candidate in candidates:
            if candidate is not None and candidate.is_file():
                return candidate
        return None

    def semantic_mask(self, image_id: str, *, check_size: bool = True) -> np.ndarray:
        """Class map: (H, W) uint8, 0 background, k + 1 class k, 255 void.

        From ``SegmentationClass``, else ``SegmentationClassAug``, else SBD ``cls/<id>.mat``. A map whose
        size differs from the image (checked from the JPEG header unless ``check_size=False``) or holding a
        value that is no class raises :class:`DatasetError`.
        """
        source = self.semantic_mask_source(image_id)
        if source is None:
            looked = [str(self.class_mask_path(image_id)), str(self.augmented_class_mask_path(image_id))]
            if self.sbd_root is not None:
                looked.append(str(self.sbd_class_path(image_id)))
            raise DatasetError(f"image id {image_id}: no class map found (looked for {', '.join(looked)})")
        if source.suffix == ".mat":
            struct = _load_mat_struct(source, image_id, "GTcls")
            mask = _struct_field(struct, "Segmentation", source, image_id)
            mask = self._as_label_map(mask, source, image_id)
        else:
            mask = read_label_png(source, image_id=image_id)
        self._check_class_values(mask, source, image_id)
        if check_size:
            self._check_size(mask, source, image_id)
        return mask

    def instance_masks(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth instances: ``masks`` (N, H, W) bool and ``class_ids`` (N,) int64 (0-based).

        VOC: one instance per value of ``SegmentationObject`` other than 0 and 255, in increasing id order; its
        class is the ``SegmentationClass`` value under it minus 1 (chainercv's rule: the smallest value if the
        instance covers several classes, with void pixels left out). SBD (when the image has no
        ``SegmentationObject``): one instance per non-zero value i of ``GTinst.Segmentation``, class
        ``GTinst.Categories[i - 1] - 1``.
        """
        object_path = self.object_mask_path(image_id)
        if object_path.is_file():
            class_path = self.class_mask_path(image_id)
            if not class_path.is_file():
                raise DatasetError(
                    f"{class_path} (image id {image_id}): SegmentationObject exists but its "
                    "SegmentationClass is missing"
                )
            objects = read_label_png(object_path, image_id=image_id)
            self._check_size(objects, object_path, image_id)
            classes = read_label_png(class_path, image_id=image_id)
            self._check_size(classes, class_path, image_id)
            self._check_class_values(classes, class_path, image_id)
            return self._voc_instances(objects, classes, object_path, image_id)
        instance_path = self.sbd_instance_path(image_id)
        if instance_path is not None and instance_path.is_file():
            return self._sbd_instances(instance_path, image_id)
        looked = [str(object_path)] + ([str(instance_path)] if instance_path is not None else [])
        raise DatasetError(f"image id {image_id}: no instance annotation found (looked for {', '.join(looked)})")

    def _voc_instances(
        self, objects: np.ndarray, classes: np.ndarray, object_path: Path, image_id: str
    ) -> tuple[np.ndarray, np.ndarray]:
        instance_values = np.unique(objects)
        instance_values = instance_values[(instance_values != 0) & (instance_values != VOID_LABEL)]
        masks = []
        class_ids = []
        for value in instance_values:
            mask = objects == value
            covered = np.unique(classes[mask])
            covered = covered[covered != VOID_LABEL]
            if covered.size == 0 or covered[0] == 0:
                raise DatasetError(
                    f"{object_path} (image id {image_id}): instance {int(value)} covers "
                    f"{'only void' if covered.size == 0 else 'background'} in the class map"
                )
            if covered.size > 1:
                logger.warning(
                    "%s (image id %s): instance %d covers classes %s; taking the smallest, as chainercv",
                    object_path,
                    image_id,
                    int(value),
                    (covered - 1).tolist(),
                )
            masks.append(mask)
            class_ids.append(int(covered[0]) - 1)
        return self._stack(masks, objects.shape), np.array(class_ids, dtype=np.int64)

    def _sbd_instances(self, path: Path, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        struct = _load_mat_struct(path, image_id, "GTinst")
        segmentation = self._as_label_map(_struct_field(struct, "Segmentation", path, image_id), path, image_id)
        self._check_size(segmentation, path, image_id)
        categories = np.atleast_1d(_struct_field(struct, "Categories", path, image_id)).astype(np.int64).ravel()
        instance_values = np.unique(segmentation)
        instance_values = instance_values[(instance_values != 0) & (instance_values != VOID_LABEL)]
        masks = []
        class_ids = []
        for value in instance_values:
            if value > categories.size:
                raise DatasetError(
                    f"{path} (image id {image_id}): instance {int(value)} has no entry in GTinst.Categories "
                    f"({categories.size} entries)"
                )
            category = int(categories[value - 1])
            if not 1 <= category <= self.num_classes:
                raise DatasetError(f"{path} (image id {image_id}): instance {int(value)} has category {category}")
            masks.append(segmentation == value)
            class_ids.append(category - 1)
        return self._stack(masks, segmentation.shape), np.array(class_ids, dtype=np.int64)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _stack(masks: Iterable[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        masks = list(masks)
        if not masks:
            return np.zeros((0, *shape), dtype=bool)
        return np.stack(masks).astype(bool, copy=False)

    @staticmethod
    def _as_label_map(array: np.ndarray, path: Path, image_id: str) -> np.ndarray:
        if array.ndim != 2:
            raise DatasetError(f"{path} (image id {image_id}): label map has shape {array.shape}, expected (H, W)")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DatasetError(f"{path} (image id {image_id}): label values outside 0..255")
        return np.ascontiguousarray(array.astype(np.uint8))

    def _check_class_values(self, mask: np.ndarray, path: Path, image_id: str) -> None:
        values = label_values(mask)
        bad = values[(values > self.num_classes) & (values != VOID_LABEL)]
        if bad.size:
            raise DatasetError(
                f"{path} (image id {image_id}): class map holds values {bad.tolist()} that are no class "
                f"({self.num_classes} classes: 0 background, 1..{self.num_classes}, {VOID_LABEL} void)"
            )

    def _check_size(self, mask: np.ndarray, path: Path, image_id: str) -> None:
        size = self.image_size(image_id)
        if tuple(mask.shape) != size:
            raise DatasetError(
                f"{path} (image id {image_id}): mask size {tuple(mask.shape)} differs from image size {size} "
                f"({self.image_path(image_id)})"
            )
