"""Build the real-photo check set: COCO photos of the 20 PASCAL VOC classes, as a COCO dataset.

Usage::

    python benchmarks/real_photos/build_set.py --out /work/realdata/coco-voc \
        --source SOURCE_ROOT/annotations/instances_train2017.json SOURCE_ROOT/train2017 \
        --source SOURCE_ROOT/annotations/instances_val2017.json SOURCE_ROOT/val2017 \
        [--long-side 320] [--skip-images N] [--max-images N]

Each ``--source`` is a COCO instances JSON and the folder of its images. The script keeps the
images that hold at least one non-crowd instance of a VOC class, keeps only the annotations of VOC
classes (objects of the other 60 COCO classes become background, as when VOC is built from COCO;
crowd regions of VOC classes stay crowd, i.e. void in the semantic ground truth), resizes every
image so that its long side is ``--long-side`` pixels (bicubic; 0 keeps the size) and scales its
polygons (RLE masks are decoded, resized nearest-neighbour and re-encoded), and writes::

    OUT/images/<file name>.jpg
    OUT/instances.json        categories 1..20 = the VOC classes in the reference order

which ``irn_core`` reads with ``dataset: {kind: coco, root: OUT/images, annotation_file:
OUT/instances.json, train_split: all, infer_split: all}``. Images listed in several sources are
taken once (the first source wins); the output is sorted by file name and is the same for the
same inputs. Images of COCO's ``coco128`` set (the first 128 images of train2017, ids up to 650)
are refused, because coco128-seg is kept aside as an independent check.

Where the source came from (see ``benchmarks/real_photos/README.md``): two public GitHub
repositories with small COCO 2017 subsets and their instances JSONs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

LOGGER = logging.getLogger("build_set")

#: COCO category name -> VOC class name (the 20 VOC classes all exist in COCO under these names).
COCO_TO_VOC: dict[str, str] = {
    "airplane": "aeroplane",
    "bicycle": "bicycle",
    "bird": "bird",
    "boat": "boat",
    "bottle": "bottle",
    "bus": "bus",
    "car": "car",
    "cat": "cat",
    "chair": "chair",
    "cow": "cow",
    "dining table": "diningtable",
    "dog": "dog",
    "horse": "horse",
    "motorcycle": "motorbike",
    "person": "person",
    "potted plant": "pottedplant",
    "sheep": "sheep",
    "couch": "sofa",
    "train": "train",
    "tv": "tvmonitor",
}
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
#: COCO 2017 train ids of coco128 are the first 128 train2017 images: all ids <= 650.
COCO128_MAX_ID = 650


def scale_factor(height: int, width: int, long_side: int) -> float:
    """Factor that brings the long side to ``long_side`` (1.0 when ``long_side`` is 0)."""
    if long_side <= 0:
        return 1.0
    return long_side / max(height, width)


def scaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    return max(1, int(round(height * factor))), max(1, int(round(width * factor)))


def scale_segmentation(segmentation: object, size: tuple[int, int], new_size: tuple[int, int]) -> object:
    """A COCO segmentation (polygons or RLE) of an image of ``size`` (H, W) moved to ``new_size``.

    Polygons are scaled per axis; RLE masks are decoded, resized nearest-neighbour and re-encoded.
    """
    (height, width), (new_height, new_width) = size, new_size
    if isinstance(segmentation, list):
        factor_y, factor_x = new_height / height, new_width / width
        polygons = []
        for polygon in segmentation:
            points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2) * (factor_x, factor_y)
            polygons.append([round(float(value), 2) for value in points.reshape(-1)])
        return polygons
    if isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, height, width)
        decoded = mask_utils.decode(rle)
        resized = np.asarray(Image.fromarray(decoded * 255).resize((new_width, new_height), Image.NEAREST)) > 0
        encoded = mask_utils.encode(np.asfortranarray(resized.astype(np.uint8)))
        encoded["counts"] = encoded["counts"].decode("ascii")
        return encoded
    raise ValueError(f"unknown segmentation type {type(segmentation).__name__}")


def _area_and_box(segmentation: object, size: tuple[int, int]) -> tuple[float, list[float]]:
    height, width = size
    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    else:
        rle = dict(segmentation)
        rle["counts"] = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
    return float(mask_utils.area(rle)), [float(value) for value in mask_utils.toBbox(rle)]


def build(
    sources: Sequence[tuple[Path, Path]], output: Path, *, long_side: int = 320, max_images: int | None = None,
    skip_images: int = 0,
) -> dict[str, int]:
    """Write ``output/images`` and ``output/instances.json``; returns counts (images, instances, per class).

    The kept images are sorted by file name; the first ``skip_images`` are left out, then at most
    ``max_images`` are written (``skip_images=120`` gives the held-out set disjoint from the 120-image one).
    """
    records: dict[str, tuple[dict, list[dict], Path]] = {}
    for annotation_file, image_dir in sources:
        data = json.loads(Path(annotation_file).read_text(encoding="utf-8"))
        voc_of_category = {
            category["id"]: COCO_TO_VOC[category["name"]]
            for category in data["categories"]
            if category["name"] in COCO_TO_VOC
        }
        by_image: dict[int, list[dict]] = {}
        for annotation in data["annotations"]:
            if annotation["category_id"] in voc_of_category:
                by_image.setdefault(annotation["image_id"], []).append(
                    {**annotation, "voc_class": voc_of_category[annotation["category_id"]]}
                )
        for image in data["images"]:
            name = image["file_name"]
            if "train2017" in str(image_dir) and int(image["id"]) <= COCO128_MAX_ID:
                raise ValueError(f"{annotation_file}: image {name} belongs to coco128 (kept aside as a hidden check)")
            annotations = by_image.get(image["id"], [])
            if name in records or not any(not annotation.get("iscrowd", 0) for annotation in annotations):
                continue
            if not (Path(image_dir) / name).is_file():
                raise FileNotFoundError(f"{annotation_file}: image {name} is not in {image_dir}")
            records[name] = (image, annotations, Path(image_dir))
    names = sorted(records)[skip_images:]
    if max_images is not None:
        names = names[:max_images]
    image_output = output / "images"
    image_output.mkdir(parents=True, exist_ok=True)
    categories = [{"id": index + 1, "name": name, "supercategory": "voc"} for index, name in enumerate(VOC_CLASSES)]
    category_id = {name: index + 1 for index, name in enumerate(VOC_CLASSES)}
    images, annotations = [], []
    per_class = dict.fromkeys(VOC_CLASSES, 0)
    for image_number, name in enumerate(names, start=1):
        image, source_annotations, image_dir = records[name]
        picture = Image.open(image_dir / name).convert("RGB")
        width, height = picture.size
        if (height, width) != (image["height"], image["width"]):
            raise ValueError(f"{image_dir / name}: size {(height, width)} differs from its annotation file")
        new_size = scaled_size(height, width, scale_factor(height, width, long_side))
        if new_size != (height, width):
            picture = picture.resize((new_size[1], new_size[0]), Image.BICUBIC)
        picture.save(image_output / name, quality=95)
        images.append({"id": image_number, "file_name": name, "height": new_size[0], "width": new_size[1],
                       "coco_id": image["id"]})
        for annotation in sorted(source_annotations, key=lambda item: item["id"]):
            segmentation = scale_segmentation(annotation["segmentation"], (height, width), new_size)
            area, box = _area_and_box(segmentation, new_size)
            if area == 0:
                continue
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_number,
                "category_id": category_id[annotation["voc_class"]], "segmentation": segmentation,
                "area": area, "bbox": box, "iscrowd": int(annotation.get("iscrowd", 0)),
            })
            if not annotation.get("iscrowd", 0):
                per_class[annotation["voc_class"]] += 1
    payload = {"info": {"description": "COCO 2017 photos of the 20 VOC classes (irn real-photo check set)"},
               "images": images, "annotations": annotations, "categories": categories}
    (output / "instances.json").write_text(json.dumps(payload), encoding="utf-8")
    LOGGER.info("wrote %d images, %d instances to %s", len(images), len(annotations), output)
    return {"images": len(images), "instances": len(annotations), **per_class}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", nargs=2, action="append", required=True, metavar=("INSTANCES_JSON", "IMAGE_DIR"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--long-side", type=int, default=320, help="resize so the long side is this (0: keep)")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--skip-images", type=int, default=0, help="leave out the first N images (by file name)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    counts = build([(Path(a), Path(b)) for a, b in arguments.source], arguments.out,
                   long_side=arguments.long_side, max_images=arguments.max_images,
                   skip_images=arguments.skip_images)
    sys.stdout.write(json.dumps(counts, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
