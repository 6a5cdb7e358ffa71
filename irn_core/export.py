"""Exports: instances as COCO instances JSON (RLE), label maps as VOC-palette PNGs, and back.

COCO JSON (:func:`instances_to_coco`), what Detectron2's ``load_coco_json`` / ``register_coco_instances``
and MMDetection's ``CocoDataset`` train on as it is::

    {"info": {...}, "licenses": [],
     "images": [{"id": 1, "file_name": "2007_000032.jpg", "height": 281, "width": 500}, ...],
     "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                      "segmentation": {"size": [281, 500], "counts": "<compressed RLE, str>"},
                      "area": 4711, "bbox": [x, y, w, h], "iscrowd": 0, "score": 0.93}, ...],
     "categories": [{"id": 1, "name": "aeroplane", "supercategory": "object"}, ...]}

Category ids are the 0-based class ids + 1, or, for a COCO dataset, its own category ids (COCO's 80
classes have ids 1..90 with gaps), so predictions on COCO images evaluate with the official tools.
Masks are pycocotools' compressed RLE (``mask.encode`` of the Fortran-ordered mask, counts decoded to
str); ``bbox`` is ``mask.toBbox`` ([x, y, w, h], w = last column - first column + 1) and ``area`` the
pixel count. Annotations carry ``score`` (predictions and pseudo labels; 1.0 for ground truth); an
instance with an empty mask is left out (it has no box). :func:`coco_results` turns the same content
into the result list of ``COCO.loadRes`` / ``COCOeval``.

PNGs (:func:`semantic_png`, :func:`instance_pngs`): indexed PNGs with the VOC palette.
``SegmentationClass``: 0 background, k + 1 class k (255 void). ``SegmentationObject``: instance i (1-based,
in stored order) on its pixels, 0 background; where instances overlap, the higher score is on top
(ties: the earlier instance), so an instance completely covered by better ones does not appear; at most
254 instances per image (255 is VOC's void). The matching ``SegmentationClass`` map of an instance
product holds each instance's class on its pixels, so the pair reads back as VOC's ground truth does.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irn_core.atomic import atomic_path, write_text_atomic
from irn_core.data.images import read_label_png
from irn_core.data.palette import write_indexed_png
from irn_core.data.registry import SegmentationDataset
from irn_core.errors import DatasetError, InputError
from irn_core.instances import InstanceLabels
from irn_core.store import ShardedStore

logger = logging.getLogger(__name__)

MAX_PNG_INSTANCES = 254
"""Instances a SegmentationObject PNG can hold (values 1..254; 255 is void)."""


@dataclass(frozen=True)
class ImageInstances:
    """One image's instances for export: ``masks`` (N, H, W) bool, ``class_ids`` (N,) 0-based,
    ``scores`` (N,) or None (ground truth)."""

    image_id: str
    file_name: str
    size: tuple[int, int]
    masks: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray | None = None


def _quiet() -> contextlib.AbstractContextManager[Any]:
    from irn_core.data.coco import quiet_pycocotools

    return quiet_pycocotools()


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> compressed RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(encoded["size"][0]), int(encoded["size"][1])], "counts": encoded["counts"].decode("ascii")}


def decode_mask(segmentation: Mapping[str, Any] | list[Any], size: tuple[int, int]) -> np.ndarray:
    """RLE (compressed or not) or polygons -> (H, W) bool."""
    from pycocotools import mask as mask_utils

    height, width = size
    with _quiet():
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(dict(segmentation), height, width)
        else:
            rle = dict(segmentation)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        return mask_utils.decode(rle).astype(bool)


def _categories(class_names: Sequence[str], category_ids: Sequence[int] | None) -> list[dict[str, Any]]:
    ids = list(range(1, len(class_names) + 1)) if category_ids is None else [int(value) for value in category_ids]
    if len(ids) != len(class_names):
        raise InputError(f"{len(ids)} category ids for {len(class_names)} classes")
    return [{"id": ids[index], "name": str(name), "supercategory": "object"} for index, name in enumerate(class_names)]


def instances_to_coco(
    images: Iterable[ImageInstances],
    class_names: Sequence[str],
    *,
    category_ids: Sequence[int] | None = None,
    coco_image_ids: Mapping[str, int] | None = None,
    min_score: float | None = None,
    description: str = "irn export",
) -> dict[str, Any]:
    """A COCO instances dict (see the module docstring) of ``images``.

    ``category_ids``: the category id of each 0-based class (default class + 1); ``coco_image_ids``: the
    integer id of each image id (default 1, 2, ... in the order given); ``min_score``: leave out instances
    scoring below it. A class id outside the class table or masks not of the image's size raise
    :class:`InputError` naming the image.
    """
    from pycocotools import mask as mask_utils

    categories = _categories(class_names, category_ids)
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    seen: set[str] = set()
    for position, item in enumerate(images, start=1):
        if item.image_id in seen:
            raise InputError(f"image id {item.image_id!r} exported twice")
        seen.add(item.image_id)
        numeric_id = position if coco_image_ids is None else int(coco_image_ids[item.image_id])
        height, width = (int(value) for value in item.size)
        coco_images.append({"id": numeric_id, "file_name": item.file_name, "height": height, "width": width})
        masks = np.asarray(item.masks)
        class_ids = np.asarray(item.class_ids, np.int64).reshape(-1)
        scores = None if item.scores is None else np.asarray(item.scores, np.float64).reshape(-1)
        if masks.ndim != 3 or masks.shape[1:] != (height, width) or len(masks) != len(class_ids):
            raise InputError(
                f"image id {item.image_id!r}: masks {masks.shape} and class ids {class_ids.shape} do not fit "
                f"the image size {(height, width)}"
            )
        if scores is not None and len(scores) != len(class_ids):
            raise InputError(f"image id {item.image_id!r}: {len(scores)} scores for {len(class_ids)} instances")
        for index in range(len(class_ids)):
            class_id = int(class_ids[index])
            if not 0 <= class_id < len(categories):
                raise InputError(f"image id {item.image_id!r}: class id {class_id} outside 0..{len(categories) - 1}")
            score = 1.0 if scores is None else float(scores[index])
            if min_score is not None and score < min_score:
                continue
            if not masks[index].any():
                continue
            rle = encode_mask(masks[index])
            binary = {**rle, "counts": rle["counts"].encode("ascii")}
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": numeric_id,
                    "category_id": categories[class_id]["id"],
                    "segmentation": rle,
                    "area": int(mask_utils.area(binary)),
                    "bbox": [float(value) for value in mask_utils.toBbox(binary)],
                    "iscrowd": 0,
                    "score": score,
                }
            )
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": coco_images,
        "annotations": annotations,
        "categories": categories,
    }


def coco_results(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The annotations of a COCO dict as a result list (``image_id``, ``category_id``, ``segmentation``,
    ``bbox``, ``score``) for ``COCO.loadRes`` and ``COCOeval``."""
    keys = ("image_id", "category_id", "segmentation", "bbox", "score")
    return [{key: annotation[key] for key in keys} for annotation in data["annotations"]]


