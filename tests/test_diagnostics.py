"""Diagnostics: statistics on known inputs, collapse warnings that fire on collapsed runs and not on healthy ones."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from irn_core.diagnostics import (
    boundary_statistics,
    boundary_warnings,
    cam_statistics,
    cam_warnings,
    inference_scale_statistics,
    displacement_progress,
    displacement_statistics,
    displacement_warnings,
    flat_loss_terms,
    ir_label_statistics,
    ir_label_warnings,
    loss_curve_rows,
    mean_statistics,
    training_warnings,
)
from irn_core.errors import InputError
from irn_core.relations.losses import affinity_displacement_loss
from irn_core.relations.path_index import path_index
from irn_core.steps.reporting import diagnostics_path, loss_curves_path, report, write_loss_curves


def _healthy_irnet_curves(steps: int = 120) -> dict[str, list[float]]:
    """Loss curves shaped like the synthetic demo's: every term falls, displacement_fg to ~0.75 x constant."""
    generator = np.random.default_rng(0)
    decay = np.exp(-np.arange(steps) / 30.0)
    noise = lambda: generator.normal(0, 0.01, steps)  # noqa: E731
    constant = 3.95 + noise()
    return {
        "pos_bg": list(0.1 + 0.6 * decay + noise()),
        "pos_fg": list(0.2 + 0.5 * decay + noise()),
        "neg": list(0.3 + 0.4 * decay + noise()),
        "displacement_fg": list(constant * (0.75 + 0.25 * decay)),
        "displacement_bg": list(0.05 + 0.2 * decay + noise()),
        "displacement_fg_constant": list(constant),
        "total": list(2.0 + decay),
    }


def _collapsed_irnet_curves(steps: int = 120) -> dict[str, list[float]]:
    """The issue's run: displacement_fg stays at its constant-field value, displacement_bg goes to 0."""
    curves = _healthy_irnet_curves(steps)
    generator = np.random.default_rng(1)
    constant = 4.13 + generator.normal(0, 0.08, steps)  # batch-to-batch spread of the constant value
    curves["displacement_fg_constant"] = list(constant)
    curves["displacement_fg"] = list(constant * (1 + generator.normal(0, 1e-4, steps)))
    curves["displacement_bg"] = list(0.25 * np.exp(-np.arange(steps) / 5.0) + 0.001)
    return curves


def test_flat_terms_found_and_moving_terms_not() -> None:
    steps = 100
    curves = {
        "flat": [2.0 + 0.001 * np.sin(step) for step in range(steps)],
        "falling": [2.0 * np.exp(-step / 40) for step in range(steps)],
        "total": [1.0] * steps,
    }
    assert flat_loss_terms(curves) == ["flat"]
    assert flat_loss_terms(curves, skip=()) == ["flat", "total"]
    assert flat_loss_terms({name: values[:20] for name, values in curves.items()}) == []  # too short to judge


def test_displacement_progress_is_the_final_ratio() -> None:
    curves = {"displacement_fg": [4.0] * 10 + [3.0] * 10, "displacement_fg_constant": [4.0] * 20}
    assert displacement_progress(curves, window_fraction=0.25) == pytest.approx(0.75)
    assert displacement_progress({"displacement_fg": [1.0]}) is None


def test_training_warnings_fire_on_the_collapse_and_not_on_a_healthy_run() -> None:
    assert training_warnings(_healthy_irnet_curves(), name="train_irnet") == []
    warnings = training_warnings(_collapsed_irnet_curves(), name="train_irnet")
    assert len(warnings) == 1
    assert "displacement field collapsed" in warnings[0] and "likely causes" in warnings[0]
    flat_curves = _collapsed_irnet_curves()
    del flat_curves["displacement_fg_constant"]  # a record without the reference: the flat term is reported
    flat_warnings = training_warnings(flat_curves, name="train_irnet")
    assert any("'displacement_fg' stayed flat" in warning for warning in flat_warnings)
    # a CAM run whose only term never moves
    cam_warnings_found = training_warnings({"total": [0.69] * 60}, name="train_cam", skip=())
    assert len(cam_warnings_found) == 1 and "train_cam" in cam_warnings_found[0]


