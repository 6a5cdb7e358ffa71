"""Evaluation: semantic confusion / IoU, VOC mask AP (ChainerCV semantics), COCO mask AP, result tables.

Semantic segmentation follows chainercv's ``calc_semantic_segmentation_confusion`` and
``calc_semantic_segmentation_iou``: rows of the confusion matrix are ground truth, columns predictions;
ground-truth pixels equal to ``ignore_index`` (255; chainercv uses -1) are skipped;
IoU_c = TP_c / (GT_c + Pred_c − TP_c), NaN for a class absent from both; mIoU = nanmean over all classes,
background included.

Instance segmentation follows chainercv's ``eval_instance_segmentation_voc`` with ``use_07_metric=False``
(what the reference's ``eval_ins_seg`` calls), restated here:

1. Per image, for every class l present among its predictions or ground truths: the class's predictions are
   ordered by ``scores.argsort()[::-1]`` (that exact numpy call, so score ties break as in chainercv);
   the class's ground-truth count is added to n_pos[l] and its scores are recorded. With no ground truth of
   l in the image every prediction is a false positive. Otherwise each prediction, in that order, is matched:

   - ``matching="chainercv"`` (default): its ground truth is the argmax of its mask IoU over *all* ground
     truths of l (mask IoUs in float32, as chainercv's ``mask_iou``); IoU below the threshold → false positive;
     else true positive if that ground truth is not yet taken (then it is taken), false positive if it is.
     A prediction whose best ground truth is taken does NOT fall back to another one (FCIS / chainercv rule).
   - ``matching="unmatched"``: its ground truth is the highest-IoU ground truth *not yet taken* (the rule
     the issue text words, and COCO's); true positive (taking it) if that IoU reaches the threshold.

2. Per class over all images: scores concatenated in image order, ordered by ``argsort()[::-1]``;
   cumulative TP/FP give precision TP/(TP+FP) and recall TP/n_pos.
3. AP = area under the interpolated precision–recall curve (VOC2010+): precision padded with 0 at both
   ends, recall with 0 and 1, precision made non-increasing from the right, summed over the recall steps.
   A class with ground truth but no prediction scores 0; a class without ground truth (with or without
   predictions) is NaN; mAP = nanmean over classes.

mAP^r_vol (Hariharan et al.) is the mean of the mAPs at IoU 0.1, 0.2, …, 0.9.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irn_core.atomic import atomic_path
from irn_core.errors import InputError

logger = logging.getLogger(__name__)

#: IoU thresholds reported by default (mAP^r at 0.25, 0.5, 0.7 and 0.75).
DEFAULT_IOU_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.7, 0.75)
#: IoU thresholds averaged by mAP^r_vol.
VOLUME_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * step, 1) for step in range(1, 10))
#: Both sets, sorted: what :class:`InstanceAPAccumulator` evaluates by default.
ALL_IOU_THRESHOLDS: tuple[float, ...] = tuple(sorted(set(DEFAULT_IOU_THRESHOLDS) | set(VOLUME_IOU_THRESHOLDS)))
#: Matching rules of :class:`InstanceAPAccumulator`.
MATCHING_RULES: tuple[str, ...] = ("chainercv", "unmatched")
#: Names of the 12 numbers of pycocotools' ``COCOeval.summarize``, in its order.
COCO_STAT_NAMES: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def _to_numpy(array: Any) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (detached, moved to the CPU) or sequence."""
    if hasattr(array, "detach") and hasattr(array, "cpu"):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN values; NaN (without a warning) if all are NaN."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


# ---------------------------------------------------------------------------------------------- semantic


def _is_single_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (hasattr(value, "detach") and hasattr(value, "ndim"))