def coco_object(data: Mapping[str, Any]) -> Any:
    """An in-memory pycocotools ``COCO`` of a COCO dict (no file)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = json.loads(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def write_coco_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write a COCO dict as JSON, atomically."""
    write_text_atomic(path, json.dumps(data, separators=(",", ":")) + "\n")


def read_coco_instances(path: str | os.PathLike[str]) -> tuple[list[str], dict[str, InstanceLabels]]:
    """Read a COCO instances JSON back: (class names in category-id order, image id -> instances).

    Image ids are file-name stems (as :class:`irn_core.data.coco.COCODataset`); an image's instances are its
    non-crowd annotations in annotation-id order: ``masks`` (N, H, W) bool, ``class_ids`` 0-based in
    increasing category-id order, ``scores`` (1.0 where an annotation has none). Malformed files raise
    :class:`DatasetError` naming the file and the image.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable COCO JSON ({error})") from error
    if not isinstance(data, dict) or not all(key in data for key in ("images", "annotations", "categories")):
        raise DatasetError(f"{path}: not a COCO instances file (needs images, annotations and categories)")
    categories = sorted(data["categories"], key=lambda category: int(category["id"]))
    class_of = {int(category["id"]): index for index, category in enumerate(categories)}
    images = {int(record["id"]): record for record in data["images"]}
    grouped: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in images}
    for annotation in sorted(data["annotations"], key=lambda annotation: int(annotation["id"])):
        if int(annotation["image_id"]) not in images:
            raise DatasetError(f"{path}: annotation {annotation['id']} names unknown image {annotation['image_id']}")
        if not annotation.get("iscrowd", 0):
            grouped[int(annotation["image_id"])].append(annotation)
    result: dict[str, InstanceLabels] = {}
    for numeric_id, record in images.items():
        image_id = Path(str(record["file_name"])).stem
        size = (int(record["height"]), int(record["width"]))
        annotations = grouped[numeric_id]
        masks = np.zeros((len(annotations), *size), bool)
        class_ids = np.zeros(len(annotations), np.int64)
        scores = np.ones(len(annotations), np.float32)
        for index, annotation in enumerate(annotations):
            category = int(annotation["category_id"])
            if category not in class_of:
                raise DatasetError(f"{path}: image id {image_id!r}: annotation {annotation['id']} names unknown "
                                   f"category {category}")
            mask = decode_mask(annotation["segmentation"], size)
            if mask.shape != size:
                raise DatasetError(f"{path}: image id {image_id!r}: annotation {annotation['id']} mask {mask.shape} "
                                   f"differs from the image size {size}")
            masks[index] = mask
            class_ids[index] = class_of[category]
            scores[index] = float(annotation.get("score", 1.0))
        result[image_id] = InstanceLabels(masks=masks, class_ids=class_ids, scores=scores)
    return [str(category["name"]) for category in categories], result


# ----------------------------------------------------------------------------------- from runs and datasets


def image_file_name(dataset: SegmentationDataset, image_id: str) -> str:
    """The image's file name (relative to its image folder): COCO's ``file_name``, VOC's ``<id>.jpg``
    (``<id>.png`` for a dataset without image files)."""
    coco = getattr(dataset, "coco_file_name", None)
    if coco is not None:
        return str(coco(image_id))
    image_path = getattr(dataset, "image_path", None)
    return Path(image_path(image_id)).name if image_path is not None else f"{image_id}.png"


def _dataset_ids(dataset: SegmentationDataset) -> tuple[list[int] | None, Any]:
    """(category ids, image id -> COCO id) of a COCO dataset, (None, None) for other datasets."""
    if hasattr(dataset, "category_id") and hasattr(dataset, "coco_image_id"):
        category_ids = [int(dataset.category_id(index)) for index in range(len(dataset.class_names))]
        return category_ids, dataset.coco_image_id
    return None, None


def _coco_ids(dataset: SegmentationDataset, image_ids: Sequence[str]) -> tuple[list[int] | None, dict[str, int] | None]:
    """A COCO dataset's category ids and image ids (numbered 1, 2, ... instead when the ids of several
    annotation files collide)."""
    category_ids, image_number = _dataset_ids(dataset)
    numbers = None if image_number is None else {image_id: int(image_number(image_id)) for image_id in image_ids}
    if numbers is not None and len(set(numbers.values())) < len(numbers):
        logger.warning("COCO image ids of several annotation files collide; numbering the images 1, 2, ...")
        numbers = None
    return category_ids, numbers


def ground_truth_coco(dataset: SegmentationDataset, image_ids: Sequence[str]) -> dict[str, Any]:
    """The dataset's ground-truth instances of ``image_ids`` as a COCO dict."""

    def items() -> Iterator[ImageInstances]:
        for image_id in image_ids:
            masks, class_ids = dataset.instance_masks(image_id)
            size = tuple(int(value) for value in dataset.image_size(image_id))
            yield ImageInstances(image_id, image_file_name(dataset, image_id), size, masks, class_ids)

    category_ids, numbers = _coco_ids(dataset, image_ids)
    return instances_to_coco(items(), dataset.class_names, category_ids=category_ids, coco_image_ids=numbers,
                             description="ground truth")


