"""benchmarks/real_photos/build_set.py: COCO and YOLO segmentation sources -> the real-photo check set."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_photos" / "build_set.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_set", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build_set = _load_script()

#: YOLO class indices used below.
PERSON, DOG, ELEPHANT, TV = 0, 16, 20, 62
#: Height, width of the test images (portrait, so that the long side is the height).
HEIGHT, WIDTH = 60, 40


def _voc_id(voc_class: str) -> int:
    return build_set.VOC_CLASSES.index(voc_class) + 1


def _polygon_area(flat: list[float]) -> float:
    """Shoelace area of a flat ``x1 y1 x2 y2 ...`` polygon."""
    x, y = np.asarray(flat[0::2]), np.asarray(flat[1::2])
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _write_image(path: Path, size: tuple[int, int] = (HEIGHT, WIDTH)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _yolo_line(class_index: int, normalised_points: list[tuple[float, float]]) -> str:
    return " ".join([str(class_index), *(f"{x:.6f} {y:.6f}" for x, y in normalised_points)])


def _yolo_source(
    root: Path, labels: dict[str, list[str] | None], suffix: str = ".jpg", split: str = "train2017"
) -> build_set.YoloSource:
    """A YOLO layout ``root/images/<split>`` + ``root/labels/<split>``; ``None`` = no label file."""
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    label_dir.mkdir(parents=True, exist_ok=True)
    for stem, lines in labels.items():
        _write_image(image_dir / f"{stem}{suffix}")
        if lines is not None:
            (label_dir / f"{stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return build_set.YoloSource(image_dir, label_dir)


#: A dog: a rectangle from (0.25, 0.2) to (0.75, 0.7) of the image, i.e. 20 x 30 px at 40 x 60.
DOG_POINTS = [(0.25, 0.2), (0.75, 0.2), (0.75, 0.7), (0.25, 0.7)]


def _read_output(output: Path) -> dict:
    return json.loads((output / "instances.json").read_text(encoding="utf-8"))


def test_yolo_classes_are_coco_names_in_yolo_order(real_samples: Path) -> None:
    data = json.loads((real_samples / "coco" / "annotations.json").read_text(encoding="utf-8"))
    coco_names = tuple(category["name"] for category in sorted(data["categories"], key=lambda item: item["id"]))
    assert coco_names == build_set.YOLO_CLASSES
    assert set(build_set.COCO_TO_VOC) <= set(build_set.YOLO_CLASSES)


def test_yolo_source_polygon_in_pixels_resized(tmp_path: Path) -> None:
    source = _yolo_source(tmp_path / "yolo", {
        "000000100001": [_yolo_line(DOG, DOG_POINTS), _yolo_line(ELEPHANT, [(0.1, 0.1), (0.2, 0.1), (0.2, 0.2)])],
    })
    output = tmp_path / "out"
    counts = build_set.build([source], output, long_side=30)  # 60 x 40 -> 30 x 20: factor 0.5

    data = _read_output(output)
    assert counts["images"] == 1 and counts["instances"] == 1 and counts["dog"] == 1
    (image,) = data["images"]
    assert image == {"id": 1, "file_name": "000000100001.jpg", "height": 30, "width": 20, "coco_id": 100001}
    with Image.open(output / "images" / "000000100001.jpg") as picture:
        assert picture.size == (20, 30)
    (annotation,) = data["annotations"]  # the elephant is not a VOC class: dropped
    assert annotation["category_id"] == _voc_id("dog") == 12
    assert annotation["iscrowd"] == 0 and annotation["image_id"] == 1
    # In pixels of the 40 x 60 image (20 x 30 px rectangle at (10, 12)), then halved by the resize.
    assert annotation["segmentation"] == [[5.0, 6.0, 15.0, 6.0, 15.0, 21.0, 5.0, 21.0]]
    true_area = _polygon_area(annotation["segmentation"][0])
    assert true_area == pytest.approx(150.0)
    assert annotation["area"] == pytest.approx(true_area, rel=0.15)
    assert annotation["bbox"] == pytest.approx([5.0, 6.0, 10.0, 15.0], abs=1.0)
    assert [category["id"] for category in data["categories"]] == list(range(1, 21))


def test_yolo_source_keep_rule_and_missing_labels(tmp_path: Path) -> None:
    source = _yolo_source(tmp_path / "yolo", {
        "000000100001": [_yolo_line(ELEPHANT, DOG_POINTS)],  # only a non-VOC object: not kept
        "000000100002": None,  # no label file: no objects, not kept
        "000000100003": [],  # empty label file
        "holiday": ["", _yolo_line(TV, DOG_POINTS), "   "],  # blank lines are skipped
    }, suffix=".png")
    output = tmp_path / "out"
    counts = build_set.build([source], output, long_side=0)

    data = _read_output(output)
    assert [image["file_name"] for image in data["images"]] == ["holiday.png"]
    assert data["images"][0]["coco_id"] is None
    assert (data["images"][0]["height"], data["images"][0]["width"]) == (HEIGHT, WIDTH)
    assert counts["tvmonitor"] == 1 and data["annotations"][0]["category_id"] == _voc_id("tvmonitor")
    assert data["annotations"][0]["segmentation"] == [[10.0, 12.0, 30.0, 12.0, 30.0, 42.0, 10.0, 42.0]]
    assert sorted(path.name for path in (output / "images").iterdir()) == ["holiday.png"]


def _coco_source(root: Path) -> build_set.CocoSource:
    """A COCO val2017 source: a person (kept), an image with only an elephant (not kept)."""
    image_dir = root / "val2017"
    for name in ("000000200001.jpg", "000000200002.jpg"):
        _write_image(image_dir / name)
    person = [[4.0, 6.0, 36.0, 6.0, 36.0, 54.0, 4.0, 54.0]]
    data = {
        "images": [{"id": 200001, "file_name": "000000200001.jpg", "height": HEIGHT, "width": WIDTH},
                   {"id": 200002, "file_name": "000000200002.jpg", "height": HEIGHT, "width": WIDTH}],
        "annotations": [
            {"id": 7, "image_id": 200001, "category_id": 1, "segmentation": person, "iscrowd": 0},
            {"id": 8, "image_id": 200002, "category_id": 22, "segmentation": person, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 22, "name": "elephant"}],
    }
    annotation_file = root / "instances_val2017.json"
    annotation_file.write_text(json.dumps(data), encoding="utf-8")
    return build_set.CocoSource(annotation_file, image_dir)


def test_coco_and_yolo_sources_in_one_build(tmp_path: Path) -> None:
    coco = _coco_source(tmp_path / "coco")
    yolo = _yolo_source(tmp_path / "yolo", {"000000100001": [_yolo_line(DOG, DOG_POINTS)],
                                            "000000200001": [_yolo_line(TV, DOG_POINTS)]})
    output = tmp_path / "out"
    counts = build_set.build([coco, yolo], output, long_side=0)

    data = _read_output(output)
    assert [(image["file_name"], image["coco_id"]) for image in data["images"]] == [
        ("000000100001.jpg", 100001), ("000000200001.jpg", 200001)]
    # 000000200001.jpg is in both sources: the first (COCO: a person) wins over the YOLO one (a tv).
    assert [(item["image_id"], item["category_id"]) for item in data["annotations"]] == [
        (1, _voc_id("dog")), (2, _voc_id("person"))]
    assert counts["person"] == 1 and counts["dog"] == 1 and counts["tvmonitor"] == 0
    # A plain pair is still a COCO source, and gives the same output.
    plain_output = tmp_path / "plain"
    build_set.build([(coco.annotation_file, coco.image_dir), yolo], plain_output, long_side=0)
    assert (plain_output / "instances.json").read_bytes() == (output / "instances.json").read_bytes()


@pytest.mark.parametrize(("line", "problem"), [
    ("16 0.1 0.1 0.5 0.1 0.5", "odd number of coordinates"),
    ("16 0.1 0.1 0.5 0.5", "at least 3 points"),
    ("80 0.1 0.1 0.5 0.1 0.5 0.5", "class index 80"),
    ("-1 0.1 0.1 0.5 0.1 0.5 0.5", "class index -1"),
    ("16 0.1 0.1 0.5 x 0.5 0.5", "'x' is not a number"),
    ("dog 0.1 0.1 0.5 0.1 0.5 0.5", "'dog' is not a number"),
    ("16 0.1 nan 0.5 0.1 0.5 0.5", "not a finite number"),
])
def test_malformed_yolo_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    source = _yolo_source(tmp_path / "yolo", {"000000100001": [_yolo_line(DOG, DOG_POINTS), line]})
    with pytest.raises(ValueError, match="line 2") as error:
        build_set.build([source], tmp_path / "out")
    assert "000000100001.txt" in str(error.value) and problem in str(error.value)


def test_coco128_refused_unless_allowed(tmp_path: Path) -> None:
    source = _yolo_source(tmp_path / "yolo", {"000000000650": [_yolo_line(PERSON, DOG_POINTS)],
                                              "000000000651": [_yolo_line(DOG, DOG_POINTS)]})
    with pytest.raises(ValueError, match=r"000000000650\.jpg belongs to coco128"):
        build_set.build([source], tmp_path / "refused")
    counts = build_set.build([source], tmp_path / "allowed", long_side=0, allow_coco128=True)
    assert counts["images"] == 2 and counts["person"] == 1 and counts["dog"] == 1
    assert [image["coco_id"] for image in _read_output(tmp_path / "allowed")["images"]] == [650, 651]
    # val2017 ids up to 650 are not coco128's
    val_source = _yolo_source(tmp_path / "val", {"000000000139": [_yolo_line(DOG, DOG_POINTS)]}, split="val2017")
    assert build_set.build([val_source], tmp_path / "val_out")["images"] == 1


def test_coco128_refused_in_coco_train2017_unless_allowed(tmp_path: Path) -> None:
    image_dir = tmp_path / "train2017"
    _write_image(image_dir / "000000000009.jpg")
    annotation_file = tmp_path / "instances_train2017.json"
    annotation_file.write_text(json.dumps({
        "images": [{"id": 9, "file_name": "000000000009.jpg", "height": HEIGHT, "width": WIDTH}],
        "annotations": [{"id": 1, "image_id": 9, "category_id": 1, "iscrowd": 0,
                         "segmentation": [[4.0, 6.0, 36.0, 6.0, 36.0, 54.0]]}],
        "categories": [{"id": 1, "name": "person"}],
    }), encoding="utf-8")
    source = build_set.CocoSource(annotation_file, image_dir)
    with pytest.raises(ValueError, match="belongs to coco128"):
        build_set.build([source], tmp_path / "refused")
    assert build_set.build([source], tmp_path / "allowed", allow_coco128=True)["person"] == 1


def test_main_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    coco = _coco_source(tmp_path / "coco")
    yolo = _yolo_source(tmp_path / "yolo", {"000000100001": [_yolo_line(DOG, DOG_POINTS)],
                                            "000000100002": [_yolo_line(PERSON, DOG_POINTS)]})
    output = tmp_path / "out"
    assert build_set.main([
        "--yolo-source", str(yolo.image_dir), str(yolo.label_dir),
        "--source", str(coco.annotation_file), str(coco.image_dir),
        "--out", str(output), "--long-side", "30", "--skip-images", "1",
    ]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["images"] == 2 and counts["person"] == 2 and counts["dog"] == 0
    data = _read_output(output)
    assert [image["file_name"] for image in data["images"]] == ["000000100002.jpg", "000000200001.jpg"]
    assert all((image["height"], image["width"]) == (30, 20) for image in data["images"])


def test_main_needs_a_source(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        build_set.main(["--out", str(tmp_path / "out")])


# ---------------------------------------------------------------------------------------------------
# Oxford-IIIT Pet layout

#: A trimap of HEIGHT x WIDTH: background (2), a pet (1) at rows 10-39, columns 10-29, a 2-px border (3) around it.
def _trimap(pet: bool = True) -> np.ndarray:
    trimap = np.full((HEIGHT, WIDTH), 2, dtype=np.uint8)
    if pet:
        trimap[8:42, 8:32] = 3
        trimap[10:40, 10:30] = 1
    return trimap


def _pets_layout(root: Path, listed: dict[str, int], unlisted: tuple[str, ...] = ()) -> build_set.PetsSource:
    """``images/<name>.jpg`` (random RGB) with ``annotations/trimaps/<name>.png`` for every name;
    ``listed`` names are in ``annotations/list.txt`` with their species (1 cat, 2 dog)."""
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for name in (*listed, *unlisted):
        _write_image(root / "images" / f"{name}.jpg")
        Image.fromarray(_trimap()).save(root / "annotations" / "trimaps" / f"{name}.png")
    lines = ["#Image CLASS-ID SPECIES BREED ID"] + [f"{name} 1 {species} 1" for name, species in listed.items()]
    (root / "annotations" / "list.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return build_set.PetsSource(root)


def test_pets_source_pet_instance_border_void_and_odd_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from irn_core.data.coco import VOID_LABEL, COCODataset

    source = _pets_layout(tmp_path / "pets", {"Bengal_1": 1, "beagle_1": 2, "Bengal_2": 1, "Bengal_3": 1,
                                              "Bengal_4": 1, "Bengal_5": 1}, unlisted=("pug_1",))
    images = source.root / "images"
    gray = np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
    Image.fromarray(gray).save(images / "beagle_1.jpg")  # a grey-level JPEG: converted
    opaque = np.full((HEIGHT, WIDTH, 4), 255, dtype=np.uint8)
    opaque[:, :, 0] = 90
    Image.fromarray(opaque).save(images / "Bengal_2.jpg", format="PNG")  # an opaque RGBA PNG named .jpg: converted
    see_through = opaque.copy()
    see_through[0, 0, 3] = 0
    Image.fromarray(see_through).save(images / "Bengal_3.jpg", format="PNG")  # transparent pixels: skipped
    (images / "Bengal_4.jpg").write_bytes(b"not a picture")  # undecodable: skipped
    Image.fromarray(_trimap(pet=False)).save(source.root / "annotations" / "trimaps" / "Bengal_5.png")  # no pet
    (images / "Bengal_1.mat").write_bytes(b"MATLAB 5.0 MAT-file")  # not a photo: ignored
    output = tmp_path / "out"
    with caplog.at_level("INFO", logger="build_set"):
        counts = build_set.build([source], output, long_side=30)  # 60 x 40 -> 30 x 20

    assert counts["images"] == 4 and counts["cat"] == 2 and counts["dog"] == 2
    skipped = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert len(skipped) == 3
    assert "Bengal_3.jpg skipped: PNG RGBA with transparent pixels" in skipped[0]
    assert "Bengal_4.jpg skipped: not a decodable image" in skipped[1]
    assert "Bengal_5.jpg skipped: its trimap has no pet pixel" in skipped[2]
    assert "pug_1.jpg is not in list.txt: dog by its name" in caplog.text
    assert "1 files in images/ that are not photos ignored (Bengal_1.mat)" in caplog.text

    dataset = COCODataset(output / "images", output / "instances.json")
    assert dataset.ids() == ["Bengal_1", "Bengal_2", "beagle_1", "pug_1"]
    assert dataset.class_names[_voc_id("cat") - 1] == "cat" and dataset.class_names[_voc_id("dog") - 1] == "dog"
    for image_id in dataset.ids():
        assert dataset.image(image_id).shape == (30, 20, 3)
    assert dataset.class_labels("beagle_1").tolist() == [_voc_id("dog") - 1]
    assert dataset.class_labels("Bengal_2").tolist() == [_voc_id("cat") - 1]
    assert dataset.image("Bengal_2")[:, :, 0].mean() == pytest.approx(90, abs=3)  # the RGBA colour kept
    # The trimap resized nearest-neighbour: pet rows 5-19, columns 5-14; border 4-20 x 4-15 around it.
    expected = np.zeros((30, 20), dtype=np.uint8)
    expected[4:21, 4:16] = VOID_LABEL
    expected[5:20, 5:15] = _voc_id("cat")
    np.testing.assert_array_equal(dataset.semantic_mask("Bengal_1"), expected)
    masks, class_ids = dataset.instance_masks("Bengal_1")  # one object: the border is no instance
    assert masks.shape == (1, 30, 20) and class_ids.tolist() == [_voc_id("cat") - 1]
    np.testing.assert_array_equal(masks[0], expected == _voc_id("cat"))
    crowd = dataset.annotations("Bengal_1", crowd=True)
    assert len(crowd) == 1 and crowd[0]["category_id"] == _voc_id("cat")


def test_pets_source_bad_annotations_name_the_file(tmp_path: Path) -> None:
    source = _pets_layout(tmp_path / "pets", {"Bengal_1": 1})
    trimap = _trimap()
    trimap[0, 0] = 7
    Image.fromarray(trimap).save(source.root / "annotations" / "trimaps" / "Bengal_1.png")
    with pytest.raises(ValueError, match=r"Bengal_1\.png: trimap values \[7\]"):
        build_set.build([source], tmp_path / "out")
    Image.fromarray(_trimap()[:-1]).save(source.root / "annotations" / "trimaps" / "Bengal_1.png")
    with pytest.raises(ValueError, match=r"Bengal_1\.png: trimap size \(59, 40\) differs"):
        build_set.build([source], tmp_path / "out")
    (source.root / "annotations" / "list.txt").write_text("Bengal_1 1 3 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list\.txt, line 1: expected"):
        build_set.build([source], tmp_path / "out")


def test_pets_hidden_checks_refused_unless_allowed(tmp_path: Path) -> None:
    hidden = _pets_layout(tmp_path / "PetClassification" / "data", {"Bengal_1": 1})
    with pytest.raises(ValueError, match="PetClassification is kept aside"):
        build_set.build([hidden], tmp_path / "refused")
    assert build_set.build([hidden], tmp_path / "allowed", allow_hidden=True)["cat"] == 1
    penn_fudan = tmp_path / "PennFudanPed"
    (penn_fudan / "PedMasks").mkdir(parents=True)
    with pytest.raises(ValueError, match="Penn-Fudan"):
        build_set.build([build_set.PetsSource(penn_fudan)], tmp_path / "refused")


def test_val_split_by_id_hash_read_by_the_coco_reader(tmp_path: Path) -> None:
    from irn_core.data.coco import COCODataset

    names = {f"Bengal_{index}": 1 for index in range(1, 21)}
    source = _pets_layout(tmp_path / "pets", names)
    output = tmp_path / "out"
    counts = build_set.build([source], output, long_side=0, val_fraction=0.3)
    val_ids = sorted(name for name in names if build_set.is_val_image(name, 0.3))
    assert 0 < len(val_ids) < 20 and counts["val_images"] == len(val_ids) and counts["train_images"] == 20 - len(val_ids)
    # the rule: the first 8 bytes of the id's SHA-256 below the fraction; a larger fraction only adds images
    assert build_set.is_val_image("Bengal_1", 0.3) == (
        int.from_bytes(hashlib.sha256(b"Bengal_1").digest()[:8], "big") < 0.3 * 2**64)
    assert set(val_ids) <= {name for name in names if build_set.is_val_image(name, 0.6)}
    dataset = COCODataset(splits={split: (output / "images", output / f"instances_{split}.json")
                                  for split in ("train", "val")})
    assert sorted(dataset.ids("val")) == val_ids
    assert sorted(dataset.ids()) == sorted(names)
    whole = _read_output(output)
    merged = dataset.ground_truth("all")
    assert sorted(merged.getAnnIds()) == [annotation["id"] for annotation in whole["annotations"]]
    with pytest.raises(ValueError, match="between 0 and 1"):
        build_set.write_splits(output, 1.0)


def test_main_pets_with_yolo_and_val_fraction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _pets_layout(tmp_path / "pets", {"Bengal_1": 1, "beagle_1": 2})
    yolo = _yolo_source(tmp_path / "yolo", {"000000100001": [_yolo_line(DOG, DOG_POINTS)]})
    output = tmp_path / "out"
    assert build_set.main([
        "--pets-source", str(source.root), "--yolo-source", str(yolo.image_dir), str(yolo.label_dir),
        "--out", str(output), "--long-side", "30", "--val-fraction", "0.5",
    ]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["images"] == 3 and counts["cat"] == 1 and counts["dog"] == 2
    assert counts["train_images"] + counts["val_images"] == 3
    assert (output / "instances_train.json").is_file() and (output / "instances_val.json").is_file()
    with pytest.raises(SystemExit):
        build_set.main(["--pets-source", str(source.root), "--out", str(output), "--val-fraction", "1.5"])


def test_order_hash_picks_a_subset_across_sources_grouped_by_name(tmp_path: Path) -> None:
    cats = {f"Bengal_{index}": 1 for index in range(1, 9)}
    dogs = {f"beagle_{index}": 2 for index in range(1, 9)}
    source = _pets_layout(tmp_path / "pets", {**cats, **dogs})
    by_name = build_set.build([source], tmp_path / "by_name", long_side=0, max_images=8)
    assert by_name["cat"] == 8 and by_name["dog"] == 0  # upper-case cat breeds sort first
    by_hash = build_set.build([source], tmp_path / "by_hash", long_side=0, max_images=8, order="hash")
    expected = sorted([*cats, *dogs], key=lambda name: build_set.id_hash_fraction(name, build_set.ORDER_SALT))[:8]
    written = sorted(Path(image["file_name"]).stem for image in _read_output(tmp_path / "by_hash")["images"])
    assert written == sorted(expected)
    assert by_hash["cat"] == sum(name in cats for name in expected) and 0 < by_hash["cat"] < 8
    with pytest.raises(ValueError, match="order"):
        build_set.build([source], tmp_path / "bad", order="random")


def test_only_classes_and_max_per_class_balance_a_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cats = {f"Bengal_{index}": 1 for index in range(1, 7)}
    dogs = {f"beagle_{index}": 2 for index in range(1, 3)}
    pets = _pets_layout(tmp_path / "pets", {**cats, **dogs})
    person = [(0.1, 0.1), (0.3, 0.1), (0.3, 0.9), (0.1, 0.9)]
    yolo = _yolo_source(tmp_path / "yolo", {
        "000000100001": [_yolo_line(PERSON, person)],
        "000000100002": [_yolo_line(PERSON, person), _yolo_line(DOG, DOG_POINTS)],
        "000000100003": [_yolo_line(PERSON, person), _yolo_line(TV, DOG_POINTS)],  # a tv: left out
    })
    sources = [pets, yolo]
    only = build_set.build(sources, tmp_path / "only", long_side=0, only_classes=["cat", "dog", "person"])
    assert only["images"] == 10 and only["tvmonitor"] == 0 and only["person"] == 2
    capped = build_set.build(sources, tmp_path / "capped", long_side=0, only_classes=["cat", "dog", "person"],
                             max_per_class=2)
    written = [Path(image["file_name"]).stem for image in _read_output(tmp_path / "capped")["images"]]
    # name order: the two person photos (the second with a dog), two of the six cats, then one dog fills the
    # dogs: the second dog is left out
    assert written == ["000000100001", "000000100002", "Bengal_1", "Bengal_2", "beagle_1"]
    assert capped["cat"] == 2 and capped["dog"] == 2 and capped["person"] == 2
    with pytest.raises(ValueError, match=r"\['kitten'\] are not VOC classes"):
        build_set.build(sources, tmp_path / "bad", only_classes=["cat", "kitten"])
    with pytest.raises(ValueError, match="at least 1"):
        build_set.build(sources, tmp_path / "bad", max_per_class=0)
    assert build_set.main(["--pets-source", str(pets.root), "--out", str(tmp_path / "main"), "--long-side", "0",
                           "--only-classes", "dog", "--max-per-class", "1"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["images"] == 1 and counts["dog"] == 1 and counts["cat"] == 0


def test_mask_source_components_as_instances_specks_void_and_rescaled_masks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from irn_core.data.coco import VOID_LABEL, COCODataset

    images, masks = tmp_path / "humans" / "Training_Images", tmp_path / "humans" / "Ground_Truth"
    masks.mkdir(parents=True)
    two = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    two[4:30, 2:12] = 255  # 260 px, the larger person
    two[40:56, 20:36] = 255  # 256 px
    two[58, 38] = 255  # a 1-pixel speck (under 0.2% of the 2400 px): void
    _write_image(images / "1.jpg")
    Image.fromarray(two).save(masks / "1.png")
    _write_image(images / "2.jpg")
    half = np.zeros((HEIGHT // 2, WIDTH // 2), dtype=np.uint8)
    half[5:15, 5:10] = 1  # a mask at half the photo's size, values 0/1: resized to it
    Image.fromarray(half).save(masks / "2.png")
    _write_image(images / "3.jpg")
    Image.fromarray(np.zeros((HEIGHT, WIDTH), dtype=np.uint8)).save(masks / "3.png")  # empty: skipped
    _write_image(images / "4.jpg")  # no mask: skipped
    output = tmp_path / "out"
    with caplog.at_level("INFO", logger="build_set"):
        assert build_set.main(["--mask-source", str(images), str(masks), "person", "--out", str(output),
                               "--long-side", "0"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["images"] == 2 and counts["person"] == 3  # instances
    assert "3.jpg skipped: its mask is empty" in caplog.text and "4.jpg skipped: no mask 4.png" in caplog.text
    assert "2.png is 20x30, resized to its image's 40x60" in caplog.text
    dataset = COCODataset(output / "images", output / "instances.json")
    assert dataset.ids() == ["1", "2"]
    instance_masks, class_ids = dataset.instance_masks("1")
    assert class_ids.tolist() == [_voc_id("person") - 1] * 2
    larger = np.zeros((HEIGHT, WIDTH), dtype=bool)
    larger[4:30, 2:12] = True
    np.testing.assert_array_equal(instance_masks[0], larger)  # largest first
    assert instance_masks[1].sum() == 256
    semantic = dataset.semantic_mask("1")
    assert semantic[58, 38] == VOID_LABEL and (semantic == _voc_id("person")).sum() == 516
    expected = np.zeros((HEIGHT, WIDTH), dtype=bool)
    expected[10:30, 10:20] = True
    np.testing.assert_array_equal(dataset.instance_masks("2")[0][0], expected)


def test_mask_source_bad_masks_and_hidden_check(tmp_path: Path) -> None:
    images, masks = tmp_path / "Training_Images", tmp_path / "Ground_Truth"
    masks.mkdir(parents=True)
    _write_image(images / "1.jpg")
    Image.fromarray(np.full((HEIGHT, HEIGHT), 255, dtype=np.uint8)).save(masks / "1.png")
    with pytest.raises(ValueError, match=r"1\.png: mask size \(60, 60\) is not its image's \(60, 40\)"):
        build_set.build([build_set.MaskSource(images, masks, "person")], tmp_path / "out")
    with pytest.raises(ValueError, match="'human' is not a VOC class"):
        build_set.build([build_set.MaskSource(images, masks, "human")], tmp_path / "out")
    penn_fudan = tmp_path / "PennFudanPed"
    (penn_fudan / "PNGImages").mkdir(parents=True)
    (penn_fudan / "PedMasks").mkdir()
    with pytest.raises(ValueError, match="Penn-Fudan"):
        build_set.build([build_set.MaskSource(penn_fudan / "PNGImages", penn_fudan / "PedMasks", "person")],
                        tmp_path / "out")
