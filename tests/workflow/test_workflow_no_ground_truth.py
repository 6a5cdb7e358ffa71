"""A run on photos with image-level labels only (``evaluation.ground_truth: false``) with the real Snakemake:
a COCO-format set whose annotations carry only ``category_id`` -> CAMs -> IRNet -> pseudo labels ->
the ground-truth-free summary, the report and the exports, and no evaluation file. Also the DAG with the downstream
models (a dry run) and the dataset check without masks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import pytest
import yaml

from irn_core.config import validate_config
from irn_core.data.check import check_dataset
from irn_core.data.coco import COCODataset
from irn_core.errors import DatasetError

from .test_workflow import TINY_CONFIG, snakemake
from .test_workflow_coco import DEEPLAB, MASKRCNN, SYNTHETIC, write_synthetic_coco

SPLITS = ("train", "val")


def _strip_segmentation(path: Path) -> None:
    """Keep only image-level labels: every annotation becomes {id, image_id, category_id}."""
    data = json.loads(path.read_text())
    data["annotations"] = [{key: annotation[key] for key in ("id", "image_id", "category_id")}
                           for annotation in data["annotations"]]
    path.write_text(json.dumps(data))


def _config(ground_truth: bool, **extra: object) -> dict:
    return {
        **{key: value for key, value in TINY_CONFIG.items() if key not in ("dataset", "name")},
        "name": "photos",
        "shard_size": 9,
        "dataset": {
            "kind": "coco",  # no root: the splits name their folders (the report and export read those)
            "coco_splits": {split: {"annotation_file": f"data/coco/annotations/instances_{split}.json",
                                    "image_dir": f"data/coco/{split}"} for split in SPLITS},
            "train_split": "train",
            "infer_split": "train",
        },
        "evaluation": {"ground_truth": ground_truth},
        "report": {"random_images": 2},
        **extra,
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with ``data/coco``: the synthetic set as COCO files without any segmentation."""
    workdir = tmp_path_factory.mktemp("no_ground_truth")
    write_synthetic_coco(workdir)
    for split in SPLITS:
        _strip_segmentation(workdir / "data" / "coco" / "annotations" / f"instances_{split}.json")
    return workdir


@pytest.fixture(scope="module")
def photos_run(photos: Path) -> Path:
    path = photos / "photos.yaml"
    path.write_text(yaml.safe_dump(_config(False)))
    snakemake(photos, path, "all", "export")
    return photos / "results" / "photos"


def test_labels_only_coco_file_reads_labels_and_names_missing_masks(photos: Path) -> None:
    root = photos / "data" / "coco"
    dataset = COCODataset(root / "train", root / "annotations" / "instances_train.json")
    image_id = dataset.ids()[0]
    assert len(dataset.class_labels(image_id)) > 0
    with pytest.raises(DatasetError, match=rf"instances_train.json \(image id {image_id}\): annotation \d+ has no "
                       "segmentation.*evaluation.ground_truth: false"):
        dataset.semantic_mask(image_id)


def test_data_check_needs_no_masks_without_ground_truth(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(photos)
    without = check_dataset(validate_config(_config(False), source="test"), progress=False)
    assert without.ok, without.problems
    assert sum(split.ids for split in without.splits) == SYNTHETIC["num_train"]
    with_truth = check_dataset(validate_config(_config(True), source="test"), progress=False)
    assert not with_truth.ok
    assert all("has no segmentation" in problem.problem for problem in with_truth.problems)


@pytest.mark.slow  # one tiny Snakemake run, about 90 s on 2 shared cores
def test_run_without_ground_truth_makes_pseudo_labels_summary_and_report(photos_run: Path) -> None:
    for product in ("semantic", "instances"):
        shards = sorted((photos_run / product).glob("shard-*.h5"))
        assert shards
        with h5py.File(shards[0]) as handle:
            assert len(json.loads(handle.attrs["image_ids"])) == SYNTHETIC["num_train"]
    evaluation = sorted(path.name for path in (photos_run / "evaluation").iterdir())
    assert evaluation == ["summary.md"]  # no evaluation file
    summary = (photos_run / "evaluation" / "summary.md").read_text()
    assert "without ground truth" in summary and "mIoU" not in summary.split("## Images")[1]
    assert re.search(r"\| train +\| train +\| +6 \|", summary)  # image counts per role
    assert "CAM foreground fraction against the background threshold" in summary
    assert re.search(r"\| 0\.15 +\| [\d.]+ +\| cam\.eval_threshold", summary)
    assert "foreground share (%)" in summary and "images without instances" in summary
    assert "## Stage diagnostics" in summary and "| cam " in summary
    exported = json.loads((photos_run / "export" / "coco" / "instances_infer.json").read_text())
    assert len(exported["images"]) == SYNTHETIC["num_train"]
    assert len(list((photos_run / "export" / "png" / "semantic").glob("*/*.png"))) == SYNTHETIC["num_train"]
    page = (photos_run / "report" / "index.html").read_text()
    assert "Summary without ground truth" in page and "ground truth (semantic)" not in page
    assert "Per-class" not in page


def test_dag_without_ground_truth_keeps_downstream_models_and_drops_evaluations(photos: Path) -> None:
    config = _config(False, deeplab=DEEPLAB, maskrcnn=MASKRCNN)
    config["name"] = "photos_downstream"
    config["dataset"] = {**config["dataset"], "downstream_split": "train", "val_split": "val"}
    path = photos / "downstream.yaml"
    path.write_text(yaml.safe_dump(config))
    planned = snakemake(photos, path, "--dry-run", "--quiet", "rules").stdout
    rules = set(re.findall(r"^(\w+)\s+\d+$", planned, flags=re.MULTILINE))
    assert {"train_deeplab_pseudo", "deeplab_infer_pseudo", "train_maskrcnn", "maskrcnn_infer", "summary",
            "report", "pseudo_labels"} <= rules, planned
    assert not {rule for rule in rules if rule.startswith("evaluate") or "ground_truth" in rule}, planned
