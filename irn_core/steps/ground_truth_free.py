"""The summary of a run without ground truth (``evaluation.ground_truth: false``: your own photos with
image-level labels only): what can be said without masks.

- image counts: the ids of every split role (the shard plan) and the images each product holds;
- the CAMs' foreground fraction against the background threshold (the share of an image's pixels whose
  largest CAM exceeds it, averaged over the images; :class:`irn_core.steps.evaluate.CamThresholdCurve`
  without confusion matrices), with the thresholds the run uses marked;
- the semantic pseudo labels' foreground share and the instance pseudo labels' counts;
- the per-stage diagnostics the run already wrote (``<product>/shard-*.diagnostics.json`` averaged over
  the shards, ``models/*.diagnostics.json``) and their warnings.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from irn_core.config import RunConfig
from irn_core.progress import track
from irn_core.steps.common import SPLIT_ROLES, shard_plan
from irn_core.store import ShardedStore

logger = logging.getLogger(__name__)

VOID_LABEL = 255


def cam_foreground_curve(config: RunConfig, cam_paths: Sequence[Path]) -> tuple[int, pd.DataFrame]:
    """(images, table) of the CAM shards: index ``threshold`` (:data:`CAM_THRESHOLD_CURVE`), column
    ``foreground_fraction`` (fraction, mean over the images)."""
    from irn_core.steps.evaluate import CAM_THRESHOLD_CURVE, CamThresholdCurve

    curve = CamThresholdCurve(CAM_THRESHOLD_CURVE, num_classes=1)
    with ShardedStore(cam_paths, product="cam") as store:
        ids = store.image_ids
        for image_id in track(ids, description="summary: cams", logger=logger, every=config.compute.progress_every):
            stored = store.read(image_id, ["cam_s1", "class_ids"])
            curve.add(stored["cam_s1"], stored["class_ids"], None)
    table = pd.DataFrame({"foreground_fraction": curve.foreground_fraction()},
                         index=pd.Index(curve.thresholds, name="threshold"))
    return curve.images, table


def semantic_foreground_share(config: RunConfig, semantic_paths: Sequence[Path]) -> dict[str, float | int]:
    """``images`` and ``foreground_share``: the mean over the images of the share of pixels labelled with a
    class (neither background 0 nor void 255) in ``semantic_s1`` (H, W)."""
    shares = []
    with ShardedStore(semantic_paths, product="semantic") as store:
        ids = store.image_ids
        for image_id in track(ids, description="summary: semantic", logger=logger,
                              every=config.compute.progress_every):
            labels = store.read(image_id, ["semantic_s1"])["semantic_s1"]
            shares.append(float(((labels != 0) & (labels != VOID_LABEL)).mean()))
    return {"images": len(shares), "foreground_share": float(np.mean(shares)) if shares else math.nan}


def instance_counts(config: RunConfig, instance_paths: Sequence[Path]) -> dict[str, float | int]:
    """``images``, ``instances`` (those with a score above 0: fragments under ``instances.min_fragment``
    score 0), ``per_image`` (their mean) and ``images_without_instances``."""
    counts = []
    with ShardedStore(instance_paths, product="instances") as store:
        ids = store.image_ids
        for image_id in track(ids, description="summary: instances", logger=logger,
                              every=config.compute.progress_every):
            scores = np.asarray(store.read(image_id, ["scores"])["scores"])
            counts.append(int((scores > 0).sum()))
    return {
        "images": len(counts),
        "instances": int(sum(counts)),
        "per_image": float(np.mean(counts)) if counts else math.nan,
        "images_without_instances": sum(1 for count in counts if count == 0),
    }


def read_diagnostics(run_dir: Path) -> tuple[dict[str, dict[str, float | int]], list[str]]:
    """The diagnostics the run's stages wrote: stage -> scalar statistic -> value (per-shard files
    ``<product>/shard-*.diagnostics.json``: the mean over the shards, ``images`` summed; ``models/<name>.diagnostics.json``:
    as written), and every warning once, in file order (prefixed with its stage)."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    warnings: list[str] = []
    paths = sorted(run_dir.glob("*/shard-*.diagnostics.json")) + sorted((run_dir / "models").glob("*.diagnostics.json"))
    for path in paths:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            logger.warning("%s: unreadable diagnostics, left out of the summary (%s)", path, error)
            continue
        stage = path.parent.name if path.parent.name != "models" else f"models/{path.name.split('.')[0]}"
        for name, value in (record.get("statistics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[stage][name].append(float(value))
        for warning in record.get("warnings") or []:
            text = f"{stage}: {warning}"
            if text not in warnings:
                warnings.append(text)
    means = {stage: {name: _combine(name, found) for name, found in stats.items()} for stage, stats in values.items()}
    return means, warnings


def _combine(name: str, values: list[float]) -> float | int:
    """Per-shard values of one statistic: ``images`` summed, anything else averaged."""
    return int(sum(values)) if name == "images" else float(np.mean(values))


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "" if math.isnan(value) else f"{value:.4g}"


def _threshold_notes(config: RunConfig) -> dict[float, str]:
    """The thresholds the run uses, for marking rows of the CAM curve."""
    notes: dict[float, list[str]] = defaultdict(list)
    notes[round(config.cam.eval_threshold, 4)].append("cam.eval_threshold")
    notes[round(config.ir_labels.fg_threshold, 4)].append("ir_labels.fg_threshold")
    notes[round(config.ir_labels.bg_threshold, 4)].append("ir_labels.bg_threshold")
    return {threshold: ", ".join(names) for threshold, names in notes.items()}


def summary_without_ground_truth(config: RunConfig, shards: Mapping[str, Sequence[Path]]) -> str:
    """The Markdown summary of a run without ground truth. ``shards``: product (``cam``, ``semantic``,
    ``instances``) -> its shard files (a product left out is not summarised)."""
    plan = shard_plan(config)
    splits = {"train": config.dataset.train_split, "infer": config.dataset.infer_split,
              "downstream": config.dataset.downstream_split, "val": config.dataset.val_split}
    lines = [
        f"# irn run '{config.name}' ({config.dataset.kind}), without ground truth\n",
        "evaluation.ground_truth is false: the splits have image-level labels only, so nothing is scored "
        "against masks (no mIoU, no AP). The figures below need no ground truth.\n",
        "## Images\n",
    ]
    rows = [{"role": role, "split": splits[role], "images": len(plan.all_ids(role))}
            for role in SPLIT_ROLES if splits[role]]
    lines.append(pd.DataFrame(rows).to_markdown(index=False) + "\n")
    figures: list[dict[str, str]] = []
    if shards.get("cam"):
        images, curve = cam_foreground_curve(config, shards["cam"])
        figures.append({"product": "CAMs", "figure": "images", "value": str(images)})
        notes = _threshold_notes(config)
        curve_rows = [{"background threshold": f"{threshold:.2f}",
                       "CAM foreground fraction (%)": _number(100 * fraction),
                       "used as": notes.get(round(threshold, 4), "")}
                      for threshold, fraction in curve["foreground_fraction"].items()]
    if shards.get("semantic"):
        semantic = semantic_foreground_share(config, shards["semantic"])
        figures.append({"product": "semantic pseudo labels", "figure": "images", "value": str(semantic["images"])})
        figures.append({"product": "semantic pseudo labels", "figure": "foreground share (%)",
                        "value": _number(100 * semantic["foreground_share"])})
    if shards.get("instances"):
        counts = instance_counts(config, shards["instances"])
        for name in ("images", "instances", "per_image", "images_without_instances"):
            figures.append({"product": "instance pseudo labels", "figure": name.replace("_", " "),
                            "value": _number(counts[name])})
    if figures:
        lines += ["## Pseudo labels\n", pd.DataFrame(figures).to_markdown(index=False, disable_numparse=True) + "\n"]
    if shards.get("cam"):
        lines += [
            "## CAM foreground fraction against the background threshold\n",
            "The share of an image's pixels whose largest CAM exceeds the threshold, averaged over the images.\n",
            pd.DataFrame(curve_rows).to_markdown(index=False, disable_numparse=True) + "\n",
        ]
    diagnostics, warnings = read_diagnostics(config.run_dir)
    if diagnostics:
        rows = [{"stage": stage, "statistic": name, "value": _number(value)}
                for stage, statistics in diagnostics.items() for name, value in statistics.items()]
        lines += ["## Stage diagnostics\n",
                  "From the run's `*/shard-*.diagnostics.json` (mean over the shards, images summed) and `models/*.diagnostics.json`.\n",
                  pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) + "\n"]
    if warnings:
        lines += ["## Warnings\n", "".join(f"- {warning}\n" for warning in warnings)]
        for warning in warnings:
            logger.warning("summary: %s", warning)
    return "\n".join(lines)