def test_loss_curve_rows() -> None:
    rows = loss_curve_rows({"a": [1.0, 2.0], "b": [3.0]}, [0.1, 0.05])
    assert rows[0] == {"step": 1, "learning_rate": 0.1, "a": 1.0, "b": 3.0}
    assert rows[1]["step"] == 2 and rows[1]["a"] == 2.0 and np.isnan(rows[1]["b"])


def test_displacement_statistics_on_known_fields() -> None:
    constant = np.broadcast_to(np.array([3.0, 4.0])[:, None, None], (2, 10, 12))
    statistics = displacement_statistics(constant)
    assert statistics["mean_magnitude"] == pytest.approx(5.0) and statistics["max_magnitude"] == pytest.approx(5.0)
    assert statistics["centred_p99_magnitude"] == pytest.approx(0.0, abs=1e-12)
    assert displacement_warnings(statistics) and "near zero or constant" in displacement_warnings(statistics)[0]
    # a field pointing every pixel at the centre of a 21 x 21 grid
    grid_y, grid_x = np.meshgrid(np.arange(21.0), np.arange(21.0), indexing="ij")
    to_centre = np.stack([10.0 - grid_y, 10.0 - grid_x])
    statistics = displacement_statistics(torch.from_numpy(to_centre)[None])
    magnitude = np.hypot(10.0 - grid_y, 10.0 - grid_x)
    assert statistics["mean_magnitude"] == pytest.approx(magnitude.mean())
    assert statistics["max_magnitude"] == pytest.approx(np.sqrt(200.0))
    assert statistics["centred_p99_magnitude"] == pytest.approx(np.percentile(magnitude, 99))
    assert displacement_warnings(statistics) == []
    with pytest.raises(InputError):
        displacement_statistics(np.zeros((3, 4, 4)))


def test_boundary_statistics_and_warnings() -> None:
    zeros, ones = np.zeros((20, 30)), np.ones((20, 30))
    assert boundary_statistics(zeros)["p99"] == 0.0 and boundary_statistics(ones)["p01"] == 1.0
    assert "all 0" in boundary_warnings(boundary_statistics(zeros))[0]
    assert "all 1" in boundary_warnings(boundary_statistics(ones))[0]
    healthy = np.zeros((20, 30))
    healthy[:, 14:16] = 0.9  # one boundary line
    statistics = boundary_statistics(torch.from_numpy(healthy))
    assert statistics["above_half"] == pytest.approx(2 / 30)
    assert statistics["mean"] == pytest.approx(0.9 * 2 / 30)
    assert boundary_warnings(statistics) == []


def test_ir_label_statistics_on_a_known_map() -> None:
    labels = np.array([[0, 0, 255, 3], [0, 255, 3, 3]], np.uint8)
    truth = np.array([[0, 3, 3, 3], [255, 0, 3, 2]], np.uint8)
    statistics = ir_label_statistics(labels, truth)
    assert statistics["foreground"] == pytest.approx(3 / 8)
    assert statistics["background"] == pytest.approx(3 / 8)
    assert statistics["unknown"] == pytest.approx(2 / 8)
    # confident with valid truth: (0,0) ok, (0,1) wrong, (0,3) ok, (1,2) ok, (1,3) wrong; (1,0) void truth
    assert statistics["accuracy"] == pytest.approx(3 / 5)
    assert statistics["foreground_accuracy"] == pytest.approx(2 / 3)
    assert statistics["background_accuracy"] == pytest.approx(1 / 2)
    assert statistics["foreground_recall"] == pytest.approx(2 / 5)
    assert set(ir_label_statistics(labels)) == {"foreground", "background", "unknown"}
    assert ir_label_warnings(statistics) == []
    assert ir_label_warnings({"foreground": 0.001, "accuracy": 0.4})[1].startswith("ir_labels: only 40.0%")


