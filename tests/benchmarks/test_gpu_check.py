"""``benchmarks/gpu_check.py --device cpu --tiny``: the device check runs end to end on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
STAGES = (
    "cam_train", "cam_infer", "irnet_train", "irnet_infer", "pseudo_labels",
    "deeplab_train", "deeplab_infer", "maskrcnn_train", "maskrcnn_infer",
)


@pytest.mark.slow  # about 30-45 s on the 2-core machine: every network trained and run twice
def test_tiny_cpu_check_writes_a_complete_report(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--out", str(tmp_path)],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    reports = sorted(tmp_path.glob("*.json"))
    assert len(reports) == 1 and reports[0].with_suffix(".md").exists()
    report = json.loads(reports[0].read_text(encoding="utf-8"))

    environment = report["environment"]
    assert environment["device_name"] == "cpu" and environment["torch"] and "cuda" in environment
    assert report["tiny"] is True and report["complete"] is True and report["total_seconds"] > 0
    tests = report["cuda_tests"]
    assert tests["returncode"] == 0 and tests["failed"] == 0
    assert tests["passed"] + tests["skipped"] >= 1  # the random walk's CUDA test, skipped without CUDA
    assert any("test_relations_random_walk" in name for name in tests["files"])

    assert report["precisions"] == ["float32", "bfloat16"] and report["skipped_precisions"] == []
    for precision in report["precisions"]:
        rows = report["stages"][precision]
        assert set(rows) == set(STAGES)
        for stage, row in rows.items():
            assert row["images_per_second"] > 0, (precision, stage)
            assert row["peak_memory_mib"] is None  # device memory is measured on CUDA only
        for stage in ("cam_train", "irnet_train", "deeplab_train", "maskrcnn_train"):
            assert rows[stage]["timed_steps"] == report["plan"]["train_steps"][stage]

    (walk,) = report["walk"]
    assert walk["size"] == "16x20"
    assert walk["device_vs_cpu_max_diff_rel"] == 0.0  # the device is the CPU here
    assert walk["device_vs_dense_max_diff_rel"] < 1e-3  # float32 reference against the float64 walk
    markdown = reports[0].with_suffix(".md").read_text(encoding="utf-8")
    assert "| maskrcnn_infer |" in markdown and "Random walk" in markdown
