"""COCO reader on the real val2017 samples and on generated annotation files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from irn_core.data.coco import COCODataset, quiet_pycocotools
from irn_core.errors import DatasetError


@pytest.fixture(scope="module")
def real_coco(real_samples: Path) -> COCODataset:
    return COCODataset(real_samples / "coco" / "images", real_samples / "coco" / "annotations.json")


def test_real_ids_classes_and_category_mapping(real_coco: COCODataset, repo_root: Path) -> None:
    assert real_coco.ids() == [
        "000000000089",
        "000000128372",
        "000000194216",
        "000000343934",
        "000000404249",
        "000000464689",
    ]
    assert real_coco.ids("all") == real_coco.ids()
    with pytest.raises(DatasetError, match="holds one split"):
        real_coco.ids("train")
    assert real_coco.num_classes == 80
    assert real_coco.class_names[0] == "person" and real_coco.class_names[-1] == "toothbrush"
    assert real_coco.category_id(0) == 1 and real_coco.category_id(79) == 90
    assert real_coco.class_id(90) == 79 and real_coco.class_id(13) == 11  # id 12 is a gap: id 13 is the 12th category
    assert all(real_coco.class_id(real_coco.category_id(k)) == k for k in range(80))
    table = (repo_root / "resources" / "coco_classes.txt").read_text().split("\n")
    assert table[:80] == real_coco.class_names


def test_real_labels_and_instances(real_coco: COCODataset) -> None:
    # 000000128372: person (1), car (3), bus (6), handbag (31) -> contiguous 0, 2, 5, 26.
    np.testing.assert_array_equal(real_coco.class_labels("000000128372"), [0, 2, 5, 26])
    masks, class_ids = real_coco.instance_masks("000000128372")
    assert masks.shape == (16, 427, 640) and masks.dtype == bool and class_ids.dtype == np.int64
    assert sorted(set(class_ids.tolist())) == [0, 2, 5, 26]
    # Each mask agrees with pycocotools' own rasterisation of its annotation.
    annotations = real_coco.annotations("000000128372")
    for mask, annotation in zip(masks, annotations):
        with quiet_pycocotools():
            expected = real_coco.coco.annToMask(annotation).astype(bool)
        np.testing.assert_array_equal(mask, expected)
    assert real_coco.image("000000128372").shape == (427, 640, 3)
    assert real_coco.image_size("000000404249") == (640, 427)


def test_image_without_annotations(real_coco: COCODataset) -> None:
    masks, class_ids = real_coco.instance_masks("000000000089")
    assert masks.shape == (0, 480, 640) and class_ids.shape == (0,)
    assert real_coco.class_labels("000000000089").shape == (0,)
    assert (real_coco.semantic_mask("000000000089") == 0).all()


def test_crowd_is_excluded_from_instances_and_void_in_semantic_map(real_coco: COCODataset) -> None:
    image_id = "000000464689"  # 13 non-crowd "book" annotations (category 84 -> class 73) and one crowd
    masks, class_ids = real_coco.instance_masks(image_id)
    assert masks.shape[0] == 13
    crowd = real_coco.annotations(image_id, crowd=True)
    assert len(crowd) == 1
    assert len(real_coco.annotations(image_id, crowd=None)) == 14
    semantic = real_coco.semantic_mask(image_id)
    with quiet_pycocotools():
        crowd_mask = real_coco.coco.annToMask(crowd[0]).astype(bool)
    instances = masks.any(axis=0)
    assert (semantic[crowd_mask & ~instances] == 255).all()
    assert (semantic[instances] == class_ids[0] + 1).all()
    assert (semantic[~crowd_mask & ~instances] == 0).all()


def test_semantic_overlap_rule_smaller_objects_on_top(real_coco: COCODataset) -> None:
    image_id = "000000128372"
    masks, class_ids = real_coco.instance_masks(image_id)
    semantic = real_coco.semantic_mask(image_id)
    # Restatement: for every pixel, the class of the smallest instance covering it.
    areas = masks.sum(axis=(1, 2))
    expected = np.zeros_like(semantic)
    best_area = np.full(semantic.shape, np.inf)
    for mask, class_id, area in zip(masks, class_ids, areas):
        smaller = mask & (area < best_area)
        expected[smaller] = class_id + 1
        best_area[smaller] = area
    np.testing.assert_array_equal(semantic, expected)
    overlap = masks.sum(axis=0) > 1
    assert overlap.any()  # the bus and the persons in front of it overlap


# ---------------------------------------------------------------------------------------------- generated files


def write_coco(tmp_path: Path, images: list[dict], annotations: list[dict], categories: list[dict] | None = None) -> Path:
    path = tmp_path / "instances.json"
    categories = categories or [{"id": 5, "name": "five"}, {"id": 2, "name": "two"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def square(x0: int, y0: int, size: int) -> list[list[float]]:
    return [[x0, y0, x0 + size, y0, x0 + size, y0 + size, x0, y0 + size]]


def test_generated_2014_style_names_rle_and_category_order(tmp_path: Path) -> None:
    image_dir = tmp_path / "val2014"
    image_dir.mkdir()
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(image_dir / "COCO_val2014_000000000042.jpg")
    rle_mask = np.zeros((12, 16), np.uint8, order="F")
    rle_mask[2:5, 10:14] = 1
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    rle["counts"] = rle["counts"].decode("ascii")
    annotation_file = write_coco(
        tmp_path,
        [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "height": 12, "width": 16}],
        [
            {"id": 7, "image_id": 42, "category_id": 5, "iscrowd": 0, "segmentation": rle, "area": 12.0, "bbox": [10, 2, 4, 3]},
            {"id": 3, "image_id": 42, "category_id": 2, "iscrowd": 0, "segmentation": square(1, 1, 6), "area": 36.0, "bbox": [1, 1, 6, 6]},
        ],
    )
    dataset = COCODataset(image_dir, annotation_file)
    assert dataset.ids() == ["COCO_val2014_000000000042"]
    # Categories sorted by id: 2 -> class 0 ("two"), 5 -> class 1 ("five").
    assert dataset.class_names == ["two", "five"]
    assert dataset.category_id(1) == 5
    masks, class_ids = dataset.instance_masks("COCO_val2014_000000000042")
    assert class_ids.tolist() == [0, 1]  # annotation-id order: 3 then 7
    np.testing.assert_array_equal(masks[1], rle_mask.astype(bool))
    semantic = dataset.semantic_mask("COCO_val2014_000000000042")
    assert semantic[3, 12] == 2 and semantic[3, 3] == 1 and semantic[10, 1] == 0
    assert dataset.coco_image_id("COCO_val2014_000000000042") == 42


def test_generated_errors(tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(image_dir / "a.jpg")
    duplicate = write_coco(
        tmp_path,
        [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}, {"id": 2, "file_name": "sub/a.jpg", "height": 10, "width": 10}],
        [],
    )
    with pytest.raises(DatasetError, match=r"instances\.json: image id a listed twice \(COCO ids 1 and 2\)"):
        COCODataset(image_dir, duplicate)
    unknown = write_coco(
        tmp_path,
        [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}],
        [{"id": 9, "image_id": 1, "category_id": 77, "iscrowd": 0, "segmentation": square(0, 0, 3), "area": 9, "bbox": [0, 0, 3, 3]}],
    )
    with pytest.raises(DatasetError, match="annotation 9 names unknown category 77"):
        COCODataset(image_dir, unknown)
    wrong_size = write_coco(
        tmp_path,
        [{"id": 1, "file_name": "a.jpg", "height": 11, "width": 10}, {"id": 2, "file_name": "b.jpg", "height": 5, "width": 5}],
        [],
    )
    dataset = COCODataset(image_dir, wrong_size)
    with pytest.raises(DatasetError, match=r"a\.jpg \(image id a\): image size \(10, 10\) differs from \(11, 10\)"):
        dataset.image("a")
    with pytest.raises(DatasetError, match=r"b\.jpg \(image id b\): image file is missing"):
        dataset.image("b")
    with pytest.raises(DatasetError, match="image id c is not in the annotation file"):
        dataset.image_size("c")
    with pytest.raises(DatasetError, match="not found"):
        COCODataset(image_dir, tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"broken\.json: unreadable COCO annotation file"):
        COCODataset(image_dir, tmp_path / "broken.json")


def _split_files(tmp_path: Path, val_annotation_id: int) -> dict[str, tuple[Path, Path]]:
    """Train (image 1, annotation 1) and val (image 2, annotation ``val_annotation_id``) files over one folder."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    splits = {}
    for split, image_id, annotation_id in (("train", 1, 1), ("val", 2, val_annotation_id)):
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(image_dir / f"{split}_photo.jpg")
        folder = tmp_path / split
        folder.mkdir()
        annotation_file = write_coco(
            folder,
            [{"id": image_id, "file_name": f"{split}_photo.jpg", "height": 10, "width": 10}],
            [{"id": annotation_id, "image_id": image_id, "category_id": 2, "iscrowd": 0,
              "segmentation": square(1, 1, 4), "area": 16.0, "bbox": [1, 1, 4, 4]}],
        )
        splits[split] = (image_dir, annotation_file)
    return splits


def test_ground_truth_of_all_merges_the_split_files(tmp_path: Path) -> None:
    dataset = COCODataset(splits=_split_files(tmp_path, val_annotation_id=2))
    assert dataset.ids() == ["train_photo", "val_photo"] and dataset.ids("val") == ["val_photo"]
    merged = dataset.ground_truth("all")
    assert merged is dataset.ground_truth(None)
    assert sorted(merged.getImgIds()) == [1, 2] and sorted(merged.getAnnIds()) == [1, 2]
    assert sorted(merged.getCatIds()) == [2, 5]
    assert dataset.ground_truth("val").getImgIds() == [2]
    with pytest.raises(DatasetError, match="no split 'test'"):
        dataset.ground_truth("test")


def test_ground_truth_of_all_refuses_shared_annotation_ids(tmp_path: Path) -> None:
    dataset = COCODataset(splits=_split_files(tmp_path, val_annotation_id=1))
    with pytest.raises(DatasetError, match="annotation id 1 is also in"):
        dataset.ground_truth("all")
