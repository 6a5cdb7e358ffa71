"""Compare the products of two runs and say where they first differ (``irn compare RUN_A RUN_B``).

The stages are visited in DAG order: the CAM network (``models/cam.pt``), CAMs, confident-region
labels, IRNet (``models/irnet.pt``), IRNet outputs, semantic and instance pseudo labels, then any
other per-shard product and the evaluation metrics. For every stage the report gives the files and
images compared, whether they are identical (bit for bit, or within ``tolerance``), and the first
difference: shard file, image id, dataset, the largest absolute difference and how many elements
differ. Since every later stage reads the earlier ones, the first stage that differs is where two runs
part; the run records (``run_record.json``) of both runs are compared too, to show why (another CPU
instruction set, other library versions, other thread counts).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from irn_core.errors import IrnError

PIPELINE = ("models/cam.pt", "cam", "ir_labels", "models/irnet.pt", "irnet", "semantic", "instances")
"""Stages in DAG order: checkpoints and per-shard product folders."""


@dataclass
class Difference:
    where: str
    """``shard-00003.h5 / 2007_000032 / cam_s4``, or a parameter / metric name."""
    max_difference: float
    differing: int
    total: int
    note: str = ""

    def describe(self) -> str:
        text = f"{self.where}: max |a - b| = {self.max_difference:.3g} ({self.differing} of {self.total} differ)"
        return f"{text}; {self.note}" if self.note else text


@dataclass
class StageComparison:
    stage: str
    compared: int = 0
    """Files (per-shard products), tensors (checkpoints) or metrics compared."""
    images: int = 0
    differences: list[Difference] = field(default_factory=list)
    differing_images: int = 0
    missing: list[str] = field(default_factory=list)
    """Things present in one run only."""

    @property
    def identical(self) -> bool:
        return not self.differences and not self.missing

    @property
    def first(self) -> Difference | None:
        return self.differences[0] if self.differences else None


@dataclass
class RunComparison:
    run_a: Path
    run_b: Path
    stages: list[StageComparison]
    record_differences: dict[str, tuple[Any, Any]]

    @property
    def identical(self) -> bool:
        return all(stage.identical for stage in self.stages)

    @property
    def first_difference(self) -> StageComparison | None:
        return next((stage for stage in self.stages if not stage.identical), None)

    def report(self) -> str:
        lines = [f"comparing {self.run_a} with {self.run_b}", ""]
        for stage in self.stages:
            state = "identical" if stage.identical else "DIFFERENT"
            scope = f"{stage.compared} compared" + (f", {stage.images} images" if stage.images else "")
            if stage.differing_images:
                scope += f", {stage.differing_images} images differ"
            lines.append(f"{stage.stage:<18} {state:<10} ({scope})")
            if stage.missing:
                lines.append(f"    in one run only: {', '.join(stage.missing[:5])}")
            if stage.first is not None:
                lines.append(f"    first difference: {stage.first.describe()}")
        first = self.first_difference
        lines.append("")
        if first is None:
            lines.append("the runs are identical")
        else:
            where = first.first.where if first.first is not None else ", ".join(first.missing[:3])
            lines.append(f"first difference: stage {first.stage}, {where}")
        if self.record_differences:
            lines.append("")
            lines.append("run records differ in:")
            for key, (a, b) in sorted(self.record_differences.items()):
                lines.append(f"    {key}: {a!r} vs {b!r}")
        return "\n".join(lines) + "\n"


def _array_difference(a: np.ndarray, b: np.ndarray, tolerance: float) -> tuple[float, int] | None:
    """(max |a - b|, count differing) or None if equal within ``tolerance``; shapes must match."""
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        both_nan = np.isnan(a64) & np.isnan(b64)
        delta = np.where(both_nan, 0.0, np.abs(a64 - b64))
        delta = np.where(np.isnan(delta), np.inf, delta)
    elif a.dtype.kind in "biu" and b.dtype.kind in "biu":
        delta = np.abs(a.astype(np.int64) - b.astype(np.int64)).astype(np.float64)
    else:
        delta = (a != b).astype(np.float64)
    differing = int(np.count_nonzero(delta > tolerance))
    if differing == 0:
        return None
    return float(delta.max()), differing


def _datasets(group: h5py.Group) -> Iterator[tuple[str, h5py.Dataset]]:
    for name, item in group.items():
        if isinstance(item, h5py.Dataset):
            yield name, item


def _compare_shard(path_a: Path, path_b: Path, stage: StageComparison, tolerance: float) -> None:
    with h5py.File(path_a, "r") as file_a, h5py.File(path_b, "r") as file_b:
        ids_a = json.loads(file_a.attrs.get("image_ids", "[]"))
        ids_b = set(json.loads(file_b.attrs.get("image_ids", "[]")))
        stage.missing += [f"{path_a.name}/{image_id}" for image_id in ids_a if image_id not in ids_b]
        for image_id in ids_a:
            if image_id not in ids_b:
                continue
            stage.images += 1
            group_a, group_b = file_a[image_id], file_b[image_id]
            image_differs = False
            for name, dataset_a in _datasets(group_a):
                where = f"{path_a.name} / {image_id} / {name}"
                if name not in group_b:
                    stage.missing.append(where)
                    image_differs = True
                    continue
                a, b = dataset_a[()], group_b[name][()]
                if a.shape != b.shape:
                    stage.differences.append(Difference(where, math.inf, max(a.size, b.size), max(a.size, b.size),
                                                        f"shapes {a.shape} and {b.shape}"))
                    image_differs = True
                    continue
                found = _array_difference(a, b, tolerance)
                if found is not None:
                    stage.differences.append(Difference(where, found[0], found[1], a.size))
                    image_differs = True
            stage.differing_images += image_differs


def _compare_product(run_a: Path, run_b: Path, product: str, tolerance: float) -> StageComparison:
    stage = StageComparison(product)
    files_a = {path.name: path for path in sorted((run_a / product).glob("shard-*.h5"))}
    files_b = {path.name: path for path in sorted((run_b / product).glob("shard-*.h5"))}
    stage.missing += sorted(set(files_a) ^ set(files_b))
    for name in sorted(set(files_a) & set(files_b)):
        stage.compared += 1
        _compare_shard(files_a[name], files_b[name], stage, tolerance)
    return stage


def _compare_checkpoint(run_a: Path, run_b: Path, relative: str, tolerance: float) -> StageComparison:
    import torch

    stage = StageComparison(relative)
    path_a, path_b = run_a / relative, run_b / relative
    if not path_a.exists() or not path_b.exists():
        if path_a.exists() != path_b.exists():
            stage.missing.append(relative)
        return stage
    state_a = torch.load(path_a, map_location="cpu", weights_only=True)["model"]
    state_b = torch.load(path_b, map_location="cpu", weights_only=True)["model"]
    stage.missing += sorted(set(state_a) ^ set(state_b))
    for name, tensor in state_a.items():
        if name not in state_b:
            continue
        stage.compared += 1
        a, b = tensor.numpy(), state_b[name].numpy()
        if a.shape != b.shape:
            stage.differences.append(Difference(name, math.inf, a.size, a.size, f"shapes {a.shape} and {b.shape}"))
            continue
        found = _array_difference(a, b, tolerance)
        if found is not None:
            stage.differences.append(Difference(f"parameter {name}", found[0], found[1], a.size))
    return stage


def _compare_metrics(run_a: Path, run_b: Path, tolerance: float) -> StageComparison:
    stage = StageComparison("evaluation")
    files_a = {path.name: path for path in sorted((run_a / "evaluation").glob("*.json"))}
    files_b = {path.name: path for path in sorted((run_b / "evaluation").glob("*.json"))}
    stage.missing += sorted(set(files_a) ^ set(files_b))
    for name in sorted(set(files_a) & set(files_b)):
        metrics_a = _flatten_metrics(json.loads(files_a[name].read_text()))
        metrics_b = _flatten_metrics(json.loads(files_b[name].read_text()))
        for key, value in metrics_a.items():
            if not isinstance(value, (int, float)) or not isinstance(metrics_b.get(key), (int, float)):
                if metrics_b.get(key) != value:
                    stage.differences.append(Difference(f"{name} {key}", math.inf, 1, 1, "values differ"))
                continue
            stage.compared += 1
            delta = abs(float(value) - float(metrics_b[key]))
            if delta > tolerance:
                stage.differences.append(
                    Difference(f"{name} {key}", delta, 1, 1, f"{float(value):.6g} vs {float(metrics_b[key]):.6g}")
                )
    return stage


def _flatten_metrics(data: Any, prefix: str = "") -> dict[str, Any]:
    """A metrics file's values by dotted key, lists by index (``threshold_curve.mIoU.2``), so that the
    numbers inside nested metrics (the CAM threshold curve) are compared with the tolerance too."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(_flatten_metrics(value, f"{prefix}{key}."))
    return flat


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def _record_differences(run_a: Path, run_b: Path) -> dict[str, tuple[Any, Any]]:
    records = []
    for run in (run_a, run_b):
        path = run / "run_record.json"
        records.append(json.loads(path.read_text()) if path.exists() else {})
    flat_a, flat_b = (_flatten({key: record.get(key) for key in ("code_version", "packages", "machine", "config")})
                      for record in records)
    ignore = ("machine.host", "config.name", "config.output_dir")
    return {
        key: (flat_a.get(key), flat_b.get(key))
        for key in sorted(set(flat_a) | set(flat_b))
        if flat_a.get(key) != flat_b.get(key) and not key.startswith(ignore)
    }


def compare_runs(run_a: str | Path, run_b: str | Path, *, tolerance: float = 0.0) -> RunComparison:
    """Compare two run folders (``results/<name>``) stage by stage in DAG order."""
    run_a, run_b = Path(run_a), Path(run_b)
    for run in (run_a, run_b):
        if not run.is_dir():
            raise IrnError(f"{run}: not a run folder (expected results/<name>)")
    stages = []
    for item in PIPELINE:
        if item.endswith(".pt"):
            stages.append(_compare_checkpoint(run_a, run_b, item, tolerance))
        else:
            stages.append(_compare_product(run_a, run_b, item, tolerance))
    known = {item for item in PIPELINE if not item.endswith(".pt")}
    others = sorted(
        {path.parent.name for run in (run_a, run_b) for path in run.glob("*/shard-*.h5")} - known - {"inputs"}
    )
    stages += [_compare_product(run_a, run_b, product, tolerance) for product in others]
    stages.append(_compare_metrics(run_a, run_b, tolerance))
    stages = [stage for stage in stages if stage.compared or stage.missing]
    return RunComparison(run_a, run_b, stages, _record_differences(run_a, run_b))