def _label_pairs(preds: Any, gts: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if _is_single_array(preds) and _is_single_array(gts):
        if preds.ndim == 2 and gts.ndim == 2:
            yield _to_numpy(preds), _to_numpy(gts)
            return
        if preds.ndim == 3 and gts.ndim == 3:
            if preds.shape[0] != gts.shape[0]:
                raise InputError(f"{preds.shape[0]} predictions but {gts.shape[0]} ground truths")
            for pred, gt in zip(preds, gts):
                yield _to_numpy(pred), _to_numpy(gt)
            return
        raise InputError(
            f"label maps must be (H, W) or (N, H, W), got predictions {tuple(preds.shape)} "
            f"and ground truths {tuple(gts.shape)}"
        )
    pred_iterator = iter(preds)
    gt_iterator = iter(gts)
    count = 0
    sentinel = object()
    while True:
        pred = next(pred_iterator, sentinel)
        gt = next(gt_iterator, sentinel)
        if pred is sentinel and gt is sentinel:
            return
        if pred is sentinel or gt is sentinel:
            raise InputError(
                f"predictions and ground truths differ in number (one ran out after {count} label maps)"
            )
        count += 1
        yield _to_numpy(pred), _to_numpy(gt)


def confusion_matrix(
    preds: Any,
    gts: Any,
    num_classes: int,
    *,
    ignore_index: int = 255,
    prediction_void_to: int | None = None,
) -> np.ndarray:
    """Confusion matrix of label maps: (num_classes, num_classes) int64, rows ground truth, columns prediction.

    ``preds``, ``gts``: one (H, W) pair, an (N, H, W) pair, or two iterables of (H, W) maps (numpy or torch,
    any integer dtype). Ground-truth pixels equal to ``ignore_index`` are skipped. Other ground-truth values
    and every prediction must lie in [0, num_classes): anything else raises :class:`InputError` (chainercv
    would silently grow the matrix). ``prediction_void_to``: if given, predictions equal to ``ignore_index``
    are first replaced by it — the reference's ``eval_sem_seg`` does this with 0 (``preds[preds == 255] = 0``).
    """
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for index, (pred, gt) in enumerate(_label_pairs(preds, gts)):
        if pred.ndim != 2 or gt.ndim != 2:
            raise InputError(f"label map pair {index}: expected (H, W) maps, got {pred.shape} and {gt.shape}")
        if pred.shape != gt.shape:
            raise InputError(f"label map pair {index}: prediction {pred.shape} and ground truth {gt.shape} differ")
        if not (np.issubdtype(pred.dtype, np.integer) or pred.dtype == bool) or not (
            np.issubdtype(gt.dtype, np.integer) or gt.dtype == bool
        ):
            raise InputError(f"label map pair {index}: integer label maps expected, got {pred.dtype} and {gt.dtype}")
        pred = pred.astype(np.int64).ravel()
        gt = gt.astype(np.int64).ravel()
        if prediction_void_to is not None:
            pred = np.where(pred == ignore_index, prediction_void_to, pred)
        bad_pred = (pred < 0) | (pred >= num_classes)
        if bad_pred.any():
            raise InputError(
                f"label map pair {index}: predictions hold values {np.unique(pred[bad_pred]).tolist()} outside "
                f"[0, {num_classes}) (use prediction_void_to=0 to map {ignore_index} to background, as the reference)"
            )
        valid = gt != ignore_index
        gt_valid = gt[valid]
        bad_gt = (gt_valid < 0) | (gt_valid >= num_classes)
        if bad_gt.any():
            raise InputError(
                f"label map pair {index}: ground truth holds values {np.unique(gt_valid[bad_gt]).tolist()} outside "
                f"[0, {num_classes}) other than ignore_index {ignore_index}"
            )
        confusion += np.bincount(
            num_classes * gt_valid + pred[valid], minlength=num_classes * num_classes
        ).reshape(num_classes, num_classes)
    return confusion


def mean_iou(confusion: Any) -> tuple[np.ndarray, float]:
    """Per-class IoU (C,) float64 (NaN where a class is absent from ground truth and prediction) and mIoU.

    IoU_c = TP_c / (GT_c + Pred_c − TP_c) with GT_c the row sum and Pred_c the column sum; mIoU = nanmean.
    """
    confusion = _to_numpy(confusion).astype(np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise InputError(f"confusion matrix must be square, got {confusion.shape}")
    true_positive = np.diag(confusion)
    denominator = confusion.sum(axis=1) + confusion.sum(axis=0) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = true_positive / denominator
    return iou, _nanmean(iou)


def error_ratios(confusion: Any) -> tuple[np.ndarray, np.ndarray]:
    """The reference ``eval_sem_seg``'s error split: (false-positive ratio (C,), false-negative ratio (C,)).

    With D_c = GT_c + Pred_c − TP_c: fp_c = 1 − GT_c / D_c (share of D_c predicted c but not c) and
    fn_c = 1 − Pred_c / D_c (share of D_c that is c but predicted otherwise); IoU_c = 1 − fp_c − fn_c.
    """
    confusion = _to_numpy(confusion).astype(np.float64)
    ground_truth = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    denominator = ground_truth + predicted - np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - ground_truth / denominator, 1.0 - predicted / denominator


# ---------------------------------------------------------------------------------------------- instance


def mask_iou(masks_a: Any, masks_b: Any) -> np.ndarray:
    """IoU of every pair of masks: (N, M) float32, |A ∩ B| / |A ∪ B| (NaN if both masks are empty).

    ``masks_a``: (N, H, W) bool, ``masks_b``: (M, H, W) bool. Computed exactly in integers, then stored as
    float32 as chainercv's ``mask_iou`` does (its threshold comparisons and argmax see float32 values).
    """
    masks_a = _to_numpy(masks_a).astype(bool, copy=False)
    masks_b = _to_numpy(masks_b).astype(bool, copy=False)
    if masks_a.ndim != 3 or masks_b.ndim != 3 or masks_a.shape[1:] != masks_b.shape[1:]:
        raise InputError(f"masks must be (N, H, W) and (M, H, W) of one size, got {masks_a.shape} and {masks_b.shape}")
    count_a, count_b = masks_a.shape[0], masks_b.shape[0]
    pixels = masks_a.shape[1] * masks_a.shape[2]
    # Float32 products are exact while every partial sum is an integer below 2**24.
    dtype = np.float32 if pixels < 2**24 else np.float64
    flat_a = masks_a.reshape(count_a, pixels).astype(dtype)
    flat_b = masks_b.reshape(count_b, pixels).astype(dtype)
    intersection = (flat_a @ flat_b.T).astype(np.float64)
    area_a = masks_a.reshape(count_a, pixels).sum(axis=1).astype(np.float64)
    area_b = masks_b.reshape(count_b, pixels).sum(axis=1).astype(np.float64)
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return (intersection / union).astype(np.float32)


def _match_chainercv(iou: np.ndarray, threshold: float) -> np.ndarray:
    """chainercv's greedy matching; ``iou`` (P, G) float32 with predictions in score order → (P,) int8 (1 = TP)."""
    gt_index = iou.argmax(axis=1)
    gt_index[iou.max(axis=1) < np.float32(threshold)] = -1
    taken = np.zeros(iou.shape[1], dtype=bool)
    matches = np.zeros(iou.shape[0], dtype=np.int8)
    for prediction, index in enumerate(gt_index):
        if index >= 0:
            matches[prediction] = 0 if taken[index] else 1
            taken[index] = True
    return matches


def _match_unmatched(iou: np.ndarray, threshold: float) -> np.ndarray:
    """Each prediction (score order) takes the highest-IoU ground truth not yet taken, if IoU >= threshold."""
    taken = np.zeros(iou.shape[1], dtype=bool)
    matches = np.zeros(iou.shape[0], dtype=np.int8)
    for prediction in range(iou.shape[0]):
        if taken.all():
            break
        candidates = np.where(taken, np.float32(-np.inf), iou[prediction])
        index = int(candidates.argmax())
        if not candidates[index] < np.float32(threshold):
            matches[prediction] = 1
            taken[index] = True
    return matches


def voc_ap(precision: np.ndarray | None, recall: np.ndarray | None) -> float:
    """Area under the interpolated precision–recall curve (VOC2010+, chainercv ``use_07_metric=False``).

    NaN if either is None (a class without ground truth).
    """
    if precision is None or recall is None:
        return math.nan
    padded_precision = np.concatenate(([0.0], np.nan_to_num(precision), [0.0]))
    padded_recall = np.concatenate(([0.0], recall, [1.0]))
    padded_precision = np.maximum.accumulate(padded_precision[::-1])[::-1]
    steps = np.where(padded_recall[1:] != padded_recall[:-1])[0]
    return float(np.sum((padded_recall[steps + 1] - padded_recall[steps]) * padded_precision[steps + 1]))


def _as_instances(
    masks: Any, class_ids: Any, scores: Any | None, num_classes: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    masks = _to_numpy(masks)
    class_ids = _to_numpy(class_ids).reshape(-1)
    if masks.size == 0 and masks.ndim != 3:
        masks = masks.reshape(0, 0, 0)
    if masks.ndim != 3:
        raise InputError(f"{what} masks must be (N, H, W), got {masks.shape}")
    if masks.shape[0] != class_ids.shape[0]:
        raise InputError(f"{what}: {masks.shape[0]} masks but {class_ids.shape[0]} class ids")
    if class_ids.size and not np.issubdtype(class_ids.dtype, np.integer):
        if not np.all(np.equal(np.mod(class_ids, 1), 0)):
            raise InputError(f"{what} class ids must be integers, got {class_ids.dtype}")
    class_ids = class_ids.astype(np.int64)
    if class_ids.size and (class_ids.min() < 0 or class_ids.max() >= num_classes):
        raise InputError(f"{what} class ids {np.unique(class_ids).tolist()} outside [0, {num_classes})")
    if scores is not None:
        scores = _to_numpy(scores).reshape(-1)
        if scores.shape[0] != masks.shape[0]:
            raise InputError(f"{what}: {masks.shape[0]} masks but {scores.shape[0]} scores")
        if scores.size and not np.all(np.isfinite(scores)):
            raise InputError(f"{what} scores must be finite")
    return masks.astype(bool, copy=False), class_ids, scores


class InstanceAPAccumulator:
    """Streaming VOC mask AP at several IoU thresholds (see the module docstring for the exact semantics).

    :meth:`add` takes one image at a time, computes each class's prediction × ground-truth mask IoUs once
    and reuses them for every threshold; only scores, match flags and ground-truth counts are kept.
    """

    def __init__(
        self,
        num_classes: int,
        iou_thresholds: Sequence[float] = ALL_IOU_THRESHOLDS,
        *,
        matching: str = "chainercv",
    ) -> None:
        if num_classes < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}")
        if matching not in MATCHING_RULES:
            raise InputError(f"matching must be one of {MATCHING_RULES}, got {matching!r}")
        thresholds = tuple(float(threshold) for threshold in iou_thresholds)
        if not thresholds or any(not 0.0 <= threshold <= 1.0 for threshold in thresholds):
            raise InputError(f"IoU thresholds must be a non-empty set of values in [0, 1], got {iou_thresholds}")
        if len(set(thresholds)) != len(thresholds):
            raise InputError(f"IoU thresholds listed twice: {iou_thresholds}")
        self.num_classes = int(num_classes)
        self.iou_thresholds = thresholds
        self.matching = matching
        self._match = _match_chainercv if matching == "chainercv" else _match_unmatched
        self.n_images = 0
        self._n_positive = np.zeros(self.num_classes, dtype=np.int64)
        self._scores: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        self._matches: dict[float, list[list[np.ndarray]]] = {
            threshold: [[] for _ in range(self.num_classes)] for threshold in thresholds
        }

    def add(
        self, pred_masks: Any, pred_class_ids: Any, pred_scores: Any, gt_masks: Any, gt_class_ids: Any
    ) -> None:
        """Add one image.

        ``pred_masks``: (N, H, W) bool; ``pred_class_ids``: (N,) int, 0-based; ``pred_scores``: (N,) float;
        ``gt_masks``: (M, H, W) bool; ``gt_class_ids``: (M,) int. numpy or torch; N or M may be 0.
        """
        pred_masks, pred_class_ids, pred_scores = _as_instances(
            pred_masks, pred_class_ids, pred_scores, self.num_classes, f"image {self.n_images} predicted"
        )
        gt_masks, gt_class_ids, _ = _as_instances(
            gt_masks, gt_class_ids, None, self.num_classes, f"image {self.n_images} ground-truth"
        )
        assert pred_scores is not None
        if len(pred_masks) and len(gt_masks) and pred_masks.shape[1:] != gt_masks.shape[1:]:
            raise InputError(
                f"image {self.n_images}: predicted masks {pred_masks.shape[1:]} and ground-truth masks "
                f"{gt_masks.shape[1:]} differ in size"
            )
        for label in np.unique(np.concatenate((pred_class_ids, gt_class_ids)).astype(int)):
            keep = pred_class_ids == label
            class_masks = pred_masks[keep]
            class_scores = pred_scores[keep]
            order = class_scores.argsort()[::-1]
            class_masks = class_masks[order]
            class_scores = class_scores[order]
            gt_keep = gt_class_ids == label
            self._n_positive[label] += int(gt_keep.sum())
            if len(class_scores) == 0:
                continue
            self._scores[label].append(class_scores)
            if not gt_keep.any():
                for threshold in self.iou_thresholds:
                    self._matches[threshold][label].append(np.zeros(len(class_scores), dtype=np.int8))
                continue
            iou = mask_iou(class_masks, gt_masks[gt_keep])
            for threshold in self.iou_thresholds:
                self._matches[threshold][label].append(self._match(iou, threshold))
        self.n_images += 1

    def precision_recall(self, iou_threshold: float) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
        """Per-class precision and recall arrays (None where chainercv has None: no ground truth → no recall)."""
        threshold = self._threshold_key(iou_threshold)
        precision: list[np.ndarray | None] = [None] * self.num_classes
        recall: list[np.ndarray | None] = [None] * self.num_classes
        for label in range(self.num_classes):
            # Empty per-image arrays are skipped, as chainercv's list.extend adds nothing for them
            # (and an empty float64 array would otherwise change the dtype, hence the tie order).
            scores = self._scores[label]
            score_array = np.concatenate(scores) if scores else np.array([])
            match_list = self._matches[threshold][label]
            match_array = np.concatenate(match_list) if match_list else np.array([], dtype=np.int8)
            order = score_array.argsort()[::-1]
            match_array = match_array[order]
            true_positive = np.cumsum(match_array == 1)
            false_positive = np.cumsum(match_array == 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                precision[label] = true_positive / (false_positive + true_positive)
            if self._n_positive[label] > 0:
                recall[label] = true_positive / self._n_positive[label]
        return precision, recall

    def result(self) -> dict[float, tuple[np.ndarray, float]]:
        """For each IoU threshold: (per-class AP (num_classes,) float64, NaN without ground truth; mAP)."""
        results: dict[float, tuple[np.ndarray, float]] = {}
        for threshold in self.iou_thresholds:
            precision, recall = self.precision_recall(threshold)
            ap = np.array([voc_ap(precision[label], recall[label]) for label in range(self.num_classes)])
            results[threshold] = (ap, _nanmean(ap))
        return results

    def _threshold_key(self, iou_threshold: float) -> float:
        for threshold in self.iou_thresholds:
            if math.isclose(threshold, iou_threshold, abs_tol=1e-9):
                return threshold
        raise InputError(f"IoU threshold {iou_threshold} not evaluated (have {self.iou_thresholds})")


def instance_ap(
    pred_masks: Sequence[Any],
    pred_class_ids: Sequence[Any],
    pred_scores: Sequence[Any],
    gt_masks: Sequence[Any],
    gt_class_ids: Sequence[Any],
    *,
    iou_threshold: float,
    num_classes: int,
    matching: str = "chainercv",
) -> tuple[np.ndarray, float]:
    """VOC mask AP at one IoU threshold: (per-class AP (num_classes,) float64, mAP).

    Each argument is a per-image sequence of what :meth:`InstanceAPAccumulator.add` takes; with the default
    ``matching="chainercv"`` this equals chainercv's ``eval_instance_segmentation_voc(..., iou_thresh=...,
    use_07_metric=False)`` (its 'ap' padded with NaN to ``num_classes``, and 'map').
    """
    accumulator = InstanceAPAccumulator(num_classes, (iou_threshold,), matching=matching)
    per_image = _zip_equal(
        ("pred_masks", pred_masks),
        ("pred_class_ids", pred_class_ids),
        ("pred_scores", pred_scores),
        ("gt_masks", gt_masks),
        ("gt_class_ids", gt_class_ids),
    )
    for image in per_image:
        accumulator.add(*image)
    return accumulator.result()[accumulator.iou_thresholds[0]]


def _zip_equal(*named: tuple[str, Iterable[Any]]) -> Iterator[tuple[Any, ...]]:
    iterators = [iter(sequence) for _, sequence in named]
    sentinel = object()
    count = 0
    while True:
        items = [next(iterator, sentinel) for iterator in iterators]
        finished = [item is sentinel for item in items]
        if all(finished):
            return
        if any(finished):
            short = [name for (name, _), done in zip(named, finished) if done]
            raise InputError(f"per-image sequences differ in length: {', '.join(short)} ended after {count} images")
        count += 1
        yield tuple(items)


def map_r_vol(results: Mapping[float, tuple[np.ndarray, float]]) -> float:
    """mAP^r_vol: the mean of the mAPs at IoU 0.1, 0.2, …, 0.9 (all must be in ``results``)."""
    maps = []
    for threshold in VOLUME_IOU_THRESHOLDS:
        key = _find_threshold(results, threshold)
        if key is None:
            raise InputError(f"mAP^r_vol needs the IoU thresholds {VOLUME_IOU_THRESHOLDS}; {threshold} is missing")
        maps.append(results[key][1])
    return float(np.mean(maps))


def _find_threshold(results: Mapping[float, Any], threshold: float) -> float | None:
    for key in results:
        if math.isclose(float(key), threshold, abs_tol=1e-9):
            return key
    return None


# ---------------------------------------------------------------------------------------------- COCO


def coco_mask_ap(
    predictions: Mapping[str | int, Any],
    coco_gt: Any,
    *,
    image_ids: Sequence[str | int] | None = None,
) -> dict[str, float | None]:
    """COCO mask AP with pycocotools ``COCOeval(iouType="segm")``: the 12 numbers of ``summarize``
    (None where pycocotools reports -1: no ground-truth object of that area range, see :func:`coco_stat`).

    ``predictions``: image id → (masks (N, H, W) bool, class_ids (N,) int, scores (N,) float), or an object
    with ``masks``, ``class_ids`` and ``scores`` attributes. An image id is the file stem (as
    :class:`irn_core.data.coco.COCODataset` uses) or the integer COCO id. Class ids are contiguous 0-based,
    in increasing category-id order. ``coco_gt``: the ground-truth ``pycocotools.coco.COCO``.
    ``image_ids``: the images evaluated; by default the keys of ``predictions`` (so an image processed with
    no detection must still be given, with N = 0, or its ground truth is not counted as missed).
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    category_ids = sorted(int(category_id) for category_id in coco_gt.getCatIds())
    stem_to_id = {Path(str(record["file_name"])).stem: int(record["id"]) for record in coco_gt.dataset["images"]}

    def coco_id(image_id: str | int) -> int:
        if isinstance(image_id, (int, np.integer)):
            if int(image_id) not in coco_gt.imgs:
                raise InputError(f"COCO image id {image_id} is not in the ground truth")
            return int(image_id)
        if image_id not in stem_to_id:
            raise InputError(f"image id {image_id} is not in the COCO ground truth")
        return stem_to_id[image_id]

    results: list[dict[str, Any]] = []
    for image_id, prediction in predictions.items():
        if hasattr(prediction, "masks"):
            masks, class_ids, scores = prediction.masks, prediction.class_ids, prediction.scores
        else:
            masks, class_ids, scores = prediction
        masks, class_ids, scores = _as_instances(masks, class_ids, scores, len(category_ids), f"image {image_id}")
        assert scores is not None
        numeric_id = coco_id(image_id)
        record = coco_gt.imgs[numeric_id]
        if len(masks) and masks.shape[1:] != (int(record["height"]), int(record["width"])):
            raise InputError(
                f"image {image_id}: predicted masks {masks.shape[1:]} differ from the image size "
                f"{(record['height'], record['width'])}"
            )
        for mask, class_id, score in zip(masks, class_ids, scores):
            encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            encoded["counts"] = encoded["counts"].decode("ascii")
            results.append(
                {
                    "image_id": numeric_id,
                    "category_id": category_ids[int(class_id)],
                    "segmentation": encoded,
                    "score": float(score),
                }
            )
    evaluated = sorted({coco_id(image_id) for image_id in (predictions if image_ids is None else image_ids)})
    from irn_core.data.coco import quiet_pycocotools

    output = io.StringIO()
    with contextlib.redirect_stdout(output), quiet_pycocotools():
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": list(coco_gt.dataset["images"]),
                "categories": list(coco_gt.dataset["categories"]),
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.imgIds = evaluated
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.info("COCO mask AP over %d images:\n%s", len(evaluated), output.getvalue().rstrip())
    return {name: coco_stat(value) for name, value in zip(COCO_STAT_NAMES, evaluator.stats)}


NOT_APPLICABLE = "n/a"
"""How a metric that does not apply is shown in text and Markdown (JSON: null)."""


def format_percent(value: float | None, spec: str = ".1f") -> str:
    """A fraction as a percentage; None (not applicable, JSON null) as :data:`NOT_APPLICABLE`."""
    return NOT_APPLICABLE if value is None else format(100 * float(value), spec)


def coco_stat(value: float) -> float | None:
    """One number of ``COCOeval.stats``; None for pycocotools' -1, "no ground-truth object in this area
    range" (e.g. AP_small on a dataset without small objects): not applicable, never a score."""
    return None if float(value) < 0 else float(value)


# ---------------------------------------------------------------------------------------------- tables


def semantic_table(per_class_iou: Any, class_names: Sequence[str]) -> pd.DataFrame:
    """IoU table: rows 'background', the classes, 'mIoU' (nanmean of the rows above); one column 'IoU'."""
    iou = _to_numpy(per_class_iou).astype(np.float64).reshape(-1)
    if iou.shape[0] != len(class_names) + 1:
        raise InputError(f"{iou.shape[0]} IoUs for background + {len(class_names)} classes")
    frame = pd.DataFrame({"IoU": np.append(iou, _nanmean(iou))}, index=["background", *class_names, "mIoU"])
    frame.index.name = "class"
    return frame


def _threshold_column(threshold: float) -> str:
    return f"AP@{threshold:g}"


def instance_table(results: Mapping[float, tuple[np.ndarray, float]], class_names: Sequence[str]) -> pd.DataFrame:
    """AP table: one row per class plus 'mAP'; one column per IoU threshold ('AP@0.5', ...), sorted.

    When ``results`` holds every threshold 0.1…0.9, a column 'AP^r_vol' is added: each class's mean AP over
    those thresholds, and in the 'mAP' row mAP^r_vol (equal to the mean of the mAPs, since a class is NaN at
    every threshold or at none).
    """
    columns: dict[str, np.ndarray] = {}
    for threshold in sorted(results, key=float):
        per_class, mean_ap = results[threshold]
        per_class = _to_numpy(per_class).astype(np.float64).reshape(-1)
        if per_class.shape[0] != len(class_names):
            raise InputError(f"{per_class.shape[0]} APs at IoU {threshold} for {len(class_names)} classes")
        columns[_threshold_column(float(threshold))] = np.append(per_class, mean_ap)
    if all(_find_threshold(results, threshold) is not None for threshold in VOLUME_IOU_THRESHOLDS):
        volume = np.stack(
            [_to_numpy(results[_find_threshold(results, t)][0]).astype(np.float64) for t in VOLUME_IOU_THRESHOLDS]
        )
        columns["AP^r_vol"] = np.append(volume.mean(axis=0), map_r_vol(results))
    frame = pd.DataFrame(columns, index=[*class_names, "mAP"])
    frame.index.name = "class"
    return frame


def write_table(frame: pd.DataFrame, path_without_suffix: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``frame`` as ``<path>.csv`` and ``<path>.md`` (Markdown, 4 decimals), each atomically."""
    base = Path(path_without_suffix)
    csv_path = base.with_name(base.name + ".csv")
    markdown_path = base.with_name(base.name + ".md")
    with atomic_path(csv_path) as temporary:
        frame.to_csv(temporary)
    with atomic_path(markdown_path) as temporary:
        temporary.write_text(frame.to_markdown(floatfmt=".4f") + "\n", encoding="utf-8")
    return csv_path, markdown_path