def stored_instances(
    store: ShardedStore, dataset: SegmentationDataset, image_ids: Sequence[str]
) -> Iterator[ImageInstances]:
    """The stored instances (``masks_s1``, ``class_ids``, ``scores``) of ``image_ids``."""
    for image_id in image_ids:
        stored = store.read(image_id, ["masks_s1", "class_ids", "scores"])
        attributes = store.attributes(image_id)
        size = (int(attributes["height"]), int(attributes["width"]))
        yield ImageInstances(
            image_id, image_file_name(dataset, image_id), size, stored["masks_s1"], stored["class_ids"],
            stored["scores"],
        )


def store_to_coco(
    paths: Sequence[str | os.PathLike[str]],
    dataset: SegmentationDataset,
    *,
    product: str,
    image_ids: Sequence[str] | None = None,
    min_score: float | None = None,
) -> dict[str, Any]:
    """The ``product`` shards (``instances`` pseudo labels, ``maskrcnn`` predictions, ...) as a COCO dict,
    for ``image_ids`` (default: every stored id, in shard order)."""
    with ShardedStore(paths, product=product) as store:
        ids = store.image_ids if image_ids is None else list(image_ids)
        category_ids, numbers = _coco_ids(dataset, ids)
        return instances_to_coco(
            stored_instances(store, dataset, ids), dataset.class_names, category_ids=category_ids,
            coco_image_ids=numbers, min_score=min_score, description=f"irn {product}",
        )


