"""``dataset.on_unreadable`` in the downstream stages, on a tiny synthetic dataset (6 downstream ids,
3 val ids) with a corrupt image in the downstream split, a corrupt ground-truth class map of another
downstream image and a corrupt image in the val split; the pseudo-label shards leave out (``skipped``)
the corrupt downstream image and one more id (as make_cam does for an unreadable annotation file).

Under ``skip``: DeepLab v2 and Mask R-CNN train without the ids the pseudo-label shards left out or,
on ground truth, without those whose image or masks cannot be read, log each and list them in the
checkpoint's record; inference leaves the unreadable val image out of its shard (``skipped``) and the
evaluation lists it. A pseudo label missing for an id no stage left out is still an error. Under
``error`` the same inputs stop the job with an error naming the file and the id.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from irn_core.cli import main
from irn_core.config import load_config
from irn_core.engine.checkpoint import load_checkpoint
from irn_core.errors import DatasetError
from irn_core.steps.common import open_run_dataset, shard_plan
from irn_core.store import ShardWriter

CONFIG = {
    "name": "unreadable",
    "seed": 0,
    "shard_size": 8,
    "dataset": {
        "kind": "synthetic",
        "train_split": "train",
        "infer_split": "train",
        "downstream_split": "train",
        "val_split": "val",
        "synthetic": {"seed": 5, "num_train": 6, "num_val": 3, "image_size_range": [64, 72],
                      "objects_per_image": [1, 2]},
    },
    "deeplab": {
        "enabled": True,
        "backbone": {"name": "resnet18", "weights": "none", "output_stride": 16},
        "train": {"steps": 3, "batch_size": 2, "crop_size": 40, "scales": [1.0], "input_scales": [],
                  "optimizer": {"learning_rate": 0.001}},
        "infer": {"scales": [1.0], "flip": False, "crf": {"enabled": False}},
    },
    "maskrcnn": {
        "backbone": "resnet18_fpn",
        "weights": "none",
        "frozen_batchnorm": False,
        "min_size": 64,
        "max_size": 96,
        "model": {"fpn_channels": 16, "box_head_channels": 32, "mask_head_channels": 16,
                  "rpn": {"pre_nms_top_n_train": 200, "post_nms_top_n_train": 100},
                  "roi": {"batch_size_per_image": 32}},
        "train": {"steps": 2, "batch_size": 2, "lr_steps": [1], "warmup_steps": 1, "frozen_stages": 0,
                  "learning_rate": 0.01},
        "infer": {"rpn_pre_nms_top_n": 100, "rpn_post_nms_top_n": 50, "score_threshold": 0.0,
                  "detections_per_image": 10},
    },
    "compute": {"device": "cpu", "threads": 1},
}


class Run:
    """The config files (``skip``, ``error``, and ``skip_gt``: Mask R-CNN on ground truth under ``skip``),
    the broken ids with the files that name them, and the pseudo-label shards."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        base = {**CONFIG, "output_dir": str(folder / "results"),
                "dataset": {**CONFIG["dataset"], "root": str(folder / "data")}}
        self.configs = {}
        for name, on_unreadable, maskrcnn_labels in (("skip", "skip", "pseudo"), ("error", "error", "pseudo"),
                                                     ("skip_gt", "skip", "ground_truth")):
            data = {**base, "dataset": {**base["dataset"], "on_unreadable": on_unreadable},
                    "maskrcnn": {**CONFIG["maskrcnn"],
                                 "train": {**CONFIG["maskrcnn"]["train"], "labels": maskrcnn_labels}}}
            path = folder / f"{name}.yaml"
            path.write_text(yaml.safe_dump(data))
            self.configs[name] = path
        assert main(["make-synthetic", "--config", str(self.configs["skip"])]) == 0
        config = load_config(self.configs["skip"])
        dataset = open_run_dataset(config)
        self.plan = shard_plan(config)
        self.downstream = self.plan.all_ids("downstream")
        self.val = self.plan.all_ids("val")
        data = folder / "data"
        self.broken_image, self.upstream_only, self.missing_id, self.broken_mask = (
            self.downstream[1], self.downstream[2], self.downstream[3], self.downstream[4])
        self.broken_val = self.val[0]
        self.image_file = data / "JPEGImages" / f"{self.broken_image}.jpg"
        self.val_file = data / "JPEGImages" / f"{self.broken_val}.jpg"
        self.annotation_file = data / "Annotations" / f"{self.upstream_only}.xml"
        self.mask_file = data / "SegmentationClass" / f"{self.broken_mask}.png"
        for path in (self.image_file, self.val_file):
            assert path.exists()
            path.write_bytes(b"\xff\xd8 not really a jpeg")
        with pytest.raises(DatasetError) as caught:
            dataset.image(self.broken_image)
        cam_shard = folder / "cam" / "shard-00000.h5"
        # what make_cam records under skip, and the later stages pass on
        self.upstream_reasons = {
            self.broken_image: f"skipped in {cam_shard}: {caught.value}",
            self.upstream_only: f"skipped in {cam_shard}: {self.annotation_file} (image id {self.upstream_only}): "
                                "unreadable annotation (syntax error: line 1, column 0)",
        }
        self.ground_truth = {image_id: (dataset.semantic_mask(image_id), *dataset.instance_masks(image_id))
                             for image_id in self.downstream if image_id != self.broken_image}
        self.semantic = self._write_shards("semantic")
        self.instances = self._write_shards("instances")
        self.semantic_missing = self._write_shards("semantic", missing=self.missing_id)
        # a readable image whose ground-truth class map is corrupt (its pseudo labels are fine)
        self.mask_file.write_bytes(b"\x89PNG not really a png")

    def _write_shards(self, product: str, *, missing: str | None = None) -> list[Path]:
        """Pseudo labels = the ground truth of the downstream ids, those of ``upstream_reasons`` left out
        (``skipped``), ``missing`` left out without a record."""
        paths = []
        for shard in self.plan.product_shards(product):
            path = self.folder / (product if missing is None else f"{product}_missing") / f"shard-{shard:05d}.h5"
            with ShardWriter(path, product=product, config_hash="0" * 16, shard_index=shard) as writer:
                for image_id in self.plan.product_ids(shard, product):
                    if image_id in self.upstream_reasons:
                        writer.skip(image_id, self.upstream_reasons[image_id])
                        continue
                    if image_id == missing:
                        continue
                    semantic, masks, class_ids = self.ground_truth[image_id]
                    if product == "semantic":
                        writer.add(image_id, {"semantic_s1": semantic})
                    else:
                        writer.add(image_id, {"masks_s1": masks, "class_ids": np.asarray(class_ids, np.int64),
                                              "scores": np.ones(len(class_ids), np.float32)})
            paths.append(path)
        return paths

    def left_out(self, labels: str) -> dict[str, Path]:
        """The downstream ids a training on ``labels`` leaves out under skip -> the file the reason names."""
        if labels == "pseudo":
            return {self.broken_image: self.image_file, self.upstream_only: self.annotation_file}
        return {self.broken_image: self.image_file, self.broken_mask: self.mask_file}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(tmp_path_factory.mktemp("unreadable"))


