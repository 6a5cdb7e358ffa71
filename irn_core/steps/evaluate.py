"""Entry points of the evaluation stage: CAMs, semantic and instance pseudo labels against ground truth.

Every table is written as CSV and Markdown (``<prefix>.csv``, ``<prefix>.md``); the summary gathers
the headline numbers of all of them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irn_core import evaluation
from irn_core.atomic import write_text_atomic
from irn_core.config import RunConfig
from irn_core.errors import DatasetError
from irn_core.progress import track
from irn_core.steps.common import open_run_dataset, shard_plan, skip_or_raise
from irn_core.store import ShardedStore

logger = logging.getLogger(__name__)


def cam_labels(cam_s1: np.ndarray, class_ids: np.ndarray, threshold: float) -> np.ndarray:
    """Semantic labels from full-resolution CAMs (K, H, W): a constant background channel at
    ``threshold`` prepended, argmax, channel k -> class_ids[k - 1] + 1 (the reference's eval_cam)."""
    height, width = cam_s1.shape[1:]
    scores = np.concatenate([np.full((1, height, width), threshold, np.float32), cam_s1.astype(np.float32)])
    lookup = np.concatenate([[0], np.asarray(class_ids, np.int64) + 1]).astype(np.uint8)
    return lookup[np.argmax(scores, axis=0)]


CAM_THRESHOLD_CURVE: tuple[float, ...] = tuple(round(0.05 * step, 2) for step in range(1, 13))
"""Background thresholds of the CAM mIoU curve, 0.05, 0.10, ..., 0.60 (as weakly supervised papers report)."""
CAM_THRESHOLDS_SUFFIX = "_thresholds"
"""The curve's table: ``<prefix>_thresholds.csv`` / ``.md`` beside the CAM table (``evaluation/cam_thresholds.*``)."""


def cam_top_and_labels(cam_s1: np.ndarray, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest CAM of every pixel and the label of its class: ``top`` (H, W) float32 (-inf without
    classes) and ``labels`` (H, W) uint8 (class_ids[k] + 1 of the first largest channel k).

    ``np.where(top > threshold, labels, 0)`` (threshold as float32) is :func:`cam_labels` at any threshold:
    the constant background channel comes first, so it wins ties, as in the reference's argmax.
    """
    height, width = cam_s1.shape[1:]
    if len(cam_s1) == 0:
        return np.full((height, width), -np.inf, np.float32), np.zeros((height, width), np.uint8)
    scores = cam_s1.astype(np.float32)
    lookup = (np.asarray(class_ids, np.int64) + 1).astype(np.uint8)
    return scores.max(axis=0), lookup[np.argmax(scores, axis=0)]


class CamThresholdCurve:
    """CAM mIoU at every background threshold of ``thresholds`` in one pass: one confusion matrix per
    threshold, accumulated image by image (no label map is kept), and the mean foreground fraction of
    the CAM labels (the share of an image's pixels whose largest CAM exceeds the threshold; it needs no
    ground truth), averaged over the images.
    """

    def __init__(self, thresholds: Sequence[float], num_classes: int) -> None:
        self.thresholds = tuple(float(threshold) for threshold in thresholds)
        self.num_classes = num_classes
        self.confusions = np.zeros((len(self.thresholds), num_classes, num_classes), np.int64)
        self.foreground_sum = np.zeros(len(self.thresholds), np.float64)
        self.images = 0

    def add(self, cam_s1: np.ndarray, class_ids: np.ndarray, truth: np.ndarray | None) -> None:
        """One image: ``cam_s1`` (K, H, W), ``class_ids`` (K,), ``truth`` (H, W) uint8 (255 void), or None
        without ground truth (only the foreground fraction is accumulated; mIoU stays NaN)."""
        top, labels = cam_top_and_labels(cam_s1, class_ids)
        for index, threshold in enumerate(self.thresholds):
            foreground = top > np.float32(threshold)
            self.foreground_sum[index] += float(foreground.mean())
            if truth is not None:
                prediction = np.where(foreground, labels, np.uint8(0))
                self.confusions[index] += evaluation.confusion_matrix(prediction, truth, self.num_classes)
        self.images += 1

    def miou(self) -> list[float]:
        """mIoU at each threshold (NaN before any image)."""
        return [float(evaluation.mean_iou(confusion)[1]) for confusion in self.confusions]

    def foreground_fraction(self) -> list[float]:
        """Mean foreground fraction of the CAM labels at each threshold (NaN before any image)."""
        if not self.images:
            return [math.nan] * len(self.thresholds)
        return [float(value) for value in self.foreground_sum / self.images]

    def table(self) -> pd.DataFrame:
        """Index ``threshold``; columns ``mIoU`` and ``foreground_fraction`` (fractions)."""
        frame = pd.DataFrame(
            {"mIoU": self.miou(), "foreground_fraction": self.foreground_fraction()},
            index=pd.Index(self.thresholds, name="threshold"),
        )
        return frame

    def best(self) -> tuple[float, float] | None:
        """(threshold, mIoU) of the highest mIoU (the lowest such threshold on ties); None before any image."""
        values = self.miou()
        if not self.images or all(math.isnan(value) for value in values):
            return None
        index = int(np.nanargmax(values))
        return self.thresholds[index], values[index]

    def metrics(self) -> dict[str, Any]:
        """The curve for the CAM evaluation's JSON: ``threshold_curve`` (thresholds, mIoU, foreground
        fraction, best threshold) and ``best_threshold_mIoU`` (a headline number)."""
        best = self.best()
        curve: dict[str, Any] = {
            "thresholds": list(self.thresholds),
            "mIoU": self.miou(),
            "foreground_fraction": self.foreground_fraction(),
            "best_threshold": None if best is None else best[0],
        }
        return {"threshold_curve": curve, **({} if best is None else {"best_threshold_mIoU": best[1]})}


def _infer_ids(config: RunConfig) -> list[str]:
    return shard_plan(config).all_ids("infer")


def _evaluated_ids(image_ids: Sequence[str], store: ShardedStore, skipped: dict[str, str]) -> list[str]:
    """The ids to evaluate: those the store holds; ids left out of it (``dataset.on_unreadable: skip``)
    go to ``skipped``."""
    ids = []
    for image_id in image_ids:
        if image_id in store.skipped and image_id not in store:
            skipped[image_id] = store.skipped[image_id]
        else:
            ids.append(image_id)
    return ids


def _write_skipped(output_prefix: Path, skipped: dict[str, str]) -> None:
    """List the images left out of an evaluation under its Markdown table (never silently)."""
    if not skipped:
        return
    markdown = output_prefix.with_suffix(".md")
    lines = [f"\n{len(skipped)} image(s) not evaluated (dataset.on_unreadable: skip):\n"]
    lines += [f"- `{image_id}`: {reason}" for image_id, reason in sorted(skipped.items())]
    write_text_atomic(markdown, markdown.read_text(encoding="utf-8") + "\n".join(lines) + "\n")


def _ground_truth(config: RunConfig, image_id: str, read: Any, skipped: dict[str, str]) -> Any:
    """``read(image_id)``, or None (and the id in ``skipped``) when its ground truth is unreadable and
    ``on_unreadable`` is ``skip``."""
    try:
        return read(image_id)
    except DatasetError as error:
        skip_or_raise(config, image_id, error, skipped)
        return None


def _semantic_evaluation(
    config: RunConfig,
    predictions: Iterable[tuple[str, np.ndarray]],
    output_prefix: Path,
    title: str,
    skipped: dict[str, str] | None = None,
    observe: Callable[[str, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Accumulate the confusion matrix image by image (no prediction is kept) and write the table;
    ``skipped``: ids left out so far (-> reason), listed with the table (ground truth that cannot be
    read is added to it under ``dataset.on_unreadable: skip``). ``observe(image_id, truth)`` is called
    with every ground truth read, before the next prediction is drawn."""
    skipped = {} if skipped is None else skipped
    dataset = open_run_dataset(config)
    num_classes = len(dataset.class_names) + 1
    confusion = np.zeros((num_classes, num_classes), np.int64)
    images = 0
    for image_id, prediction in predictions:
        truth = _ground_truth(config, image_id, dataset.semantic_mask, skipped)
        if truth is None:
            continue
        confusion += evaluation.confusion_matrix(prediction, truth, num_classes)
        if observe is not None:
            observe(image_id, truth)
        images += 1
    per_class, miou = evaluation.mean_iou(confusion)
    table = evaluation.semantic_table(per_class, list(dataset.class_names))
    evaluation.write_table(table, output_prefix)
    _write_skipped(output_prefix, skipped)
    logger.info("%s: mIoU %.2f over %d images (%d skipped)", title, 100 * miou, images, len(skipped))
    return {"mIoU": float(miou), "images": images, **({"skipped": dict(sorted(skipped.items()))} if skipped else {})}


def run_evaluate_cam(config: RunConfig, cam_paths: Sequence[Path], output_prefix: Path) -> dict[str, Any]:
    """mIoU of CAMs (background score ``cam.eval_threshold``) on the inference images, and in the same
    pass the curve of CAM mIoU and foreground fraction against the background threshold
    (:data:`CAM_THRESHOLD_CURVE`, :class:`CamThresholdCurve`), written to ``<prefix>_thresholds.csv``/``.md``
    and into the returned metrics (``threshold_curve``, ``best_threshold_mIoU``)."""

    skipped: dict[str, str] = {}
    curve = CamThresholdCurve(CAM_THRESHOLD_CURVE, len(open_run_dataset(config).class_names) + 1)
    current: dict[str, np.ndarray] = {}  # the CAM of the image being evaluated, for the curve

    def predictions(store: ShardedStore) -> Iterator[tuple[str, np.ndarray]]:
        present = _evaluated_ids(_infer_ids(config), store, skipped)
        for image_id in track(present, description="evaluate cams", logger=logger, every=config.compute.progress_every):
            stored = store.read(image_id, ["cam_s1", "class_ids"])
            current.update(stored)
            yield image_id, cam_labels(stored["cam_s1"], stored["class_ids"], config.cam.eval_threshold)

    def observe(image_id: str, truth: np.ndarray) -> None:
        curve.add(current["cam_s1"], current["class_ids"], truth)

    with ShardedStore(cam_paths, product="cam") as store:
        result = _semantic_evaluation(config, predictions(store), output_prefix, "CAM", skipped, observe)
    evaluation.write_table(curve.table(), output_prefix.with_name(output_prefix.name + CAM_THRESHOLDS_SUFFIX))
    best = curve.best()
    if best is not None:
        logger.info("CAM threshold curve: best background threshold %.2f, mIoU %.2f (%.2f at %.2f)",
                    best[0], 100 * best[1], 100 * result["mIoU"], config.cam.eval_threshold)
    return {**result, **curve.metrics()}


def run_evaluate_semantic(config: RunConfig, semantic_paths: Sequence[Path], output_prefix: Path) -> dict[str, float]:
    skipped: dict[str, str] = {}

    def predictions(store: ShardedStore) -> Iterator[tuple[str, np.ndarray]]:
        present = _evaluated_ids(_infer_ids(config), store, skipped)
        for image_id in track(
            present, description="evaluate semantic", logger=logger, every=config.compute.progress_every
        ):
            yield image_id, store.read(image_id, ["semantic_s1"])["semantic_s1"]

    with ShardedStore(semantic_paths, product="semantic") as store:
        return _semantic_evaluation(config, predictions(store), output_prefix, "semantic pseudo labels", skipped)


class _StoredInstances(Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Instance predictions read from the store one image at a time (for COCO AP over many images)."""

    def __init__(self, store: ShardedStore, image_ids: Sequence[str]) -> None:
        self.store = store
        self.image_ids = list(image_ids)

    def __getitem__(self, image_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stored = self.store.read(image_id, ["masks_s1", "class_ids", "scores"])
        return stored["masks_s1"], stored["class_ids"], stored["scores"]

    def __iter__(self) -> Iterator[str]:
        return iter(self.image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)


def _role_split(config: RunConfig, role: str) -> str | None:
    return {"infer": config.dataset.infer_split, "val": config.dataset.val_split}.get(role)


def coco_ground_truth(config: RunConfig, role: str, image_ids: Sequence[str]) -> object:
    """The pycocotools ``COCO`` ground truth of the ids of ``role``: a COCO dataset's own annotation file
    (crowd regions included), else one built from the dataset's instance masks."""
    dataset = open_run_dataset(config)
    if config.dataset.kind == "coco":
        split = _role_split(config, role)
        return dataset.ground_truth(split) if hasattr(dataset, "ground_truth") else dataset.coco
    from irn_core.export import coco_object, ground_truth_coco

    return coco_object(ground_truth_coco(dataset, image_ids))


def evaluate_instance_predictions(
    config: RunConfig,
    instance_paths: Sequence[Path],
    output_prefix: Path,
    *,
    role: str,
    product: str,
    title: str,
    coco_ap: bool,
) -> dict[str, float]:
    """VOC mask AP (ChainerCV rules) at the configured IoU thresholds and mAP^r_vol (0.1 ... 0.9) of the
    ``product`` shards (``masks_s1``, ``class_ids``, ``scores``) on the ids of split role ``role``
    (``infer``: pseudo labels, ``val``: downstream predictions); with ``coco_ap`` also COCO mask AP."""
    dataset = open_run_dataset(config)
    image_ids = shard_plan(config).all_ids(role)
    thresholds = tuple(sorted(set(config.evaluation.iou_thresholds) | set(evaluation.VOLUME_IOU_THRESHOLDS)))
    accumulator = evaluation.InstanceAPAccumulator(
        len(dataset.class_names), thresholds, matching=config.evaluation.matching
    )
    skipped: dict[str, str] = {}
    evaluated: list[str] = []
    with ShardedStore(instance_paths, product=product) as store:
        present = _evaluated_ids(image_ids, store, skipped)
        for image_id in track(
            present, description=f"evaluate {product}", logger=logger, every=config.compute.progress_every
        ):
            truth = _ground_truth(config, image_id, dataset.instance_masks, skipped)
            if truth is None:
                continue
            predicted = store.read(image_id, ["masks_s1", "class_ids", "scores"])
            gt_masks, gt_class_ids = truth
            accumulator.add(predicted["masks_s1"], predicted["class_ids"], predicted["scores"], gt_masks, gt_class_ids)
            evaluated.append(image_id)
    results = accumulator.result()
    class_names = list(dataset.class_names)
    table = evaluation.instance_table(
        {threshold: results[threshold] for threshold in config.evaluation.iou_thresholds}, class_names
    )
    table["AP^r_vol"] = evaluation.instance_table(results, class_names)["AP^r_vol"]
    evaluation.write_table(table, output_prefix)
    summary: dict[str, float | None] = {
        f"mAP@{threshold:g}": float(results[threshold][1]) for threshold in config.evaluation.iou_thresholds
    }
    summary["mAP_vol"] = float(evaluation.map_r_vol(results))
    if coco_ap:
        ground_truth = coco_ground_truth(config, role, evaluated)
        with ShardedStore(instance_paths, product=product) as store:
            coco = evaluation.coco_mask_ap(_StoredInstances(store, evaluated), ground_truth)
        summary.update({f"COCO {name}": value for name, value in coco.items()})
    _write_skipped(output_prefix, skipped)
    shown = ", ".join(f"{key} {evaluation.format_percent(value, '.2f')}" for key, value in summary.items())
    logger.info("%s: %s", title, shown)
    result: dict[str, Any] = {**summary, "images": len(evaluated)}
    if skipped:
        result["skipped"] = dict(sorted(skipped.items()))
    return result


def run_evaluate_instances(config: RunConfig, instance_paths: Sequence[Path], output_prefix: Path) -> dict[str, float]:
    """Instance pseudo labels on the inference images (COCO mask AP too on COCO datasets)."""
    return evaluate_instance_predictions(
        config, instance_paths, output_prefix, role="infer", product="instances", title="instance pseudo labels",
        coco_ap=config.dataset.kind == "coco",
    )


def run_evaluate_maskrcnn(config: RunConfig, prediction_paths: Sequence[Path], output_prefix: Path) -> dict[str, float]:
    """Mask R-CNN's predictions on the val images: mAP^r and COCO mask AP."""
    return evaluate_instance_predictions(
        config, prediction_paths, output_prefix, role="val", product="maskrcnn", title="Mask R-CNN", coco_ap=True
    )


SUMMARY_ROWS: tuple[tuple[str, str, str, str, float | None], ...] = (
    # (metrics file key, metric name, row label, split role, the paper's VOC 2012 figure)
    ("cam", "mIoU", "CAM (background 0.15)", "infer", 48.3),
    ("semantic", "mIoU", "semantic pseudo labels (random walk)", "infer", 66.5),
    ("instances", "mAP@0.25", "instance pseudo labels, mAP^r@0.25", "infer", None),
    ("instances", "mAP@0.5", "instance pseudo labels, mAP^r@0.5", "infer", 37.7),
    ("instances", "mAP@0.7", "instance pseudo labels, mAP^r@0.7", "infer", None),
    ("instances", "mAP@0.75", "instance pseudo labels, mAP^r@0.75", "infer", None),
    ("instances", "mAP_vol", "instance pseudo labels, mAP^r_vol", "infer", None),
    ("deeplab_pseudo", "mIoU", "DeepLab v2 trained on the pseudo labels", "val", 63.5),
    ("deeplab_ground_truth", "mIoU", "DeepLab v2 trained on ground truth (upper bound)", "val", None),
    ("maskrcnn", "mAP@0.25", "Mask R-CNN trained on the pseudo labels, mAP^r@0.25", "val", None),
    ("maskrcnn", "mAP@0.5", "Mask R-CNN trained on the pseudo labels, mAP^r@0.5", "val", 46.7),
    ("maskrcnn", "mAP@0.7", "Mask R-CNN trained on the pseudo labels, mAP^r@0.7", "val", 23.5),
    ("maskrcnn", "mAP@0.75", "Mask R-CNN trained on the pseudo labels, mAP^r@0.75", "val", None),
    ("maskrcnn", "mAP_vol", "Mask R-CNN trained on the pseudo labels, mAP^r_vol", "val", None),
)
"""The rows of the summary in the paper's order; a row appears when its metrics file has the metric.
The paper's figures (VOC 2012: pseudo labels on ``train``, downstream models on ``val``) are printed
beside ours for orientation only (README: where each comes from)."""


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _best_threshold_row(cam: Mapping[str, Any], split: str) -> dict[str, str]:
    """The summary row of the CAM threshold curve's best point."""
    thresholds = cam.get("threshold_curve", {}).get("thresholds") or list(CAM_THRESHOLD_CURVE)
    best = cam.get("threshold_curve", {}).get("best_threshold")
    where = f"{best:.2f}" if isinstance(best, (int, float)) else "?"
    curve_range = f"{min(thresholds):.2f}–{max(thresholds):.2f}"
    return {"stage": f"CAM at the best background threshold ({where}; curve {curve_range})",
            "split": split, "ours (%)": f"{100 * float(cam['best_threshold_mIoU']):.1f}", "paper, VOC 2012 (%)": ""}


def summary_warnings(metrics: Mapping[str, Mapping[str, Any]], walk_background: str = "constant") -> list[str]:
    """Warnings about the run as a whole: stages that made their input worse.

    ``metrics``: stage → the metrics its evaluation wrote (fractions, as in ``evaluation/*.json``);
    ``walk_background``: the run's ``random_walk.background`` (the warning suggests the other rule).
    """
    found = []
    cam, semantic = metrics.get("cam", {}).get("mIoU"), metrics.get("semantic", {}).get("mIoU")
    if cam is not None and semantic is not None and float(semantic) < float(cam):
        rule_hint = (
            ", which with the reference's background rule floods the image (try random_walk.background: walked, "
            "docs/real_photos.md)"
            if walk_background == "constant"
            else ""
        )
        found.append(
            f"the random walk lowered mIoU from {100 * float(cam):.1f} (CAM) to {100 * float(semantic):.1f} "
            "(semantic pseudo labels); likely causes: CAMs that already cover more than the objects (the walk "
            "spreads them further; see the CAM coverage in cam/*.diagnostics.json), confident-region labels "
            "that disagree with the objects (accuracy in ir_labels/*.diagnostics.json), a boundary map that "
            f"does not stop the walk (irnet/*.diagnostics.json){rule_hint}; "
            "benchmarks/real_photos/walk_analysis.py separates the causes"
        )
    pseudo, full = metrics.get("deeplab_pseudo", {}).get("mIoU"), metrics.get("deeplab_ground_truth", {}).get("mIoU")
    if pseudo is not None and full is not None and float(full) > 0 and float(pseudo) / float(full) < 0.5:
        found.append(
            f"DeepLab v2 on the pseudo labels reaches only {100 * float(pseudo) / float(full):.1f}% of the same "
            "network on ground truth; likely causes: weak semantic pseudo labels (see their mIoU), too short a "
            "schedule for the downstream split"
        )
    return found


def run_summary(
    config: RunConfig, metric_files: dict[str, Path], output: Path, shards: Mapping[str, Sequence[Path]] | None = None
) -> None:
    """One Markdown table of the headline numbers (percent) in the paper's order — CAM, semantic and
    instance pseudo labels, DeepLab v2 on pseudo labels and on ground truth with their ratio, Mask
    R-CNN — then every other metric the stages wrote (COCO AP, image counts).

    Without ground truth (``evaluation.ground_truth: false``) there are no metric files: the summary is
    :func:`irn_core.steps.ground_truth_free.summary_without_ground_truth` of ``shards`` (product -> files)."""
    if not config.evaluation.ground_truth:
        from irn_core.steps.ground_truth_free import summary_without_ground_truth

        write_text_atomic(output, summary_without_ground_truth(config, shards or {}))
        return
    metrics = {stage: json.loads(path.read_text(encoding="utf-8")) for stage, path in metric_files.items()}
    splits = {"infer": config.dataset.infer_split, "val": config.dataset.val_split or ""}
    rows = []
    shown: set[tuple[str, str]] = set()
    for stage, name, label, role, paper in SUMMARY_ROWS:
        if name in metrics.get(stage, {}):
            value = 100 * float(metrics[stage][name])
            rows.append({"stage": label, "split": splits[role], "ours (%)": f"{value:.1f}", "paper, VOC 2012 (%)": _percent(paper)})
            shown.add((stage, name))
        if (stage, name) == ("cam", "mIoU") and "best_threshold_mIoU" in metrics.get("cam", {}):
            rows.append(_best_threshold_row(metrics["cam"], splits[role]))
            shown.add(("cam", "best_threshold_mIoU"))
        if stage == "deeplab_ground_truth" and "mIoU" in metrics.get("deeplab_pseudo", {}) and "mIoU" in metrics.get(stage, {}):
            ratio = float(metrics["deeplab_pseudo"]["mIoU"]) / max(float(metrics[stage]["mIoU"]), 1e-12)
            rows.append({"stage": "DeepLab v2: pseudo labels / ground truth", "split": splits["val"],
                         "ours (%)": f"{100 * ratio:.1f}", "paper, VOC 2012 (%)": "89.4 (test)"})
    skipped: dict[str, str] = {}
    for values in metrics.values():
        skipped.update(values.get("skipped", {}))
    extra = [
        {"stage": stage, "metric": name,
         "value": value if name == "images" else evaluation.format_percent(value, ".2f")}
        for stage, values in metrics.items()
        for name, value in values.items()
        if (stage, name) not in shown and name != "skipped" and not isinstance(value, (dict, list))
    ]
    header = f"# irn run '{config.name}' ({config.dataset.kind})\n\n"
    text = header + pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) + "\n"
    if extra:
        text += "\nOther figures (percent; `images`: how many were evaluated):\n\n"
        text += pd.DataFrame(extra).to_markdown(index=False) + "\n"
    warnings = summary_warnings(metrics, config.random_walk.background)
    for warning in warnings:
        logger.warning("summary: %s", warning)
    if warnings:
        text += "\n**Warnings**\n\n" + "".join(f"- {warning}\n" for warning in warnings)
    if skipped:
        text += (
            f"\n**{len(skipped)} image(s) left out** (dataset.on_unreadable: skip; reasons in the stage tables): "
            + ", ".join(f"`{image_id}`" for image_id in sorted(skipped)) + "\n"
        )
    write_text_atomic(output, text)