# ------------------------------------------------------------------------------------------------ PNGs


def instance_maps(
    masks: np.ndarray, class_ids: np.ndarray, scores: np.ndarray | None = None, *, image_id: str = "?"
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) masks -> (``objects``, ``classes``) uint8 (H, W): instance i + 1 and its class + 1 on its
    pixels (0 background); overlaps go to the higher score (ties: the earlier instance)."""
    masks = np.asarray(masks, bool)
    if len(masks) > MAX_PNG_INSTANCES:
        raise InputError(f"image id {image_id!r}: {len(masks)} instances, a SegmentationObject PNG holds "
                         f"{MAX_PNG_INSTANCES}")
    class_ids = np.asarray(class_ids, np.int64).reshape(-1)
    if len(class_ids) and (class_ids.min() < 0 or class_ids.max() >= 254):
        raise InputError(f"image id {image_id!r}: class ids {class_ids.tolist()} do not fit a label map")
    scores = np.zeros(len(masks)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
    objects = np.zeros(masks.shape[1:], np.uint8)
    classes = np.zeros(masks.shape[1:], np.uint8)
    # paint the lowest score first; among equal scores the later instance first, so the earlier one wins
    order = np.lexsort((-np.arange(len(masks)), scores))
    for index in order:
        objects[masks[index]] = index + 1
        classes[masks[index]] = class_ids[index] + 1
    return objects, classes


def instances_from_maps(objects: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SegmentationObject + SegmentationClass maps -> ``masks`` (N, H, W) bool, ``class_ids`` (N,) for the
    object values 1..254 present, in increasing order (class: the smallest class value under it, minus 1)."""
    values = [value for value in np.unique(objects) if 0 < value < 255]
    masks = np.stack([objects == value for value in values]) if values else np.zeros((0, *objects.shape), bool)
    class_ids = np.array([int(np.unique(classes[objects == value])[0]) - 1 for value in values], np.int64)
    return masks, class_ids


