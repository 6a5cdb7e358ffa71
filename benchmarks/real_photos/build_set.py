"""Build the real-photo check sets: photos of the 20 PASCAL VOC classes, as a COCO dataset.

Usage::

    python benchmarks/real_photos/build_set.py --out /work/realdata/coco-voc \
        --source SOURCE_ROOT/annotations/instances_train2017.json SOURCE_ROOT/train2017 \
        --source SOURCE_ROOT/annotations/instances_val2017.json SOURCE_ROOT/val2017 \
        [--yolo-source YOLO_ROOT/images/train2017 YOLO_ROOT/labels/train2017] \
        [--pets-source PETS_ROOT] \
        [--long-side 320] [--skip-images N] [--max-images N] [--val-fraction F]

Three kinds of source, repeatable and combinable (at least one source in all):

- ``--source INSTANCES_JSON IMAGE_DIR``: a COCO instances JSON and the folder of its images;
- ``--yolo-source IMAGE_DIR LABEL_DIR``: the Ultralytics/YOLO segmentation layout (as in
  ``coco128-seg``): each ``IMAGE_DIR/<stem>.jpg|jpeg|png`` has its objects in ``LABEL_DIR/<stem>.txt``
  (no file: no objects), one per line, ``class_index x1 y1 x2 y2 ...``: a polygon normalised to
  [0, 1] by the image's width (x) and height (y), the class an index into the 80 COCO classes in the
  YOLO order (``YOLO_CLASSES``). Each line becomes a non-crowd polygon annotation in pixels (the
  image's size is read from its file); the record's ``coco_id`` is the stem as a number when it is
  all digits, else null. A malformed line (odd number of coordinates, fewer than 3 points, class
  index out of range, not a number) is an error naming the label file and the line.
- ``--pets-source DIR``: the Oxford-IIIT Pet layout (as in ``Naveen-Dodda/Sample_Pets_dataset``):
  photos ``DIR/images/<Breed>_<n>.jpg`` (other files there, e.g. ``.mat``, are ignored), trimaps
  ``DIR/annotations/trimaps/<same stem>.png`` (1 pet, 2 background, 3 border), species in
  ``DIR/annotations/list.txt`` (``<name> <class_id> <species> <breed_id>``, species 1 = VOC ``cat``,
  2 = ``dog``; a photo missing from it gets the README's rule: cat breeds are capitalised). One pet per
  photo: the pet region is one non-crowd instance; the border band is a crowd region of the same class,
  so it is void (255) in the semantic ground truth, no instance to find, and ignored by COCO mask AP.
  Grey-level, palette and opaque RGBA photos are converted to RGB; a photo that cannot be decoded, is
  animated or has transparent pixels, has no trimap, or whose trimap has no pet pixel is skipped with a
  logged reason. A trimap of another size or with a value outside 1..3, or a malformed ``list.txt``
  line, is an error naming the file. ``simonhansen1999/PetClassification`` (its name in the path) and
  the Penn-Fudan pedestrians (``PNGImages``/``PedMasks`` folders) are refused, being hidden checks;
  ``--allow-hidden-check`` lifts that, for the reviewer's check only.
- ``--mask-source IMAGE_DIR MASK_DIR CLASS``: photos of one VOC class with binary masks (as in
  ``VikramShenoy97/Human-Segmentation-Dataset``: ``Training_Images/<n>.jpg``, ``Ground_Truth/<n>.png``, 0
  background, 255 person): ``MASK_DIR/<stem>.png``, nonzero in its grey level = the class. Each 8-connected
  component of at least 0.2% of the image is one instance (objects that touch are one); the smaller ones
  are a crowd region (void). Photos are checked and skipped as for the pets (no mask, an empty mask); a
  mask of another size with the photo's aspect ratio is resized to it (nearest neighbour), another aspect
  ratio is an error naming the file. The Penn-Fudan folders are refused as above.

The script keeps the images that hold at least one non-crowd instance of a VOC class, keeps only the
annotations of VOC classes (objects of the other 60 COCO classes become background, as when VOC is
built from COCO; crowd regions of VOC classes stay crowd, i.e. void in the semantic ground truth),
resizes every image so that its long side is ``--long-side`` pixels (bicubic; 0 keeps the size) and
scales its polygons (RLE masks are decoded, resized nearest-neighbour and re-encoded), and writes::

    OUT/images/<file name>.jpg
    OUT/instances.json        categories 1..20 = the VOC classes in the reference order

which ``irn_core`` reads with ``dataset: {kind: coco, root: OUT/images, annotation_file:
OUT/instances.json, train_split: all, infer_split: all}``. ``--val-fraction F`` also writes
``OUT/instances_train.json`` and ``OUT/instances_val.json`` (an image is in val when the SHA-256 of
its id, the file stem, read as a fraction, is below F: seed-free and stable when images are added),
read with ``dataset.coco_splits`` (``train`` and ``val``; the split ``all`` is their union).
Images listed in several sources are taken once (the first source on the command line wins); the
output is sorted by file name and is the same for the same inputs. Images of COCO's ``coco128`` set (the first 128 images of train2017, ids up
to 650) are refused, because coco128-seg is kept aside as an independent check: in a COCO source, the
images of a ``train2017`` folder with ids up to 650; in a YOLO source, the images of a ``train2017``
folder whose stem is a number up to 650 (coco128-seg keeps its images in ``images/train2017``).
``--allow-coco128`` lifts the refusal for both kinds of source; it is for the reviewer's hidden check
only, our own sets never use it.

Where the source came from (see ``benchmarks/real_photos/README.md``): two public GitHub
repositories with small COCO 2017 subsets and their instances JSONs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

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
#: The 80 COCO classes in the YOLO (Ultralytics) order: label index -> COCO category name, spelled as in
#: COCO's instances JSON, so that ``COCO_TO_VOC`` applies.
YOLO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
#: Image files of a YOLO or pets source (compared in lower case).
YOLO_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
#: Oxford-IIIT Pet ``list.txt`` species -> VOC class; trimap values.
PET_SPECIES: dict[str, str] = {"1": "cat", "2": "dog"}
TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3
#: Picture modes a pets photo may have (converted to RGB when written).
PHOTO_MODES = frozenset({"RGB", "L", "P", "RGBA", "LA", "PA", "CMYK", "YCbCr"})


def scale_factor(height: int, width: int, long_side: int) -> float:
    """Factor that brings the long side to ``long_side`` (1.0 when ``long_side`` is 0)."""
    if long_side <= 0:
        return 1.0
    return long_side / max(height, width)


def scaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    return max(1, round(height * factor)), max(1, round(width * factor))


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


class CocoSource(NamedTuple):
    """A COCO instances JSON and the folder of its images (``--source``)."""

    annotation_file: Path
    image_dir: Path


class YoloSource(NamedTuple):
    """An Ultralytics/YOLO segmentation source (``--yolo-source``): images and their label files."""

    image_dir: Path
    label_dir: Path


class PetsSource(NamedTuple):
    """An Oxford-IIIT Pet layout (``--pets-source``): ``images/``, ``annotations/{trimaps/,list.txt}``."""

    root: Path


class MaskSource(NamedTuple):
    """Photos with binary masks of one VOC class (``--mask-source``): ``IMAGE_DIR/<stem>.jpg|jpeg|png``,
    ``MASK_DIR/<stem>.png`` (nonzero: the class)."""

    image_dir: Path
    mask_dir: Path
    voc_class: str


Source = CocoSource | YoloSource | PetsSource | MaskSource | tuple[Path, Path]
"""Any kind of source; a plain pair is a COCO source (instances JSON, image folder)."""


class SourceImage(NamedTuple):
    """One image of a source as both kinds of source give it to the writer.

    ``image`` holds ``file_name``, ``height``, ``width`` (as the source gives them) and ``id`` (the COCO
    id, or None); ``annotations`` are COCO annotations of VOC classes (``id``, ``segmentation``,
    ``iscrowd``) with their ``voc_class`` added; the picture is ``image_dir / image["file_name"]``.
    """

    image: dict[str, Any]
    annotations: list[dict[str, Any]]
    image_dir: Path


def _refuse_coco128(where: Path | str, name: str) -> NoReturn:
    raise ValueError(
        f"{where}: image {name} belongs to coco128 (kept aside as a hidden check; "
        "--allow-coco128 is for the reviewer's check only)"
    )


def coco_source_images(source: CocoSource, *, allow_coco128: bool = False) -> Iterator[SourceImage]:
    """Every image of a COCO source, in the order of its JSON, with its VOC-class annotations."""
    annotation_file, image_dir = source
    data = json.loads(Path(annotation_file).read_text(encoding="utf-8"))
    voc_of_category = {
        category["id"]: COCO_TO_VOC[category["name"]]
        for category in data["categories"]
        if category["name"] in COCO_TO_VOC
    }
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in data["annotations"]:
        if annotation["category_id"] in voc_of_category:
            by_image.setdefault(annotation["image_id"], []).append(
                {**annotation, "voc_class": voc_of_category[annotation["category_id"]]}
            )
    for image in data["images"]:
        if not allow_coco128 and "train2017" in str(image_dir) and int(image["id"]) <= COCO128_MAX_ID:
            _refuse_coco128(annotation_file, image["file_name"])
        yield SourceImage(image, by_image.get(image["id"], []), Path(image_dir))


def coco_id_of_stem(stem: str) -> int | None:
    """The COCO id that a file stem such as ``000000000650`` stands for; None unless it is all digits."""
    return int(stem) if re.fullmatch(r"[0-9]+", stem) else None


def _parse_number(token: str, label_file: Path, line_number: int) -> float:
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"{label_file}, line {line_number}: {token!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{label_file}, line {line_number}: {token!r} is not a finite number")
    return value


def parse_yolo_line(line: str, label_file: Path, line_number: int) -> tuple[int, list[float]]:
    """``class_index x1 y1 x2 y2 ...`` -> (class index, normalised polygon); ValueError when malformed."""
    tokens = line.split()
    values = [_parse_number(token, label_file, line_number) for token in tokens]
    class_value, coordinates = values[0], values[1:]
    if not class_value.is_integer() or not 0 <= class_value < len(YOLO_CLASSES):
        raise ValueError(
            f"{label_file}, line {line_number}: class index {tokens[0]} is not in 0..{len(YOLO_CLASSES) - 1}"
        )
    if len(coordinates) % 2:
        raise ValueError(f"{label_file}, line {line_number}: odd number of coordinates ({len(coordinates)})")
    if len(coordinates) < 6:
        raise ValueError(
            f"{label_file}, line {line_number}: a polygon needs at least 3 points, got {len(coordinates) // 2}"
        )
    return int(class_value), coordinates


def read_yolo_labels(label_file: Path, size: tuple[int, int]) -> list[dict[str, Any]]:
    """The VOC-class objects of a YOLO segmentation label file as non-crowd COCO polygon annotations.

    ``size`` is the image's (height, width); polygons come out in pixels. Objects of the other 60 COCO
    classes are dropped; a missing file means no objects. The annotation ids are the line numbers.
    """
    if not label_file.is_file():
        return []
    height, width = size
    annotations = []
    for line_number, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        class_index, coordinates = parse_yolo_line(line, label_file, line_number)
        voc_class = COCO_TO_VOC.get(YOLO_CLASSES[class_index])
        if voc_class is None:
            continue
        points = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2) * (width, height)
        annotations.append({"id": line_number, "segmentation": [[float(value) for value in points.reshape(-1)]],
                            "iscrowd": 0, "voc_class": voc_class})
    return annotations


def yolo_source_images(source: YoloSource, *, allow_coco128: bool = False) -> Iterator[SourceImage]:
    """Every image of a YOLO segmentation source, by file name, with its VOC-class annotations."""
    image_dir, label_dir = Path(source.image_dir), Path(source.label_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"YOLO source: image folder {image_dir} does not exist")
    image_files = sorted(
        path for path in image_dir.iterdir() if path.suffix.lower() in YOLO_IMAGE_SUFFIXES and path.is_file()
    )
    for image_file in image_files:
        coco_id = coco_id_of_stem(image_file.stem)
        if not allow_coco128 and coco_id is not None and coco_id <= COCO128_MAX_ID and "train2017" in str(image_dir):
            _refuse_coco128(image_file, image_file.name)
        with Image.open(image_file) as picture:
            width, height = picture.size
        image = {"id": coco_id, "file_name": image_file.name, "height": height, "width": width}
        yield SourceImage(image, read_yolo_labels(label_dir / f"{image_file.stem}.txt", (height, width)), image_dir)


def read_pet_species(list_file: Path) -> dict[str, str]:
    """``annotations/list.txt`` of an Oxford-IIIT Pet layout: image name -> VOC class (``cat``/``dog``).

    Each line is ``<name> <class_id> <species> <breed_id>`` with species 1 = cat, 2 = dog; ``#`` lines
    are comments. A malformed line is an error naming the file and the line. No file: an empty mapping.
    """
    if not list_file.is_file():
        return {}
    species: dict[str, str] = {}
    for line_number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 4 or fields[2] not in PET_SPECIES:
            raise ValueError(
                f"{list_file}, line {line_number}: expected '<name> <class_id> <species 1|2> <breed_id>', got {line!r}"
            )
        species[fields[0]] = PET_SPECIES[fields[2]]
    return species


def pet_species_of_name(name: str) -> str:
    """The Oxford-IIIT Pet naming rule for images missing from list.txt: cat breeds are capitalised
    (``Abyssinian_1``), dog breeds are not (``american_bulldog_1``)."""
    return "cat" if name[:1].isupper() else "dog"


def _refuse_hidden_pets(root: Path, allow_hidden: bool) -> None:
    """Refuse the data sets kept aside as hidden checks: simonhansen1999/PetClassification (by its name in
    the path) and the Penn-Fudan pedestrians (their ``PNGImages``/``PedMasks`` folders)."""
    if allow_hidden:
        return
    if "petclassification" in str(root.resolve()).lower():
        raise ValueError(f"{root}: PetClassification is kept aside as a hidden check (--allow-hidden-check is for "
                         "the reviewer's check only)")
    if (root / "PedMasks").is_dir() or (root / "PNGImages").is_dir():
        raise ValueError(f"{root}: a Penn-Fudan pedestrian layout, kept aside as a hidden check "
                         "(--allow-hidden-check is for the reviewer's check only)")


def _photo_problem(image_file: Path) -> str | None:
    """Why a photo cannot be used (None: it can): not decodable, animated, or with transparent pixels.

    Grey-level, palette and opaque RGBA/LA pictures are usable: the writer converts them to RGB.
    """
    try:
        with Image.open(image_file) as picture:
            picture.load()
            if getattr(picture, "n_frames", 1) > 1:
                return f"animated {picture.format} with {picture.n_frames} frames"
            if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
                alpha = np.asarray(picture.convert("RGBA"))[:, :, 3]
                if int(alpha.min()) < 255:
                    return f"{picture.format} {picture.mode} with transparent pixels"
            if picture.mode not in PHOTO_MODES:
                return f"unsupported picture mode {picture.mode!r}"
    except (OSError, SyntaxError, ValueError) as error:  # what Pillow raises for undecodable files
        return f"not a decodable image ({type(error).__name__}: {error})"
    return None


def _usable_photos(
    photos: Sequence[Path], mask_dir: Path, kind: str, mask_name: str
) -> Iterator[tuple[Path, Path, tuple[int, int, str]]]:
    """Each usable photo with its mask file ``mask_dir/<stem>.png`` and its height, width and picture mode;
    the others are skipped with the reason logged (:func:`_photo_problem`, or no mask file). ``kind`` and
    ``mask_name`` name the source kind and its mask files in the message."""
    for image_file in photos:
        mask_file = mask_dir / f"{image_file.stem}.png"
        problem = _photo_problem(image_file)
        if problem is None and not mask_file.is_file():
            problem = f"no {mask_name} {mask_file.name}"
        if problem is not None:
            LOGGER.warning("%s source: %s skipped: %s", kind, image_file, problem)
            continue
        with Image.open(image_file) as picture:
            width, height = picture.size
            mode = picture.mode
        yield image_file, mask_file, (height, width, mode)


def read_trimap(trimap_file: Path, size: tuple[int, int]) -> np.ndarray:
    """An Oxford-IIIT Pet trimap (1 pet, 2 background, 3 border) of an image of ``size`` (H, W): (H, W) uint8.

    A size other than the image's or a value outside 1..3 is an error naming the file.
    """
    with Image.open(trimap_file) as picture:
        trimap = np.asarray(picture)
    if trimap.ndim != 2:
        raise ValueError(f"{trimap_file}: a trimap has one channel, got shape {trimap.shape}")
    if trimap.shape != size:
        raise ValueError(f"{trimap_file}: trimap size {trimap.shape} differs from its image's {size}")
    values = set(np.unique(trimap).tolist())
    if not values <= {TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER}:
        raise ValueError(f"{trimap_file}: trimap values {sorted(values - {1, 2, 3})} outside 1 (pet), 2, 3 (border)")
    return trimap


def _rle(mask: np.ndarray) -> dict[str, Any]:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def trimap_annotations(trimap: np.ndarray, voc_class: str) -> list[dict[str, Any]]:
    """The pet (value 1) as one non-crowd RLE instance, the border band (3) as a crowd region of the same
    class: void in the semantic ground truth and ignored by COCO mask AP, never an object to find."""
    annotations = [{"id": 1, "segmentation": _rle(trimap == TRIMAP_PET), "iscrowd": 0, "voc_class": voc_class}]
    if (trimap == TRIMAP_BORDER).any():
        annotations.append(
            {"id": 2, "segmentation": _rle(trimap == TRIMAP_BORDER), "iscrowd": 1, "voc_class": voc_class}
        )
    return annotations


def pets_source_images(source: PetsSource, *, allow_hidden: bool = False) -> Iterator[SourceImage]:
    """Every usable photo of an Oxford-IIIT Pet layout, by file name, with its pet and border annotations.

    Photos are ``images/*.jpg|jpeg|png`` (other files there, such as ``.mat``, are ignored); the mask is
    ``annotations/trimaps/<stem>.png``; the species comes from ``annotations/list.txt`` (species 1 = cat,
    2 = dog), for a photo missing from it from the capitalisation rule of the Oxford-IIIT Pet README
    (:func:`pet_species_of_name`). Skipped with a logged reason: a photo that is not decodable, animated
    or has transparent pixels, one without a trimap, one whose trimap has no pet pixel.
    """
    root = Path(source.root)
    image_dir, trimap_dir = root / "images", root / "annotations" / "trimaps"
    _refuse_hidden_pets(root, allow_hidden)
    if not image_dir.is_dir() or not trimap_dir.is_dir():
        raise FileNotFoundError(f"pets source {root}: needs the folders images/ and annotations/trimaps/")
    species = read_pet_species(root / "annotations" / "list.txt")
    files = sorted(path for path in image_dir.iterdir() if path.is_file())
    ignored = [path.name for path in files if path.suffix.lower() not in YOLO_IMAGE_SUFFIXES]
    if ignored:
        LOGGER.info("pets source %s: %d files in images/ that are not photos ignored (%s)", root, len(ignored),
                    ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else ""))
    photos = [path for path in files if path.suffix.lower() in YOLO_IMAGE_SUFFIXES]
    for image_file, trimap_file, (height, width, mode) in _usable_photos(photos, trimap_dir, "pets", "trimap"):
        trimap = read_trimap(trimap_file, (height, width))
        if not (trimap == TRIMAP_PET).any():
            LOGGER.warning("pets source: %s skipped: its trimap has no pet pixel", image_file)
            continue
        if mode != "RGB":
            LOGGER.info("pets source: %s is %s, converted to RGB", image_file, mode)
        voc_class = species.get(image_file.stem)
        if voc_class is None:
            voc_class = pet_species_of_name(image_file.stem)
            LOGGER.info("pets source: %s is not in list.txt: %s by its name", image_file, voc_class)
        image = {"id": None, "file_name": image_file.name, "height": height, "width": width}
        yield SourceImage(image, trimap_annotations(trimap, voc_class), image_dir)


#: A mask source's connected components under this share of the image are void (crowd), not instances.
MASK_MIN_INSTANCE_FRACTION = 0.002


def read_binary_mask(mask_file: Path, size: tuple[int, int]) -> np.ndarray:
    """A binary mask (any picture mode; nonzero in its grey level is the object) of an image of ``size``
    (H, W): (H, W) bool. A mask of another size with the image's aspect ratio (within 1%) is resized to it
    (nearest neighbour; logged); another aspect ratio is an error naming the file."""
    height, width = size
    with Image.open(mask_file) as picture:
        grey = picture.convert("L")
        if grey.size != (width, height):
            mask_width, mask_height = grey.size
            if abs(mask_width / mask_height - width / height) > 0.01 * width / height:
                raise ValueError(f"{mask_file}: mask size {(mask_height, mask_width)} is not its image's {size} "
                                 "nor of its aspect ratio")
            LOGGER.info("mask source: %s is %dx%d, resized to its image's %dx%d", mask_file, mask_width, mask_height,
                        width, height)
            grey = grey.resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(grey) > 0


def mask_annotations(mask: np.ndarray, voc_class: str) -> list[dict[str, Any]]:
    """Each 8-connected component of ``mask`` (H, W) covering at least ``MASK_MIN_INSTANCE_FRACTION`` of the
    image as a non-crowd RLE instance (largest first); the smaller ones together as one crowd region (void in
    the semantic ground truth, ignored by COCO mask AP). Objects that touch are one instance."""
    components, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(components.ravel(), minlength=count + 1)[1:]
    large = [index + 1 for index in np.argsort(-areas, kind="stable") if areas[index] >= MASK_MIN_INSTANCE_FRACTION
             * mask.size]
    annotations = [
        {"id": number, "segmentation": _rle(components == label), "iscrowd": 0, "voc_class": voc_class}
        for number, label in enumerate(large, start=1)
    ]
    small = mask & ~np.isin(components, large)
    if small.any():
        annotations.append(
            {"id": len(annotations) + 1, "segmentation": _rle(small), "iscrowd": 1, "voc_class": voc_class}
        )
    return annotations


def mask_source_images(source: MaskSource, *, allow_hidden: bool = False) -> Iterator[SourceImage]:
    """Every usable photo of a mask source, by file name, with its instances (:func:`mask_annotations`).

    Skipped with a logged reason: a photo that is not decodable, animated or has transparent pixels, one
    without a mask, one whose mask is empty. The Penn-Fudan folders (``PNGImages``, ``PedMasks``) are
    refused, being a hidden check.
    """
    image_dir, mask_dir = Path(source.image_dir), Path(source.mask_dir)
    if source.voc_class not in VOC_CLASSES:
        raise ValueError(f"mask source {image_dir}: {source.voc_class!r} is not a VOC class ({', '.join(VOC_CLASSES)})")
    if not allow_hidden and {image_dir.name, mask_dir.name} & {"PNGImages", "PedMasks"}:
        raise ValueError(f"{image_dir}: a Penn-Fudan pedestrian layout, kept aside as a hidden check "
                         "(--allow-hidden-check is for the reviewer's check only)")
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise FileNotFoundError(f"mask source: {image_dir} and {mask_dir} must be folders")
    photos = sorted(path for path in image_dir.iterdir() if path.is_file() and path.suffix.lower() in
                    YOLO_IMAGE_SUFFIXES)
    for image_file, mask_file, (height, width, _) in _usable_photos(photos, mask_dir, "mask", "mask"):
        mask = read_binary_mask(mask_file, (height, width))
        if not mask.any():
            LOGGER.warning("mask source: %s skipped: its mask is empty", image_file)
            continue
        image = {"id": None, "file_name": image_file.name, "height": height, "width": width}
        yield SourceImage(image, mask_annotations(mask, source.voc_class), image_dir)


def source_images(
    source: Source, *, allow_coco128: bool = False,
    allow_hidden: bool = False,
) -> Iterator[SourceImage]:
    """The images of any kind of source (a plain pair is a COCO source: instances JSON, image folder)."""
    if isinstance(source, MaskSource):
        return mask_source_images(source, allow_hidden=allow_hidden)
    if isinstance(source, PetsSource):
        return pets_source_images(source, allow_hidden=allow_hidden)
    if isinstance(source, YoloSource):
        return yolo_source_images(source, allow_coco128=allow_coco128)
    return coco_source_images(CocoSource(Path(source[0]), Path(source[1])), allow_coco128=allow_coco128)


def _is_kept(annotations: Sequence[dict[str, Any]]) -> bool:
    """The keep rule: at least one non-crowd instance of a VOC class."""
    return any(not annotation.get("iscrowd", 0) for annotation in annotations)


def image_classes(annotations: Sequence[dict[str, Any]]) -> set[str]:
    """The VOC classes of an image's annotations (crowd regions included)."""
    return {annotation["voc_class"] for annotation in annotations}


def collect_records(
    sources: Sequence[Source], *, allow_coco128: bool = False, allow_hidden: bool = False,
    only_classes: Sequence[str] | None = None,
) -> dict[str, SourceImage]:
    """The kept images of all sources by file name; an image in several sources is taken from the first.

    ``only_classes``: keep only the images whose annotations are all of these VOC classes (a set of a
    few classes out of sources that hold more).
    """
    if only_classes is not None:
        unknown = sorted(set(only_classes) - set(VOC_CLASSES))
        if unknown:
            raise ValueError(f"only_classes: {unknown} are not VOC classes ({', '.join(VOC_CLASSES)})")
    records: dict[str, SourceImage] = {}
    for source in sources:
        seen = kept = 0
        for record in source_images(source, allow_coco128=allow_coco128, allow_hidden=allow_hidden):
            seen += 1
            name = record.image["file_name"]
            if name in records or not _is_kept(record.annotations):
                continue
            if only_classes is not None and not image_classes(record.annotations) <= set(only_classes):
                continue
            if not (record.image_dir / name).is_file():
                raise FileNotFoundError(f"{source[0]}: image {name} is not in {record.image_dir}")
            records[name] = record
            kept += 1
        kind = {YoloSource: "YOLO", PetsSource: "pets", MaskSource: "mask"}.get(type(source), "COCO")
        LOGGER.info("%s source %s: %d images, %d new ones kept", kind, source[0], seen, kept)
    return records


def _write_image(record: SourceImage, output_dir: Path, long_side: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Writes the (resized) picture; returns its size and its new size, both (H, W)."""
    image, _, image_dir = record
    name = image["file_name"]
    picture = Image.open(image_dir / name).convert("RGB")
    width, height = picture.size
    if (height, width) != (image["height"], image["width"]):
        raise ValueError(f"{image_dir / name}: size {(height, width)} differs from its annotation file")
    new_size = scaled_size(height, width, scale_factor(height, width, long_side))
    if new_size != (height, width):
        picture = picture.resize((new_size[1], new_size[0]), Image.BICUBIC)
    picture.save(output_dir / name, quality=95)
    return (height, width), new_size


def write_set(records: dict[str, SourceImage], names: Sequence[str], output: Path, *, long_side: int) -> dict[str, int]:
    """Writes the images ``names`` of ``records`` and their annotations as the COCO dataset ``output``."""
    image_output = output / "images"
    image_output.mkdir(parents=True, exist_ok=True)
    categories = [{"id": index + 1, "name": name, "supercategory": "voc"} for index, name in enumerate(VOC_CLASSES)]
    category_id = {name: index + 1 for index, name in enumerate(VOC_CLASSES)}
    images, annotations = [], []
    per_class = dict.fromkeys(VOC_CLASSES, 0)
    for image_number, name in enumerate(names, start=1):
        record = records[name]
        size, new_size = _write_image(record, image_output, long_side)
        images.append({"id": image_number, "file_name": name, "height": new_size[0], "width": new_size[1],
                       "coco_id": record.image["id"]})
        for annotation in sorted(record.annotations, key=lambda item: item["id"]):
            segmentation = scale_segmentation(annotation["segmentation"], size, new_size)
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
    payload = {"info": {"description": "real photos of the 20 VOC classes (irn real-photo check set)"},
               "images": images, "annotations": annotations, "categories": categories}
    (output / "instances.json").write_text(json.dumps(payload), encoding="utf-8")
    LOGGER.info("wrote %d images, %d instances to %s", len(images), len(annotations), output)
    return {"images": len(images), "instances": len(annotations), **per_class}


ORDER_SALT = "order:"


def id_hash_fraction(image_id: str, salt: str = "") -> float:
    """The first 8 bytes of the SHA-256 of ``salt + image_id`` as a fraction of 2**64, in [0, 1): a
    seed-free, stable position of the image."""
    digest = hashlib.sha256((salt + image_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_val_image(image_id: str, val_fraction: float) -> bool:
    """Whether image ``image_id`` (file stem) is in val: its :func:`id_hash_fraction` is below
    ``val_fraction``. Seed-free, and an image keeps its split when others are added or removed."""
    return id_hash_fraction(image_id) < val_fraction


def write_splits(output: Path, val_fraction: float) -> dict[str, int]:
    """Split ``output/instances.json`` into ``instances_train.json`` and ``instances_val.json`` (same
    categories; the images of each split and their annotations, ids unchanged) by :func:`is_val_image`.

    Read with ``dataset.coco_splits`` (see the README). Returns the image count of each split.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    data = json.loads((output / "instances.json").read_text(encoding="utf-8"))
    counts = {}
    for split in ("train", "val"):
        images = [image for image in data["images"]
                  if is_val_image(Path(image["file_name"]).stem, val_fraction) == (split == "val")]
        kept = {image["id"] for image in images}
        annotations = [annotation for annotation in data["annotations"] if annotation["image_id"] in kept]
        payload = {**data, "images": images, "annotations": annotations}
        (output / f"instances_{split}.json").write_text(json.dumps(payload), encoding="utf-8")
        counts[f"{split}_images"] = len(images)
    LOGGER.info("split %s: %d train, %d val images", output, counts["train_images"], counts["val_images"])
    return counts


def build(
    sources: Sequence[Source], output: Path, *, long_side: int = 320,
    max_images: int | None = None, skip_images: int = 0, allow_coco128: bool = False,
    allow_hidden: bool = False, val_fraction: float | None = None, order: str = "name",
    only_classes: Sequence[str] | None = None, max_per_class: int | None = None,
) -> dict[str, int]:
    """Write ``output/images`` and ``output/instances.json``; returns counts (images, instances, per class).

    ``sources`` are ``CocoSource``, ``YoloSource`` or ``PetsSource`` (a plain pair is a COCO source), read
    in order. The kept images are sorted by file name (``order="name"``) or by a hash of the file stem
    (``order="hash"``: a subset then mixes the classes of sources whose file names group them); the first
    ``skip_images`` are left out, then at most ``max_images`` are written (``skip_images=120`` gives the
    held-out set disjoint from the 120-image one). ``allow_coco128`` lifts the coco128 refusal,
    ``allow_hidden`` that of PetClassification and Penn-Fudan: for the reviewer's hidden check only. ``val_fraction``: also write the train/val split files
    (:func:`write_splits`); the counts then hold ``train_images`` and ``val_images``. ``only_classes``:
    only images all of whose annotations are of these VOC classes; ``max_per_class``: at most this many
    images holding each class (:func:`cap_per_class`, after ``skip_images``, before ``max_images``).
    """
    if allow_coco128:
        LOGGER.warning("coco128 refusal lifted (--allow-coco128): for the reviewer's hidden check only")
    if allow_hidden:
        LOGGER.warning("hidden-check refusal lifted (--allow-hidden-check): for the reviewer's hidden check only")
    records = collect_records(sources, allow_coco128=allow_coco128, allow_hidden=allow_hidden,
                              only_classes=only_classes)
    if order not in ("name", "hash"):
        raise ValueError(f"order must be 'name' or 'hash', got {order!r}")
    names = sorted(records)
    if order == "hash":
        # salted, so that the subset is independent of the val split (which takes the lowest unsalted hashes)
        names = sorted(names, key=lambda name: id_hash_fraction(Path(name).stem, salt=ORDER_SALT))
    names = names[skip_images:]
    if max_per_class is not None:
        names = cap_per_class(names, records, max_per_class)
    if max_images is not None:
        names = names[:max_images]
    counts = write_set(records, names, output, long_side=long_side)
    if val_fraction is not None:
        counts.update(write_splits(output, val_fraction))
    return counts


def cap_per_class(names: Sequence[str], records: dict[str, SourceImage], max_per_class: int) -> list[str]:
    """The images of ``names``, in order, leaving out an image when one of its classes already has
    ``max_per_class`` images: a set that balances a plentiful class against a scarce one."""
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be at least 1, got {max_per_class}")
    taken: dict[str, int] = {}
    kept = []
    for name in names:
        classes = image_classes(records[name].annotations)
        if any(taken.get(voc_class, 0) >= max_per_class for voc_class in classes):
            continue
        for voc_class in classes:
            taken[voc_class] = taken.get(voc_class, 0) + 1
        kept.append(name)
    return kept


class _AppendSource(argparse.Action):
    """Appends a ``--source``, ``--yolo-source`` or ``--pets-source`` (its kind is ``const``) to one list, in
    command-line order."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
        option_string: str | None = None,
    ) -> None:
        sources = list(getattr(namespace, self.dest, None) or [])
        if self.const is MaskSource:
            sources.append(MaskSource(Path(values[0]), Path(values[1]), values[2]))
        else:
            sources.append(self.const(*(Path(value) for value in values)))
        setattr(namespace, self.dest, sources)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", nargs=2, action=_AppendSource, const=CocoSource, dest="sources",
                        metavar=("INSTANCES_JSON", "IMAGE_DIR"), help="a COCO source (repeatable)")
    parser.add_argument("--yolo-source", nargs=2, action=_AppendSource, const=YoloSource, dest="sources",
                        metavar=("IMAGE_DIR", "LABEL_DIR"), help="a YOLO segmentation source (repeatable)")
    parser.add_argument("--pets-source", nargs=1, action=_AppendSource, const=PetsSource, dest="sources",
                        metavar="DIR", help="an Oxford-IIIT Pet layout (images/, annotations/trimaps/; repeatable)")
    parser.add_argument("--mask-source", nargs=3, action=_AppendSource, const=MaskSource, dest="sources",
                        metavar=("IMAGE_DIR", "MASK_DIR", "CLASS"),
                        help="photos with binary masks of one VOC class (MASK_DIR/<stem>.png; repeatable)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--long-side", type=int, default=320, help="resize so the long side is this (0: keep)")
    parser.add_argument("--max-images", type=int)
    parser.add_argument("--skip-images", type=int, default=0, help="leave out the first N images (in --order)")
    parser.add_argument("--order", choices=("name", "hash"), default="name",
                        help="the order --skip-images and --max-images count in: file name, or a hash of the "
                             "file stem (mixes the classes of a source whose names group them, like the pets)")
    parser.add_argument("--only-classes", type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
                        metavar="CLASS,CLASS", help="keep only images all of whose objects are of these VOC classes "
                        "(e.g. cat,dog,person)")
    parser.add_argument("--max-per-class", type=int,
                        help="at most this many images holding each class (in --order, before --max-images)")
    parser.add_argument("--allow-coco128", action="store_true",
                        help="do not refuse coco128 images: for the reviewer's hidden check only; our own sets never "
                             "use it")
    parser.add_argument("--allow-hidden-check", action="store_true",
                        help="do not refuse PetClassification / Penn-Fudan: for the reviewer's hidden check only")
    parser.add_argument("--val-fraction", type=float,
                        help="also write instances_train.json / instances_val.json, about this share of the images "
                             "in val (by a hash of the image id)")
    arguments = parser.parse_args(argv)
    if not arguments.sources:
        parser.error("give at least one --source, --yolo-source, --pets-source or --mask-source")
    if arguments.val_fraction is not None and not 0 < arguments.val_fraction < 1:
        parser.error(f"--val-fraction must be between 0 and 1 (exclusive), got {arguments.val_fraction}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    counts = build(arguments.sources, arguments.out, long_side=arguments.long_side,
                   max_images=arguments.max_images, skip_images=arguments.skip_images,
                   allow_coco128=arguments.allow_coco128, allow_hidden=arguments.allow_hidden_check,
                   val_fraction=arguments.val_fraction, order=arguments.order,
                   only_classes=arguments.only_classes, max_per_class=arguments.max_per_class)
    sys.stdout.write(json.dumps(counts, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
