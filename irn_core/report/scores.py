"""One pass over a gallery's images: per-image mIoU of every semantic product (to rank the images)
and the instance AP accumulators of every instance product (for the precision-recall curves).

The ranking score of an image is the mIoU of its label map against its ground truth over the
classes present in either (background included), from :func:`irn_core.evaluation.confusion_matrix`
and :func:`irn_core.evaluation.mean_iou`. The accumulators are the evaluation's own
(:class:`irn_core.evaluation.InstanceAPAccumulator`, same thresholds and matching rule), so the APs
of the curves are the evaluation's APs when the ids are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from irn_core import evaluation
from irn_core.config import RunConfig
from irn_core.data.registry import SegmentationDataset
from irn_core.errors import IrnError
from irn_core.progress import track
from irn_core.report.sources import ProductSource, RunSources

logger = logging.getLogger(__name__)


@dataclass
class GalleryScores:
    """Per-image mIoU (semantic products) and AP accumulators (instance products) of one gallery."""

    ids: list[str]
    per_image_iou: dict[ProductSource, dict[str, float]] = field(default_factory=dict)
    accumulators: dict[ProductSource, evaluation.InstanceAPAccumulator] = field(default_factory=dict)
    images_scored: dict[ProductSource, int] = field(default_factory=dict)

    def ranking_source(self) -> ProductSource | None:
        """The first semantic product (registry order) with scored images: what ranks the gallery."""
        for source, values in self.per_image_iou.items():
            if values:
                return source
        return None


def image_miou(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """mIoU of one label map (H, W) against its ground truth (255 ignored; predicted 255 counts as
    background) over the classes present in either."""
    confusion = evaluation.confusion_matrix(prediction, truth, num_classes, prediction_void_to=0)
    _, miou = evaluation.mean_iou(confusion)
    return miou


def score_gallery(
    ids: Sequence[str], sources: RunSources, dataset: SegmentationDataset, config: RunConfig, *, description: str
) -> GalleryScores:
    """Score every id of ``ids`` for every semantic and instance product that holds it."""
    semantic_sources = sources.of_kind("semantic")
    instance_sources = sources.of_kind("instances")
    num_classes = len(dataset.class_names)
    scores = GalleryScores(ids=list(ids))
    scores.per_image_iou = {source: {} for source in semantic_sources}
    scores.accumulators = {
        source: evaluation.InstanceAPAccumulator(
            num_classes, config.evaluation.iou_thresholds, matching=config.evaluation.matching
        )
        for source in instance_sources
    }
    scores.images_scored = {source: 0 for source in (*semantic_sources, *instance_sources)}
    if not config.evaluation.ground_truth or (not semantic_sources and not instance_sources):
        return scores  # nothing to score against: the gallery is random images
    for image_id in track(ids, description=description, logger=logger, every=config.compute.progress_every):
        semantic_holders = [source for source in semantic_sources if image_id in sources.stores[source]]
        instance_holders = [source for source in instance_sources if image_id in sources.stores[source]]
        if not semantic_holders and not instance_holders:
            continue
        try:
            truth = dataset.semantic_mask(image_id) if semantic_holders else None
            gt_masks, gt_class_ids = dataset.instance_masks(image_id) if instance_holders else (None, None)
        except IrnError as error:
            logger.warning("%s not scored: %s", image_id, error)
            continue
        for source in semantic_holders:
            prediction = sources.read(source, image_id)["semantic_s1"]
            scores.per_image_iou[source][image_id] = image_miou(prediction, truth, num_classes + 1)
            scores.images_scored[source] += 1
        for source in instance_holders:
            stored = sources.read(source, image_id)
            scores.accumulators[source].add(
                stored["masks_s1"], stored["class_ids"], stored["scores"], gt_masks, gt_class_ids
            )
            scores.images_scored[source] += 1
    return scores


@dataclass(frozen=True)
class Selection:
    """A gallery row: the image id, why it was chosen ('best', 'median', 'worst', 'random') and its
    ranking mIoU (None when the gallery has no ranking product)."""

    image_id: str
    reason: str
    miou: float | None


def select_images(
    ids: Sequence[str], per_image_iou: dict[str, float] | None, *, random_count: int, seed: int
) -> list[Selection]:
    """The best, median and worst images by ``per_image_iou`` (ties broken by id), then
    ``random_count`` others drawn without replacement with ``seed`` (from the ids in sorted order,
    so the draw does not depend on shard order). Without scores: only the random draw."""
    chosen: list[Selection] = []
    if per_image_iou:
        ranked = sorted(per_image_iou, key=lambda image_id: (-per_image_iou[image_id], image_id))
        picks = (("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1]))
        for reason, image_id in picks:
            if all(selection.image_id != image_id for selection in chosen):
                chosen.append(Selection(image_id, reason, per_image_iou[image_id]))
    taken = {selection.image_id for selection in chosen}
    remaining = sorted(image_id for image_id in set(ids) if image_id not in taken)
    count = min(random_count, len(remaining))
    if count:
        drawn = np.random.default_rng(seed).choice(len(remaining), size=count, replace=False)
        for index in sorted(drawn.tolist()):
            image_id = remaining[index]
            miou = per_image_iou.get(image_id) if per_image_iou else None
            chosen.append(Selection(image_id, "random", miou))
    return chosen


def precision_recall_curves(
    accumulator: evaluation.InstanceAPAccumulator,
) -> dict[float, list[tuple[np.ndarray, np.ndarray, float] | None]]:
    """For each IoU threshold of ``accumulator``: per class (precision (n,), recall (n,), AP) in
    score order, or None for a class without ground truth."""
    curves: dict[float, list[tuple[np.ndarray, np.ndarray, float] | None]] = {}
    for threshold in accumulator.iou_thresholds:
        precision, recall = accumulator.precision_recall(threshold)
        per_class: list[tuple[np.ndarray, np.ndarray, float] | None] = []
        for class_precision, class_recall in zip(precision, recall):
            if class_precision is None or class_recall is None:
                per_class.append(None)
            else:
                ap = evaluation.voc_ap(class_precision, class_recall)
                per_class.append((np.nan_to_num(class_precision), class_recall, ap))
        curves[threshold] = per_class
    return curves
