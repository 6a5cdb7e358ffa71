"""``irn compare``: where two runs' products first differ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from irn_core.cli import main
from irn_core.compare import compare_runs
from irn_core.engine.checkpoint import save_checkpoint
from irn_core.store import ShardWriter


def _make_run(run: Path, *, cam_shift: float = 0.0, semantic_flip: bool = False, weight: float = 1.0) -> None:
    save_checkpoint(run / "models" / "cam.pt", model_state={"w": torch.full((3,), weight)}, kind="cam", config={})
    for shard, ids in enumerate((["a", "b"], ["c"])):
        with ShardWriter(run / "cam" / f"shard-{shard:05d}.h5", product="cam", config_hash="h", shard_index=shard,
                         float16=("cam_s4",)) as writer:
            for image_id in ids:
                cam = np.full((1, 4, 4), 0.5, np.float32)
                if image_id == "c":
                    cam[0, 1, 2] += cam_shift
                writer.add(image_id, {"cam_s4": cam, "class_ids": np.array([0])})
        with ShardWriter(run / "semantic" / f"shard-{shard:05d}.h5", product="semantic", config_hash="h",
                         shard_index=shard) as writer:
            for image_id in ids:
                labels = np.zeros((4, 4), np.uint8)
                if semantic_flip and image_id == "b":
                    labels[0, 0] = 1
                writer.add(image_id, {"semantic_s1": labels})
    (run / "evaluation").mkdir(parents=True, exist_ok=True)
    (run / "evaluation" / "semantic.json").write_text(json.dumps({"mIoU": 0.5 + cam_shift, "images": 3}))
    (run / "run_record.json").write_text(json.dumps({"machine": {"torch_cpu_capability": "AVX512", "host": "x"}}))


def test_identical_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _make_run(tmp_path / "a")
    _make_run(tmp_path / "b")
    comparison = compare_runs(tmp_path / "a", tmp_path / "b")
    assert comparison.identical and comparison.first_difference is None
    assert [stage.stage for stage in comparison.stages] == ["models/cam.pt", "cam", "semantic", "evaluation"]
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "the runs are identical" in capsys.readouterr().out


def test_the_first_difference_is_named_by_stage_shard_image_and_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _make_run(tmp_path / "a")
    _make_run(tmp_path / "b", cam_shift=0.25, semantic_flip=True)
    record = json.loads((tmp_path / "b" / "run_record.json").read_text())
    record["machine"]["torch_cpu_capability"] = "AVX2"
    (tmp_path / "b" / "run_record.json").write_text(json.dumps(record))
    comparison = compare_runs(tmp_path / "a", tmp_path / "b")
    first = comparison.first_difference
    assert first is not None and first.stage == "cam" and first.first is not None
    assert first.first.where == "shard-00001.h5 / c / cam_s4"
    assert first.first.max_difference == pytest.approx(0.25) and first.first.differing == 1
    semantic = next(stage for stage in comparison.stages if stage.stage == "semantic")
    assert semantic.first is not None and semantic.first.where == "shard-00000.h5 / b / semantic_s1"
    assert comparison.record_differences == {"machine.torch_cpu_capability": ("AVX512", "AVX2")}
    assert compare_runs(tmp_path / "a", tmp_path / "b", tolerance=0.3).stages[1].identical
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "first difference: stage cam, shard-00001.h5 / c / cam_s4" in out and "AVX2" in out


def test_a_checkpoint_difference_comes_first(tmp_path: Path) -> None:
    _make_run(tmp_path / "a")
    _make_run(tmp_path / "b", weight=1.5, cam_shift=0.1)
    first = compare_runs(tmp_path / "a", tmp_path / "b").first_difference
    assert first is not None and first.stage == "models/cam.pt"
    assert first.first is not None and first.first.where == "parameter w" and first.first.max_difference == 0.5


def test_missing_files_and_folders(tmp_path: Path) -> None:
    _make_run(tmp_path / "a")
    _make_run(tmp_path / "b")
    (tmp_path / "b" / "semantic" / "shard-00001.h5").unlink()
    comparison = compare_runs(tmp_path / "a", tmp_path / "b")
    semantic = next(stage for stage in comparison.stages if stage.stage == "semantic")
    assert semantic.missing == ["shard-00001.h5"] and not comparison.identical
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "nowhere")]) == 2


def test_numbers_inside_nested_metrics_are_compared_with_the_tolerance(tmp_path: Path) -> None:
    """The CAM evaluation's threshold curve (lists inside a dict) is compared number by number."""
    for run, shift in (("a", 0.0), ("b", 1e-9)):
        _make_run(tmp_path / run)
        curve = {"thresholds": [0.05, 0.1], "mIoU": [0.3, 0.4 + shift], "best_threshold": 0.1}
        (tmp_path / run / "evaluation" / "cam.json").write_text(json.dumps({"mIoU": 0.3, "threshold_curve": curve}))
    assert compare_runs(tmp_path / "a", tmp_path / "b", tolerance=1e-6).identical
    differences = compare_runs(tmp_path / "a", tmp_path / "b", tolerance=0.0).stages[-1].differences
    assert [difference.where for difference in differences] == ["cam.json threshold_curve.mIoU.1"]