def test_cam_statistics_and_warnings() -> None:
    cam = np.zeros((2, 4, 5), np.float32)
    cam[0, :2, :] = 1.0
    cam[1, 3, 0] = 0.2
    statistics = cam_statistics(cam, eval_threshold=0.15, fg_threshold=0.3)
    assert statistics["coverage_eval"] == pytest.approx(11 / 20) and statistics["coverage_fg"] == pytest.approx(10 / 20)
    assert statistics["peak"] == 1.0 and statistics["mean"] == pytest.approx((10 + 0.2) / 20)
    assert cam_statistics(np.zeros((0, 4, 5)))["coverage_eval"] == 0.0
    assert cam_warnings(statistics) == []
    assert "almost no localisation" in cam_warnings({"coverage_eval": 0.001})[0]


def test_cam_warning_for_images_outside_the_training_range() -> None:
    inside = inference_scale_statistics((256, 300), (240, 320), 1.0)
    large = inference_scale_statistics((480, 640), (240, 320), 1.0)
    rescaled = inference_scale_statistics((480, 640), (240, 320), 0.5)
    assert inside == {"outside_train_range": 0.0, "rescaled_for_inference": 0.0}
    assert large == {"outside_train_range": 1.0, "rescaled_for_inference": 0.0}
    assert rescaled == {"outside_train_range": 1.0, "rescaled_for_inference": 1.0}
    mostly_large = mean_statistics([large, large, inside])
    (warning,) = cam_warnings(mostly_large, name="make_cam shard 0")
    assert warning.startswith("make_cam shard 0: 67% of the images") and "cam.infer.base_size: train_range" in warning
    assert cam_warnings(mean_statistics([large, inside, inside])) == []  # a minority
    assert cam_warnings(mean_statistics([rescaled, rescaled])) == []  # already inferred at the training scale


def test_mean_statistics_skips_nan() -> None:
    means = mean_statistics([{"a": 1.0, "b": float("nan")}, {"a": 3.0, "b": 2.0}])
    assert means == {"a": 2.0, "b": 2.0, "images": 2.0}


def test_constant_reference_of_the_loss_is_the_value_of_a_constant_field() -> None:
    generator = torch.Generator().manual_seed(0)
    index = path_index(10)
    labels = torch.zeros(2, 30, 36, dtype=torch.uint8)
    labels[:, 5:25, 8:30] = 3
    labels[0, 12:16, :] = 255
    logits = torch.randn(2, 1, 30, 36, generator=generator)
    constant_field = torch.tensor([1.5, -0.7]).view(1, 2, 1, 1).expand(2, 2, 30, 36)
    losses = affinity_displacement_loss(logits, constant_field, labels, index, constant_reference=True)
    assert losses["displacement_fg_constant"].item() == pytest.approx(losses["displacement_fg"].item(), rel=1e-6)
    plain = affinity_displacement_loss(logits, torch.randn(2, 2, 30, 36, generator=generator), labels, index)
    assert "displacement_fg_constant" not in plain


def test_report_writes_json_and_logs_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    output = tmp_path / "models" / "irnet.pt"
    with caplog.at_level(logging.INFO):
        record = report("train_irnet", output, {"ratio": 0.99, "bad": float("nan")}, ["collapsed!"])
    saved = json.loads(diagnostics_path(output).read_text())
    expected = {"stage": "train_irnet", "statistics": {"ratio": 0.99, "bad": None}, "warnings": ["collapsed!"]}
    assert saved == record == expected
    assert any(entry.levelno == logging.WARNING and "collapsed!" in entry.message for entry in caplog.records)
    path = write_loss_curves(output, {"total": [2.0, 1.0]}, [0.1, 0.05])
    assert path == loss_curves_path(output) == tmp_path / "models" / "irnet.loss_curves.csv"
    rows = list(csv.DictReader(path.open()))
    assert rows[1] == {"step": "2", "learning_rate": "0.05", "total": "1.0"}