def _warned(caplog: pytest.LogCaptureFixture, image_id: str, file: Path) -> bool:
    return any(
        record.levelno == logging.WARNING and image_id in record.getMessage() and str(file) in record.getMessage()
        for record in caplog.records
    )


def _check_training(caplog: pytest.LogCaptureFixture, record: dict, expected: dict[str, Path]) -> None:
    """The checkpoint's record and the log list each left-out id with the file its reason names."""
    assert sorted(record["skipped"]) == sorted(expected)
    for image_id, file in expected.items():
        assert str(file) in record["skipped"][image_id], image_id
        assert _warned(caplog, image_id, file), image_id


def _check_failed(caplog: pytest.LogCaptureFixture, expected: dict[str, Path], output: Path) -> None:
    """An error naming one of the broken ids and its file, and no output."""
    assert any(image_id in caplog.text and str(file) in caplog.text for image_id, file in expected.items())
    assert not output.exists()


def _check_predictions(caplog: pytest.LogCaptureFixture, run: Run, output: Path) -> None:
    with h5py.File(output) as handle:
        assert json.loads(handle.attrs["image_ids"]) == run.val[1:]
        skipped = json.loads(handle.attrs["skipped"])
    assert list(skipped) == [run.broken_val] and str(run.val_file) in skipped[run.broken_val]
    assert _warned(caplog, run.broken_val, run.val_file)


def _check_evaluation(run: Run, prefix: Path) -> None:
    metrics = json.loads(prefix.with_suffix(".json").read_text())
    assert metrics["images"] == 2 and list(metrics["skipped"]) == [run.broken_val]
    assert run.broken_val in prefix.with_suffix(".md").read_text()


