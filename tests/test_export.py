"""Exports: COCO instances JSON through pycocotools, VOC-palette PNGs, a dataset in COCO format."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from irn_core import export
from irn_core.data.coco import COCODataset, quiet_pycocotools
from irn_core.data.images import read_label_png
from irn_core.data.palette import voc_palette
from irn_core.errors import InputError
from irn_core.evaluation import coco_mask_ap
from irn_core.store import ShardWriter

sys.path.insert(0, str(Path(__file__).resolve().parent / "engine"))
from fake_dataset import TinyDataset  # noqa: E402

CLASSES = ["cat", "dog", "bird"]


def _disk(size: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: size[0], : size[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _images() -> list[export.ImageInstances]:
    """Three images: overlapping instances with scores, one empty mask, one image without instances."""
    first = np.stack([_disk((30, 40), (10, 12), 6), _disk((30, 40), (15, 18), 7), np.zeros((30, 40), bool)])
    second = np.stack([_disk((25, 20), (12, 9), 5)])
    return [
        export.ImageInstances("a", "a.jpg", (30, 40), first, np.array([0, 2, 1]), np.array([0.9, 0.4, 0.7])),
        export.ImageInstances("b", "b.jpg", (25, 20), second, np.array([1]), np.array([0.5])),
        export.ImageInstances("c", "c.jpg", (12, 14), np.zeros((0, 12, 14), bool), np.zeros(0, np.int64),
                              np.zeros(0)),
    ]


def _load(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_coco_json_loads_in_pycocotools_and_decodes_to_the_masks(tmp_path: Path) -> None:
    images = _images()
    path = tmp_path / "out.json"
    export.write_coco_json(path, export.instances_to_coco(images, CLASSES))
    coco = _load(path)
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [(1, "cat"), (2, "dog"), (3, "bird")]
    records = {record["file_name"]: record for record in coco.dataset["images"]}
    assert (records["a.jpg"]["height"], records["a.jpg"]["width"]) == (30, 40) and len(records) == 3
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[records["a.jpg"]["id"]]))
    assert len(annotations) == 2  # the empty mask has no box and is left out
    for annotation, index in zip(annotations, [0, 1]):
        mask = images[0].masks[index]
        with quiet_pycocotools():
            np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), mask)
        assert isinstance(annotation["segmentation"]["counts"], str)
        rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert annotation["bbox"] == [columns[0], rows[0], columns[-1] - columns[0] + 1, rows[-1] - rows[0] + 1]
        assert annotation["area"] == mask.sum() and annotation["iscrowd"] == 0
        assert annotation["category_id"] == images[0].class_ids[index] + 1
        assert annotation["score"] == pytest.approx(images[0].scores[index])
    assert coco.getAnnIds(imgIds=[records["c.jpg"]["id"]]) == []
    assert len({annotation["id"] for annotation in coco.dataset["annotations"]}) == 3


def test_coco_json_reads_back(tmp_path: Path) -> None:
    images = _images()
    path = tmp_path / "out.json"
    export.write_coco_json(path, export.instances_to_coco(images, CLASSES, min_score=0.45))
    names, read = export.read_coco_instances(path)
    assert names == CLASSES and sorted(read) == ["a", "b", "c"]
    np.testing.assert_array_equal(read["a"].masks, images[0].masks[[0]])  # 0.4 < min_score, empty mask dropped
    np.testing.assert_array_equal(read["a"].class_ids, [0])
    np.testing.assert_allclose(read["a"].scores, [0.9])
    np.testing.assert_array_equal(read["b"].masks, images[1].masks)
    assert read["c"].masks.shape == (0, 12, 14)


def test_coco_eval_of_the_ground_truth_against_itself_is_perfect(tmp_path: Path) -> None:
    dataset = TinyDataset(6)
    image_ids = dataset.ids("train")
    data = export.ground_truth_coco(dataset, image_ids)
    path = tmp_path / "gt.json"
    export.write_coco_json(path, data)
    ground_truth = _load(path)
    results = export.coco_results(data)
    assert results and all(result["score"] == 1.0 for result in results)
    with contextlib.redirect_stdout(io.StringIO()), quiet_pycocotools():
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)  # AP@[0.5:0.95]
    perfect = {image_id: dataset.instance_masks(image_id) + (np.ones(len(dataset.instance_masks(image_id)[1])),)
               for image_id in image_ids}
    assert coco_mask_ap(perfect, export.coco_object(data))["AP"] == pytest.approx(1.0)


def test_store_export_equals_the_hdf5_masks(tmp_path: Path) -> None:
    dataset = TinyDataset(3)
    shard = tmp_path / "instances.h5"
    stored = {}
    with ShardWriter(shard, product="instances", config_hash="x", shard_index=0) as writer:
        for image_id in dataset.ids("train"):
            masks, class_ids = dataset.instance_masks(image_id)
            scores = np.linspace(0.9, 0.0, len(class_ids)).astype(np.float32)  # the last scores 0 (a fragment)
            stored[image_id] = (masks, class_ids, scores)
            writer.add(image_id, {"masks_s1": masks, "class_ids": class_ids, "scores": scores},
                       {"height": masks.shape[1], "width": masks.shape[2]})
    data = export.store_to_coco([shard], dataset, product="instances", min_score=1e-5)
    coco = export.coco_object(data)
    for record in data["images"]:
        image_id = Path(record["file_name"]).stem
        masks, class_ids, scores = stored[image_id]
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[record["id"]]))
        kept = scores >= 1e-5
        assert len(annotations) == kept.sum()
        for annotation, mask, class_id in zip(annotations, masks[kept], class_ids[kept]):
            with quiet_pycocotools():
                np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), mask)
            assert annotation["category_id"] == class_id + 1


def test_bad_instances_raise_naming_the_image() -> None:
    bad_class = export.ImageInstances("img7", "img7.jpg", (4, 4), np.ones((1, 4, 4), bool), np.array([5]))
    with pytest.raises(InputError, match="img7.*class id 5"):
        export.instances_to_coco([bad_class], CLASSES)
    bad_size = export.ImageInstances("img8", "img8.jpg", (4, 5), np.ones((1, 4, 4), bool), np.array([0]))
    with pytest.raises(InputError, match="img8"):
        export.instances_to_coco([bad_size], CLASSES)
    with pytest.raises(InputError, match="254"):
        export.instance_maps(np.zeros((255, 2, 2), bool), np.zeros(255, np.int64), image_id="many")


def test_instance_pngs_round_trip_and_overlap_rule(tmp_path: Path) -> None:
    size = (20, 24)
    disjoint = np.stack([_disk(size, (5, 5), 3), _disk(size, (14, 17), 4), _disk(size, (4, 18), 2)])
    class_ids = np.array([2, 0, 2])
    export.instance_pngs(tmp_path / "o.png", tmp_path / "c.png", disjoint, class_ids, np.array([0.2, 0.9, 0.5]))
    with Image.open(tmp_path / "o.png") as image:
        assert image.mode == "P" and tuple(image.getpalette()[:768]) == voc_palette()
    masks, read_classes = export.read_instance_pngs(tmp_path / "o.png", tmp_path / "c.png")
    np.testing.assert_array_equal(masks, disjoint)
    np.testing.assert_array_equal(read_classes, class_ids)

    overlapping = np.stack([_disk(size, (10, 10), 6), _disk(size, (10, 12), 3)])
    objects, classes = export.instance_maps(overlapping, np.array([0, 1]), np.array([0.3, 0.8]))
    assert objects[10, 12] == 2 and classes[10, 12] == 2  # higher score on top
    objects, _ = export.instance_maps(overlapping, np.array([0, 1]), np.array([0.8, 0.3]))
    assert objects[10, 12] == 1 and not (objects == 2).any()  # covered by a better instance
    objects, _ = export.instance_maps(overlapping, np.array([0, 1]), np.array([0.5, 0.5]))
    assert objects[10, 12] == 1  # ties: the earlier instance


def test_semantic_png_round_trip(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).choice([0, 1, 2, 255], size=(9, 11)).astype(np.uint8)
    export.semantic_png(tmp_path / "s.png", labels)
    np.testing.assert_array_equal(read_label_png(tmp_path / "s.png"), labels)


def test_export_pngs_from_shards(tmp_path: Path) -> None:
    dataset = TinyDataset(2)
    semantic_shard, instance_shard = tmp_path / "semantic.h5", tmp_path / "instances.h5"
    with ShardWriter(semantic_shard, product="semantic", config_hash="x", shard_index=0) as semantic, ShardWriter(
        instance_shard, product="instances", config_hash="x", shard_index=0
    ) as instances:
        for image_id in dataset.ids("train"):
            masks, class_ids = dataset.instance_masks(image_id)
            semantic.add(image_id, {"semantic_s1": dataset.semantic_mask(image_id)})
            instances.add(image_id, {"masks_s1": masks, "class_ids": class_ids,
                                     "scores": np.ones(len(class_ids), np.float32)})
    assert export.export_pngs([semantic_shard], tmp_path / "sem", product="semantic") == 2
    assert export.export_pngs([instance_shard], tmp_path / "ins", product="instances") == 2
    for image_id in dataset.ids("train"):
        np.testing.assert_array_equal(read_label_png(tmp_path / "sem" / "SegmentationClass" / f"{image_id}.png"),
                                      dataset.semantic_mask(image_id))
        masks, class_ids = export.read_instance_pngs(tmp_path / "ins" / "SegmentationObject" / f"{image_id}.png",
                                                     tmp_path / "ins" / "SegmentationClass" / f"{image_id}.png")
        expected_masks, expected_classes = dataset.instance_masks(image_id)
        np.testing.assert_array_equal(masks, expected_masks)
        np.testing.assert_array_equal(class_ids, expected_classes)


def test_a_dataset_written_in_coco_format_reads_back_with_splits(tmp_path: Path) -> None:
    dataset = TinyDataset(5)
    ids = dataset.ids("train")
    written = export.export_coco_dataset(dataset, {"train": ids[:3], "val": ids[3:]}, tmp_path / "coco")
    coco = COCODataset(splits={name: (files["image_dir"], files["annotation_file"]) for name, files in written.items()})
    assert coco.splits == ["train", "val"] and coco.ids("train") == ids[:3] and coco.ids("val") == ids[3:]
    assert coco.ids("all") == ids and coco.class_names == dataset.class_names
    for image_id in ids:
        np.testing.assert_array_equal(coco.image(image_id), dataset.image(image_id))  # PNG: lossless
        masks, class_ids = coco.instance_masks(image_id)
        expected_masks, expected_classes = dataset.instance_masks(image_id)
        np.testing.assert_array_equal(masks, expected_masks)
        np.testing.assert_array_equal(class_ids, expected_classes)
        np.testing.assert_array_equal(coco.class_labels(image_id), dataset.class_labels(image_id))
    assert coco.ground_truth("val").getImgIds() and json.loads(written["val"]["annotation_file"].read_text())
    with pytest.raises(Exception, match="ground_truth"):
        _ = coco.coco
    encoded = coco.ground_truth("train").dataset["annotations"][0]["segmentation"]
    assert mask_utils.area({**encoded, "counts": encoded["counts"].encode()}) > 0