def semantic_png(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """A ``SegmentationClass``-style PNG of an (H, W) uint8 label map."""
    write_indexed_png(path, np.asarray(labels, np.uint8))


def instance_pngs(
    object_path: str | os.PathLike[str], class_path: str | os.PathLike[str], masks: np.ndarray,
    class_ids: np.ndarray, scores: np.ndarray | None = None, *, image_id: str = "?",
) -> None:
    """``SegmentationObject``- and ``SegmentationClass``-style PNGs of an image's instances."""
    objects, classes = instance_maps(masks, class_ids, scores, image_id=image_id)
    write_indexed_png(object_path, objects)
    write_indexed_png(class_path, classes)


def read_instance_pngs(object_path: str | os.PathLike[str], class_path: str | os.PathLike[str]) -> tuple[
        np.ndarray, np.ndarray]:
    """Read PNGs written by :func:`instance_pngs` back: ``masks`` (N, H, W) bool and ``class_ids`` (N,)."""
    return instances_from_maps(read_label_png(object_path), read_label_png(class_path))


def export_pngs(
    paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *, product: str,
    min_score: float | None = None, image_ids: Sequence[str] | None = None,
) -> int:
    """Every image of the ``product`` shards as PNGs under ``out_dir``: ``SegmentationClass/<id>.png`` of
    ``semantic_s1`` for product ``semantic``; for an instance product (``instances``, ``maskrcnn``:
    ``masks_s1``, ``class_ids``, ``scores``) ``SegmentationObject/<id>.png`` + ``SegmentationClass/<id>.png``,
    instances below ``min_score`` left out. ``image_ids``: those images only (default: every stored id).
    Returns the image count."""
    out_dir = Path(out_dir)
    count = 0
    with ShardedStore(paths, product=product) as store:
        for image_id in store.image_ids if image_ids is None else image_ids:
            if product == "semantic":
                labels = store.read(image_id, ["semantic_s1"])["semantic_s1"]
                semantic_png(out_dir / "SegmentationClass" / f"{image_id}.png", labels)
            else:
                stored = store.read(image_id, ["masks_s1", "class_ids", "scores"])
                keep = np.ones(len(stored["scores"]), bool) if min_score is None else stored["scores"] >= min_score
                instance_pngs(
                    out_dir / "SegmentationObject" / f"{image_id}.png",
                    out_dir / "SegmentationClass" / f"{image_id}.png",
                    stored["masks_s1"][keep], stored["class_ids"][keep], stored["scores"][keep], image_id=image_id,
                )
            count += 1
    logger.info("wrote PNGs of %d images of %s to %s", count, product, out_dir)
    return count


# ----------------------------------------------------------------------------- a dataset in COCO format


def export_coco_dataset(
    dataset: SegmentationDataset, splits: Mapping[str, Sequence[str]], out_dir: str | os.PathLike[str]
) -> dict[str, dict[str, Path]]:
    """Write ``dataset``'s images and ground-truth instances as a COCO-format dataset, per split:
    ``<out_dir>/<split>/<file name>`` (the image files copied as they are) and
    ``<out_dir>/annotations/instances_<split>.json``. Returns split -> {"image_dir", "annotation_file"},
    what ``dataset.coco_splits`` takes."""
    out_dir = Path(out_dir)
    written: dict[str, dict[str, Path]] = {}
    for split, image_ids in splits.items():
        image_dir = out_dir / split
        image_dir.mkdir(parents=True, exist_ok=True)
        for image_id in image_ids:
            target = image_dir / image_file_name(dataset, image_id)
            source = getattr(dataset, "image_path", None)
            if source is not None and Path(source(image_id)).is_file():
                with atomic_path(target) as temporary:
                    shutil.copyfile(source(image_id), temporary)
            else:
                from PIL import Image

                with atomic_path(target) as temporary:
                    Image.fromarray(dataset.image(image_id)).save(temporary, format="PNG")
        annotation_file = out_dir / "annotations" / f"instances_{split}.json"
        write_coco_json(annotation_file, ground_truth_coco(dataset, list(image_ids)))
        written[split] = {"image_dir": image_dir, "annotation_file": annotation_file}
        logger.info("wrote %d images and %s", len(image_ids), annotation_file)
    return written