def test_deeplab_leaves_out_unreadable_and_upstream_skipped_images(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    skip, error = str(run.configs["skip"]), str(run.configs["error"])
    checkpoints = {}
    for labels in ("pseudo", "ground_truth"):
        caplog.clear()
        checkpoints[labels] = checkpoint = tmp_path / f"deeplab_{labels}.pt"
        extra = ["--semantic", *map(str, run.semantic)] if labels == "pseudo" else []
        assert main(["train-deeplab", "--config", skip, "--labels", labels, *extra, "--out", str(checkpoint)]) == 0
        record = load_checkpoint(checkpoint, kind="deeplab")["record"]
        assert record["steps"] == 3
        _check_training(caplog, record, run.left_out(labels))
        caplog.clear()
        failed = tmp_path / f"failed_{labels}.pt"
        assert main(["train-deeplab", "--config", error, "--labels", labels, *extra, "--out", str(failed)]) == 2
        _check_failed(caplog, run.left_out(labels), failed)

    # a pseudo label missing for an id no stage left out is still an error under skip
    caplog.clear()
    assert main(["train-deeplab", "--config", skip, "--labels", "pseudo", "--semantic",
                 *map(str, run.semantic_missing), "--out", str(tmp_path / "missing.pt")]) == 2
    assert f"missing for 1 of the 4 downstream ids (e.g. ['{run.missing_id}'])" in caplog.text

    outputs = []
    for shard in run.plan.product_shards("deeplab"):
        caplog.clear()
        output = tmp_path / "deeplab_pseudo" / f"shard-{shard:05d}.h5"
        assert main(["deeplab-infer", "--config", skip, "--shard", str(shard), "--checkpoint",
                     str(checkpoints["pseudo"]), "--out", str(output)]) == 0
        _check_predictions(caplog, run, output)
        outputs.append(output)
        caplog.clear()
        failed = tmp_path / "failed" / f"shard-{shard:05d}.h5"
        assert main(["deeplab-infer", "--config", error, "--shard", str(shard), "--checkpoint",
                     str(checkpoints["pseudo"]), "--out", str(failed)]) == 2
        _check_failed(caplog, {run.broken_val: run.val_file}, failed)
    prefix = tmp_path / "evaluation" / "deeplab_pseudo"
    assert main(["evaluate-deeplab", "--config", skip, "--inputs", *map(str, outputs),
                 "--out-prefix", str(prefix)]) == 0
    _check_evaluation(run, prefix)


def test_maskrcnn_leaves_out_unreadable_and_upstream_skipped_images(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    skip, error = str(run.configs["skip"]), str(run.configs["error"])
    instances = ["--instances", *map(str, run.instances)]
    checkpoint = tmp_path / "maskrcnn.pt"
    assert main(["train-maskrcnn", "--config", skip, *instances, "--out", str(checkpoint)]) == 0
    record = load_checkpoint(checkpoint, kind="maskrcnn")["record"]
    assert record["steps"] == 2
    _check_training(caplog, record, run.left_out("pseudo"))
    caplog.clear()
    failed = tmp_path / "failed.pt"
    assert main(["train-maskrcnn", "--config", error, *instances, "--out", str(failed)]) == 2
    _check_failed(caplog, run.left_out("pseudo"), failed)

    caplog.clear()
    ground_truth = tmp_path / "maskrcnn_ground_truth.pt"
    assert main(["train-maskrcnn", "--config", str(run.configs["skip_gt"]), "--out", str(ground_truth)]) == 0
    _check_training(caplog, load_checkpoint(ground_truth, kind="maskrcnn")["record"], run.left_out("ground_truth"))

    outputs = []
    for shard in run.plan.product_shards("maskrcnn"):
        caplog.clear()
        output = tmp_path / "maskrcnn" / f"shard-{shard:05d}.h5"
        assert main(["maskrcnn-infer", "--config", skip, "--shard", str(shard), "--checkpoint", str(checkpoint),
                     "--out", str(output)]) == 0
        _check_predictions(caplog, run, output)
        outputs.append(output)
        caplog.clear()
        failed = tmp_path / "failed" / f"shard-{shard:05d}.h5"
        assert main(["maskrcnn-infer", "--config", error, "--shard", str(shard), "--checkpoint", str(checkpoint),
                     "--out", str(failed)]) == 2
        _check_failed(caplog, {run.broken_val: run.val_file}, failed)
    prefix = tmp_path / "evaluation" / "maskrcnn"
    assert main(["evaluate-maskrcnn", "--config", skip, "--inputs", *map(str, outputs),
                 "--out-prefix", str(prefix)]) == 0
    _check_evaluation(run, prefix)
