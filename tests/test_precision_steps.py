"""The CAM and IRNet steps under compute.precision bfloat16 (CPU), through the CLI: they train and
infer, and the products they store are float32 (float16 where cam.infer.float16 says so)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from irn_core.cli import main
from irn_core.engine.checkpoint import load_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny-precision",
    "seed": 0,
    "shard_size": 8,
    "dataset": {
        "kind": "synthetic",
        "train_split": "train",
        "infer_split": "train",
        "synthetic": {"seed": 5, "num_train": 6, "num_val": 2, "image_size_range": [64, 72],
                      "objects_per_image": [1, 2]},
    },
    "cam": {
        "backbone": {"name": "resnet18", "weights": "none", "frozen_batchnorm": False},
        "train": {"batch_size": 4, "epochs": 1, "crop_size": 48, "resize_long": [48, 72], "frozen_stages": 0,
                  "optimizer": {"learning_rate": 0.01}},
        "infer": {"scales": [1.0, 0.5]},
    },
    "irnet": {
        "backbone": {"name": "resnet18", "weights": "none", "frozen_batchnorm": False},
        "backbone_init": "cam",
        "train": {"batch_size": 4, "epochs": 1, "crop_size": 48, "radius": 5},
        "infer": {"pad_to": 80},
    },
    "compute": {"device": "cpu", "threads": 1},
}


def _write_config(folder: Path, name: str, **compute: object) -> Path:
    data = {**TINY, "output_dir": str(folder / "results"),
            "dataset": {**TINY["dataset"], "root": str(folder / "data")},
            "compute": {**TINY["compute"], **compute}}
    if name == "bfloat16_float16_storage":
        data["cam"] = {**TINY["cam"], "infer": {**TINY["cam"]["infer"], "float16": True}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("precision")
    paths = {
        "float32": _write_config(folder, "float32"),
        "bfloat16": _write_config(folder, "bfloat16", precision="bfloat16", channels_last=True),
        "bfloat16_float16_storage": _write_config(folder, "bfloat16_float16_storage", precision="bfloat16"),
    }
    assert main(["make-synthetic", "--config", str(paths["float32"])]) == 0
    return paths


def _read(path: Path, name: str) -> dict[str, np.ndarray]:
    with h5py.File(path) as handle:
        return {image_id: handle[image_id][name][()] for image_id in handle if name in handle[image_id]}


def test_cam_and_irnet_steps_under_bfloat16_store_float32(configs: dict[str, Path], tmp_path: Path) -> None:
    """Also runs ``benchmarks/precision.py`` on the float32 products, laid out as a run folder."""
    bfloat16 = str(configs["bfloat16"])
    run = tmp_path / "run"
    cam_checkpoint = run / "models" / "cam.pt"
    assert main(["train-cam", "--config", bfloat16, "--out", str(cam_checkpoint), "--max-steps", "2"]) == 0
    assert np.isfinite(load_checkpoint(cam_checkpoint, kind="cam")["record"]["losses"]).all()
    cams = {}
    for name in ("float32", "bfloat16", "bfloat16_float16_storage"):
        cams[name] = run / "cam" / "shard-00000.h5" if name == "float32" else tmp_path / f"cam_{name}.h5"
        assert main(["make-cam", "--config", str(configs[name]), "--shard", "0", "--checkpoint", str(cam_checkpoint),
                     "--out", str(cams[name])]) == 0
    maps = {name: _read(path, "cam_s1") for name, path in cams.items()}
    assert maps["float32"] and set(maps["bfloat16"]) == set(maps["float32"])
    for image_id, reference in maps["float32"].items():
        assert maps["bfloat16"][image_id].dtype == np.float32 and reference.dtype == np.float32
        assert maps["bfloat16_float16_storage"][image_id].dtype == np.float16
        if reference.size and reference.std() > 0:
            correlation = np.corrcoef(reference.ravel(), maps["bfloat16"][image_id].ravel())[0, 1]
            assert correlation > 0.99, (image_id, correlation)

    ir_labels = tmp_path / "ir_labels.h5"
    assert main(["ir-labels", "--config", bfloat16, "--shard", "0", "--cams", str(cams["float32"]),
                 "--out", str(ir_labels)]) == 0
    irnet_checkpoint = run / "models" / "irnet.pt"
    assert main(["train-irnet", "--config", bfloat16, "--ir-labels", str(ir_labels), "--cam-checkpoint",
                 str(cam_checkpoint), "--out", str(irnet_checkpoint), "--max-steps", "2"]) == 0
    payload = load_checkpoint(irnet_checkpoint, kind="irnet")
    assert np.isfinite(payload["record"]["losses"]).all() and np.isfinite(payload["record"]["displacement_mean"]).all()
    outputs = {}
    for name in ("float32", "bfloat16"):
        outputs[name] = run / "irnet" / "shard-00000.h5" if name == "float32" else tmp_path / f"irnet_{name}.h5"
        assert main(["irnet-infer", "--config", str(configs[name]), "--shard", "0", "--checkpoint",
                     str(irnet_checkpoint), "--out", str(outputs[name])]) == 0
    boundaries = {name: _read(path, "boundary_s4") for name, path in outputs.items()}
    displacements = {name: _read(path, "displacement_s4") for name, path in outputs.items()}
    for image_id, reference in boundaries["float32"].items():
        assert boundaries["bfloat16"][image_id].dtype == np.float32
        assert displacements["bfloat16"][image_id].dtype == np.float32
        assert np.abs(boundaries["bfloat16"][image_id] - reference).max() < 0.02

    shutil.copy(configs["float32"], run / "config.yaml")
    benchmark = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "precision.py"), "--run", str(run), "--max-images", "3",
         "--threads", "1"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    compared = int(re.search(r"(\d+) inference images with a class", benchmark.stdout).group(1))
    assert compared >= 1
    assert f"equals the stored products for {compared} (CAMs) and {compared} (IRNet boundary)" in benchmark.stdout
    assert "| cam |" in benchmark.stdout and "ratio bfloat16 / float32" in benchmark.stdout

    # benchmarks/memory_format.py on the same run folder: both memory formats of each trained stage
    (run / "ir_labels").mkdir()
    shutil.copy(ir_labels, run / "ir_labels" / "shard-00000.h5")
    formats = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "memory_format.py"), "--run", str(run), "--train-steps", "1",
         "--repeats", "1", "--images", "2", "--threads", "1"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert formats.returncode == 0, formats.stderr[-3000:]
    for stage in ("train_cam", "train_irnet"):
        assert re.search(rf"\| {stage} \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|", formats.stdout), formats.stdout
    assert "train_deeplab" not in formats.stdout  # the run has no pseudo labels: left out and named
    assert "train_deeplab left out" in formats.stderr and "deeplab_infer left out" in formats.stderr
    for stage in ("make_cam", "irnet_infer"):
        row = re.search(rf"\| {stage} \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| ([0-9.e+-]+) \|", formats.stdout)
        assert row, formats.stdout
        assert float(row.group(1)) < 1e-3  # same float32 arithmetic in either format
