"""A COCO-format dataset through the whole DAG with the real Snakemake: images + instances JSON per split
(the synthetic set written by ``irn export --what coco --ground-truth``) -> CAMs -> IRNet -> pseudo labels
-> Mask R-CNN trained on them -> val predictions -> evaluation, and the COCO export of the pseudo labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from irn_core.data.coco import quiet_pycocotools

from .test_workflow import TINY_CONFIG, snakemake

SYNTHETIC = {**TINY_CONFIG["dataset"]["synthetic"], "num_train": 6, "num_val": 3}

# Downstream models whose evaluation the run must produce.
DOWNSTREAM_TARGETS = ["evaluation/maskrcnn.json", "evaluation/deeplab_pseudo.json",
                      "evaluation/deeplab_ground_truth.json"]

DEEPLAB = {
    "enabled": True,
    "backbone": {"name": "resnet18", "weights": "none", "output_stride": 16},
    "train": {"steps": 3, "batch_size": 2, "crop_size": 64, "scales": [1.0], "input_scales": []},
    "infer": {"scales": [0.5, 1.0], "flip": True, "crf": {"enabled": False}},
}

MASKRCNN = {
    "backbone": "resnet18_fpn",
    "weights": "none",
    "frozen_batchnorm": False,
    "min_size": 64,
    "max_size": 96,
    "model": {"fpn_channels": 16, "box_head_channels": 32, "mask_head_channels": 16,
              "rpn": {"pre_nms_top_n_train": 200, "post_nms_top_n_train": 100}, "roi": {"batch_size_per_image": 32}},
    "train": {"steps": 4, "batch_size": 2, "lr_steps": [3], "warmup_steps": 1, "frozen_stages": 0,
              "learning_rate": 0.01},
    "infer": {"rpn_pre_nms_top_n": 100, "rpn_post_nms_top_n": 50, "score_threshold": 0.0, "detections_per_image": 10},
}


def irn(*arguments: str, cwd: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "irn_core.cli", *arguments], cwd=cwd, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def write_synthetic_coco(workdir: Path) -> None:
    """``workdir/data/coco``: the synthetic set (:data:`SYNTHETIC`) as COCO files, splits train and val
    (``annotations/instances_<split>.json``, images in ``<split>/``)."""
    synthetic_config = {"name": "syn", "dataset": {"kind": "synthetic", "root": "data/syn", "train_split": "train",
                                                   "infer_split": "train", "synthetic": SYNTHETIC}}
    (workdir / "syn.yaml").write_text(yaml.safe_dump(synthetic_config))
    irn("make-synthetic", "--config", "syn.yaml", cwd=workdir)
    irn("export", "--config", "syn.yaml", "--what", "coco", "--ground-truth", "--splits", "train", "val",
        "--out", "data/coco", cwd=workdir)


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("coco_workflow")
    write_synthetic_coco(workdir)
    config = {
        **{key: value for key, value in TINY_CONFIG.items() if key not in ("dataset", "name")},
        "name": "coco",
        "shard_size": 9,  # one shard: fewer jobs
        "dataset": {
            "kind": "coco",
            "root": "data/coco",
            "coco_splits": {
                split: {"annotation_file": f"data/coco/annotations/instances_{split}.json",
                        "image_dir": f"data/coco/{split}"}
                for split in ("train", "val")
            },
            "train_split": "train",
            "infer_split": "train",
            "downstream_split": "train",
            "val_split": "val",
        },
        "maskrcnn": MASKRCNN,
        "deeplab": DEEPLAB,
        "compute": {**TINY_CONFIG["compute"], "ground_truth_twins_with_pseudo": True},
    }
    path = workdir / "coco.yaml"
    path.write_text(yaml.safe_dump(config))
    run = Path("results") / "coco"
    targets = [str(run / "shards.json"), str(run / "evaluation" / "summary.md"),
               *(str(run / target) for target in DOWNSTREAM_TARGETS),
               str(run / "export" / "coco" / "instances_downstream.json")]
    snakemake(workdir, path, *targets)
    return workdir


@pytest.mark.slow
def test_coco_format_dataset_runs_to_the_downstream_models(coco_run: Path) -> None:
    run = coco_run / "results" / "coco"
    plan = json.loads((run / "shards.json").read_text())
    assert len(plan["train_ids"]) == 6 and len(plan["val_ids"]) == 3 and plan["downstream_ids"] == plan["train_ids"]
    seen = []
    for path in sorted((run / "maskrcnn").glob("shard-*.h5")):
        with h5py.File(path) as handle:
            assert handle.attrs["product"] == "maskrcnn"
            for image_id in json.loads(handle.attrs["image_ids"]):
                group = handle[image_id]
                count = len(group["scores"])
                assert group["masks_s1"].shape == (count, group.attrs["height"], group.attrs["width"])
                assert group["masks_s1"].dtype == bool and len(group["class_ids"]) == count
                seen.append(image_id)
    assert sorted(seen) == plan["val_ids"]
    metrics = json.loads((run / "evaluation" / "maskrcnn.json").read_text())
    assert {"mAP@0.25", "mAP@0.5", "mAP@0.7", "mAP@0.75", "mAP_vol", "COCO AP", "COCO AP50"} <= set(metrics)
    instances = json.loads((run / "evaluation" / "instances.json").read_text())
    assert "COCO AP" in instances  # pseudo labels of a COCO dataset: COCO AP against its own annotation file
    assert (run / "models" / "maskrcnn.pt").exists()
    for source in ("pseudo", "ground_truth"):
        deeplab = json.loads((run / "evaluation" / f"deeplab_{source}.json").read_text())
        assert 0 <= deeplab["mIoU"] <= 1 and deeplab["images"] == 3
    summary = (run / "evaluation" / "summary.md").read_text()
    assert "DeepLab v2: pseudo labels / ground truth" in summary and "Mask R-CNN trained on the pseudo labels" in summary


@pytest.mark.slow
def test_exported_pseudo_labels_equal_the_stored_instances(coco_run: Path) -> None:
    run = coco_run / "results" / "coco"
    data = json.loads((run / "export" / "coco" / "instances_downstream.json").read_text())
    by_image = {record["id"]: Path(record["file_name"]).stem for record in data["images"]}
    assert len(by_image) == 6
    stored = {}
    for path in sorted((run / "instances").glob("shard-*.h5")):
        with h5py.File(path) as handle:
            for image_id in json.loads(handle.attrs["image_ids"]):
                scores = handle[image_id]["scores"][()]
                stored[image_id] = handle[image_id]["masks_s1"][()][(scores >= 1e-5) & handle[image_id]["masks_s1"][
                    ()].any(axis=(1, 2))]
    for image_number, image_id in by_image.items():
        annotations = sorted((a for a in data["annotations"] if a["image_id"] == image_number), key=lambda a: a["id"])
        with quiet_pycocotools():
            decoded = [mask_utils.decode({**a["segmentation"], "counts": a["segmentation"]["counts"].encode()})
                       for a in annotations]
        assert len(decoded) == len(stored[image_id])
        for mask, expected in zip(decoded, stored[image_id]):
            np.testing.assert_array_equal(mask.astype(bool), expected)


@pytest.mark.slow
def test_ground_truth_twin_waits_for_the_pseudo_labels_but_never_reruns_for_them(coco_run: Path) -> None:
    run = coco_run / "results" / "coco"
    relative = Path("results") / "coco"  # targets as the rules name their outputs
    semantic = sorted(run.glob("semantic/shard-*.h5"))
    # the order-only input: the twin's job lists the pseudo-label shards, so it starts after them
    forced = snakemake(coco_run, coco_run / "coco.yaml", "--dry-run", "--forcerun", "train_deeplab_ground_truth",
                       str(relative / "models" / "deeplab_ground_truth.pt")).stdout
    job = forced[forced.index("rule train_deeplab_ground_truth:"):]
    inputs = job[job.index("input:"):job.index("output:")]
    assert semantic and all(str(path.relative_to(coco_run)) in inputs for path in semantic), inputs
    # new pseudo labels (another walk) re-run DeepLab on them, not the one on ground truth
    changed = yaml.safe_load((coco_run / "coco.yaml").read_text())
    changed["random_walk"] = {**changed.get("random_walk", {}), "beta": 9}
    path = coco_run / "coco_beta.yaml"
    path.write_text(yaml.safe_dump(changed))
    planned = snakemake(coco_run, path, str(relative / "evaluation" / "deeplab_pseudo.json"),
                        str(relative / "evaluation" / "deeplab_ground_truth.json"), "--dry-run", "--quiet", "rules").stdout
    assert "pseudo_labels" in planned and "train_deeplab_pseudo" in planned, planned
    assert "train_deeplab_ground_truth" not in planned and "deeplab_infer_ground_truth" not in planned, planned
