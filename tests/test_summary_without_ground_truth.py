"""The summary of a run without ground truth (evaluation.ground_truth: false) from hand-made shards and
diagnostics files: image counts, CAM foreground fraction per threshold, pseudo-label foreground share,
instance counts, stage diagnostics and their warnings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from irn_core.config import RunConfig, validate_config
from irn_core.steps import ground_truth_free
from irn_core.steps.evaluate import CAM_THRESHOLD_CURVE, CamThresholdCurve, run_summary
from irn_core.store import ShardWriter


class _Plan:
    def all_ids(self, role: str) -> list[str]:
        return {"train": ["a", "b", "c"], "infer": ["a", "b"]}.get(role, [])


def _write(path: Path, product: str, items: dict[str, dict[str, np.ndarray]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with ShardWriter(path, product=product, config_hash="test", shard_index=0) as writer:
        for image_id, datasets in items.items():
            writer.add(image_id, datasets)
    return path


@pytest.fixture()
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RunConfig, dict[str, list[Path]]]:
    config = validate_config({"name": "photos", "output_dir": str(tmp_path), "evaluation": {"ground_truth": False},
                              "dataset": {"train_split": "train", "infer_split": "val", "synthetic": {}}},
                             source="test")
    monkeypatch.setattr(ground_truth_free, "shard_plan", lambda _: _Plan())
    run_dir = config.run_dir
    # image a: one class whose CAM is 0.5 on the left half, 0 elsewhere; image b: no class at all
    cam = np.zeros((1, 4, 4), np.float32)
    cam[0, :, :2] = 0.5
    cams = _write(run_dir / "cam" / "shard-00000.h5", "cam", {
        "a": {"cam_s1": cam, "class_ids": np.array([2])},
        "b": {"cam_s1": np.zeros((0, 4, 4), np.float32), "class_ids": np.zeros(0, np.int64)},
    })
    semantic_a = np.zeros((4, 4), np.uint8)
    semantic_a[0, :] = 3
    semantic_a[1, 0] = 255  # void is not foreground
    semantic = _write(run_dir / "semantic" / "shard-00000.h5", "semantic", {
        "a": {"semantic_s1": semantic_a}, "b": {"semantic_s1": np.full((4, 4), 1, np.uint8)},
    })
    masks = np.zeros((3, 4, 4), bool)
    instances = _write(run_dir / "instances" / "shard-00000.h5", "instances", {
        "a": {"masks_s1": masks, "class_ids": np.array([2, 2, 2]), "scores": np.array([0.9, 0.4, 0.0])},
        "b": {"masks_s1": masks[:0], "class_ids": np.zeros(0, np.int64), "scores": np.zeros(0)},
    })
    for index, (coverage, images) in enumerate(((0.2, 3), (0.6, 1))):
        (run_dir / "cam" / f"shard-{index:05d}.diagnostics.json").write_text(json.dumps(
            {"stage": "make_cam", "statistics": {"coverage_eval": coverage, "images": images, "nested": {"x": 1}},
             "warnings": ["CAMs cover too much"]}))
    (run_dir / "models").mkdir()
    (run_dir / "models" / "irnet.diagnostics.json").write_text(json.dumps(
        {"stage": "train_irnet", "statistics": {"total_last": 1.5}, "warnings": []}))
    return config, {"cam": [cams], "semantic": [semantic], "instances": [instances]}


def test_cam_curve_without_ground_truth_keeps_only_the_foreground_fraction() -> None:
    curve = CamThresholdCurve((0.1, 0.6), num_classes=3)
    cam = np.zeros((1, 2, 2), np.float32)
    cam[0, 0, 0] = 0.5
    curve.add(cam, np.array([0]), None)
    assert curve.foreground_fraction() == [0.25, 0.0]
    assert not curve.confusions.any() and curve.best() is None


def test_figures_without_ground_truth(run: tuple[RunConfig, dict[str, list[Path]]]) -> None:
    config, shards = run
    images, table = ground_truth_free.cam_foreground_curve(config, shards["cam"])
    assert images == 2 and list(table.index) == list(CAM_THRESHOLD_CURVE)
    # image a: half its pixels above every threshold below 0.5 (0.5 > 0.5 is false); image b: none
    assert table.loc[0.45, "foreground_fraction"] == pytest.approx(0.25)
    assert table.loc[0.5, "foreground_fraction"] == 0
    semantic = ground_truth_free.semantic_foreground_share(config, shards["semantic"])
    assert semantic == {"images": 2, "foreground_share": pytest.approx((4 / 16 + 1.0) / 2)}
    counts = ground_truth_free.instance_counts(config, shards["instances"])
    assert counts == {"images": 2, "instances": 2, "per_image": 1.0, "images_without_instances": 1}
    diagnostics, warnings = ground_truth_free.read_diagnostics(config.run_dir)
    assert diagnostics["cam"] == {"coverage_eval": pytest.approx(0.4), "images": 4}
    assert diagnostics["models/irnet"] == {"total_last": 1.5}
    assert warnings == ["cam: CAMs cover too much"]


def test_summary_without_ground_truth_needs_no_metric_files(run: tuple[RunConfig, dict[str, list[Path]]]) -> None:
    config, shards = run
    output = config.run_dir / "evaluation" / "summary.md"
    run_summary(config, {}, output, shards)
    text = output.read_text()
    assert "without ground truth" in text
    assert re.search(r"\| train +\| train +\| +3 \|", text) and re.search(r"\| infer +\| val +\| +2 \|", text)
    assert re.search(r"\| 0\.15 +\| 25 +\| cam\.eval_threshold", text)
    assert re.search(r"\| semantic pseudo labels \| foreground share \(%\) +\| 62\.5", text)
    assert re.search(r"\| instance pseudo labels \| instances +\| 2 ", text)
    assert re.search(r"\| cam +\| coverage_eval +\| 0\.4 ", text)
    assert "- cam: CAMs cover too much" in text
