"""Metrics on hand-computed cases (expected numbers worked out in the comments)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from irn_core.errors import InputError
from irn_core.evaluation import (
    ALL_IOU_THRESHOLDS,
    DEFAULT_IOU_THRESHOLDS,
    VOLUME_IOU_THRESHOLDS,
    InstanceAPAccumulator,
    coco_mask_ap,
    confusion_matrix,
    error_ratios,
    instance_ap,
    instance_table,
    map_r_vol,
    mask_iou,
    mean_iou,
    semantic_table,
    voc_ap,
    write_table,
)

WIDTH = 10


def segment(start: int, stop: int, width: int = WIDTH) -> np.ndarray:
    """A (1, width) bool mask covering columns [start, stop)."""
    mask = np.zeros((1, width), dtype=bool)
    mask[0, start:stop] = True
    return mask


def masks(*segments: tuple[int, int]) -> np.ndarray:
    """(N, 1, WIDTH) bool masks from (start, stop) column ranges."""
    if not segments:
        return np.zeros((0, 1, WIDTH), dtype=bool)
    return np.stack([segment(start, stop) for start, stop in segments])


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def scores(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def tie_order_reversed() -> bool:
    """True if numpy's ``argsort()[::-1]`` puts the second of two equal scores first (a stable sort does)."""
    return bool(np.array([0.5, 0.5]).argsort()[::-1][0] == 1)


# ---------------------------------------------------------------------------------------------- semantic


def test_confusion_and_iou_hand_case() -> None:
    gt = np.array([[0, 1], [1, 255]])
    pred = np.array([[0, 1], [0, 2]], dtype=np.uint8)
    confusion = confusion_matrix(pred, gt, 3)
    # Valid pixels: (gt 0, pred 0), (gt 1, pred 1), (gt 1, pred 0); the void pixel (pred 2) is skipped.
    np.testing.assert_array_equal(confusion, [[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    assert confusion.dtype == np.int64
    iou, miou = mean_iou(confusion)
    # IoU0 = 1 / (1 + 2 - 1) = 0.5; IoU1 = 1 / (2 + 1 - 1) = 0.5; class 2 absent from both -> NaN.
    np.testing.assert_allclose(iou[:2], [0.5, 0.5])
    assert math.isnan(iou[2])
    assert miou == pytest.approx(0.5)


def test_predicted_class_absent_from_ground_truth_scores_zero_not_nan() -> None:
    gt = np.zeros((2, 2), dtype=np.uint8)
    pred = np.array([[0, 0], [0, 1]])
    iou, miou = mean_iou(confusion_matrix(pred, gt, 2))
    # IoU0 = 3 / (4 + 3 - 3) = 0.75, IoU1 = 0 / (0 + 1 - 0) = 0 -> mIoU 0.375.
    np.testing.assert_allclose(iou, [0.75, 0.0])
    assert miou == pytest.approx(0.375)


def test_confusion_accumulates_over_iterables_stacks_and_tensors() -> None:
    rng = np.random.default_rng(3)
    preds = [rng.integers(0, 4, (5, 6)) for _ in range(3)]
    gts = [np.where(rng.random((5, 6)) < 0.2, 255, rng.integers(0, 4, (5, 6))) for _ in range(3)]
    # Independent restatement: count every (gt, pred) pair with a Python loop.
    expected = np.zeros((4, 4), dtype=np.int64)
    for pred, gt in zip(preds, gts):
        for p, g in zip(pred.ravel(), gt.ravel()):
            if g != 255:
                expected[g, p] += 1
    np.testing.assert_array_equal(confusion_matrix(preds, gts, 4), expected)
    np.testing.assert_array_equal(confusion_matrix(iter(preds), (g for g in gts), 4), expected)
    np.testing.assert_array_equal(confusion_matrix(np.stack(preds), np.stack(gts), 4), expected)
    np.testing.assert_array_equal(
        confusion_matrix(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts)), 4), expected
    )
    single = confusion_matrix(preds[0], gts[0], 4)
    assert single.sum() == int((gts[0] != 255).sum())


def test_confusion_rejects_bad_labels() -> None:
    gt = np.zeros((2, 2), dtype=np.uint8)
    with pytest.raises(InputError, match=r"predictions hold values \[3\]"):
        confusion_matrix(np.full((2, 2), 3), gt, 3)
    with pytest.raises(InputError, match="255"):
        confusion_matrix(np.full((2, 2), 255), gt, 3)
    with pytest.raises(InputError, match=r"ground truth holds values \[254\]"):
        confusion_matrix(gt, np.full((2, 2), 254), 3)
    with pytest.raises(InputError, match="differ"):
        confusion_matrix(np.zeros((2, 3), np.uint8), gt, 3)
    with pytest.raises(InputError, match="differ in number"):
        confusion_matrix([gt, gt], [gt], 3)
    with pytest.raises(InputError, match="integer"):
        confusion_matrix(gt.astype(np.float32), gt, 3)


def test_prediction_void_to_maps_void_predictions_as_the_reference() -> None:
    gt = np.array([[0, 1]])
    pred = np.array([[255, 255]])
    confusion = confusion_matrix(pred, gt, 2, prediction_void_to=0)
    np.testing.assert_array_equal(confusion, [[1, 0], [1, 0]])


def test_custom_ignore_index_like_chainercv_minus_one() -> None:
    gt = np.array([[-1, 1]])
    pred = np.array([[1, 1]])
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 2, ignore_index=-1), [[0, 0], [0, 1]])


def test_error_ratios_complement_iou() -> None:
    confusion = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    false_positive, false_negative = error_ratios(confusion)
    iou, _ = mean_iou(confusion)
    np.testing.assert_allclose(iou + false_positive + false_negative, 1.0)
    # Class 0: GT 6, Pred 7, TP 5, D = 8 -> fp = 1 - 6/8 = 0.25, fn = 1 - 7/8 = 0.125.
    assert false_positive[0] == pytest.approx(0.25)
    assert false_negative[0] == pytest.approx(0.125)


# ---------------------------------------------------------------------------------------------- mask IoU / AP


def test_mask_iou_values_and_float32() -> None:
    iou = mask_iou(masks((0, 4), (1, 6)), masks((0, 4), (4, 8)))
    assert iou.dtype == np.float32
    # (0,4) vs (0,4): 1; (0,4) vs (4,8): 0; (1,6) vs (0,4): 3/6; (1,6) vs (4,8): 2/7.
    np.testing.assert_allclose(iou, [[1.0, 0.0], [0.5, 2 / 7]], rtol=1e-6)
    both_empty = mask_iou(masks((0, 0)), masks((0, 0)))
    assert math.isnan(both_empty[0, 0])


def test_voc_ap_interpolation() -> None:
    # TP, FP, TP with 2 positives: prec (1, 1/2, 2/3), rec (1/2, 1/2, 1); interpolated precision is 1 on
    # recall (0, 0.5] and 2/3 on (0.5, 1] -> AP = 0.5 + 0.5 * 2/3 = 5/6.
    assert voc_ap(np.array([1, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == pytest.approx(5 / 6)
    assert math.isnan(voc_ap(np.array([1.0]), None))
    assert voc_ap(np.array([]), np.array([])) == 0.0


def test_instance_ap_single_image_hand_case() -> None:
    # Ground truths G1 = [0,4), G2 = [5,9). Predictions by score: P1 [0,4) (IoU 1 with G1), P2 [0,3)
    # (IoU 3/4 with G1, which P1 took -> FP), P3 [5,8) (IoU 3/4 with G2 -> TP). Sequence TP FP TP -> AP 5/6.
    ap, mean_ap = instance_ap(
        [masks((0, 4), (0, 3), (5, 8))],
        [ids(0, 0, 0)],
        [scores(0.9, 0.8, 0.7)],
        [masks((0, 4), (5, 9))],
        [ids(0, 0)],
        iou_threshold=0.5,
        num_classes=1,
    )
    assert ap[0] == pytest.approx(5 / 6)
    assert mean_ap == pytest.approx(5 / 6)
    # At IoU 0.8 the 3/4 overlaps fail: TP FP FP -> prec (1, 1/2, 1/3), rec (1/2, 1/2, 1/2) -> AP 0.5.
    ap, _ = instance_ap(
        [masks((0, 4), (0, 3), (5, 8))], [ids(0, 0, 0)], [scores(0.9, 0.8, 0.7)],
        [masks((0, 4), (5, 9))], [ids(0, 0)], iou_threshold=0.8, num_classes=1,
    )  # fmt: skip
    assert ap[0] == pytest.approx(0.5)


def test_predictions_are_matched_in_score_order_not_input_order() -> None:
    # Same as above with the inputs shuffled: the high-score prediction must claim G1 first.
    ap, _ = instance_ap(
        [masks((5, 8), (0, 3), (0, 4))], [ids(0, 0, 0)], [scores(0.7, 0.8, 0.9)],
        [masks((0, 4), (5, 9))], [ids(0, 0)], iou_threshold=0.5, num_classes=1,
    )  # fmt: skip
    assert ap[0] == pytest.approx(5 / 6)


def test_chainercv_matching_differs_from_unmatched_rule() -> None:
    # G1 = [0,4), G2 = [4,8). P1 (0.9) = [0,4): IoU 1 with G1. P2 (0.8) = [1,6): IoU 3/6 with G1, 2/7 with G2.
    case = ([masks((0, 4), (1, 6))], [ids(0, 0)], [scores(0.9, 0.8)], [masks((0, 4), (4, 8))], [ids(0, 0)])
    # IoU 0.25, chainercv: P2's best ground truth G1 is taken -> FP (no fallback). TP FP: prec (1, 1/2),
    # rec (1/2, 1/2) -> AP = 1/2.
    chainercv_ap, _ = instance_ap(*case, iou_threshold=0.25, num_classes=1)
    assert chainercv_ap[0] == pytest.approx(0.5)
    # "unmatched": P2 takes G2 (2/7 >= 0.25) -> TP TP: rec reaches 1 at precision 1 -> AP = 1.
    unmatched_ap, _ = instance_ap(*case, iou_threshold=0.25, num_classes=1, matching="unmatched")
    assert unmatched_ap[0] == pytest.approx(1.0)
    # At IoU 0.5 G2 is too far for P2 under both rules -> AP 1/2 for both.
    for matching in ("chainercv", "unmatched"):
        ap, _ = instance_ap(*case, iou_threshold=0.5, num_classes=1, matching=matching)
        assert ap[0] == pytest.approx(0.5)


def test_multi_image_classes_without_ground_truth_or_predictions() -> None:
    # Class 0: image A: G [0,4), P .9 [0,4) TP. Image B: G [0,4), G' [5,9), P .8 [5,9) TP, P .6 [0,2)
    # (IoU 2/4 = 0.5 with G). Image C: no class-0 ground truth, P .7 [0,4) -> FP. n_pos = 3.
    # IoU 0.5: by score TP(.9) TP(.8) FP(.7) TP(.6): prec (1, 1, 2/3, 3/4), rec (1/3, 2/3, 2/3, 1);
    #   interpolated: 1 up to recall 2/3, 3/4 from 2/3 to 1 -> AP = 2/3 + 1/3 * 3/4 = 11/12.
    # IoU 0.7: P .6 fails -> TP TP FP FP -> AP = 2/3.
    # Class 1: ground truth in image C, never predicted -> AP 0.
    # Class 2: predicted in image A, no ground truth anywhere -> NaN. Class 3: never seen -> NaN.
    pred_masks = [masks((0, 4), (6, 9)), masks((5, 9), (0, 2)), masks((0, 4))]
    pred_class_ids = [ids(0, 2), ids(0, 0), ids(0)]
    pred_scores = [scores(0.9, 0.95), scores(0.8, 0.6), scores(0.7)]
    gt_masks = [masks((0, 4)), masks((0, 4), (5, 9)), masks((6, 9))]
    gt_class_ids = [ids(0), ids(0, 0), ids(1)]
    args = (pred_masks, pred_class_ids, pred_scores, gt_masks, gt_class_ids)
    ap, mean_ap = instance_ap(*args, iou_threshold=0.5, num_classes=4)
    assert ap[0] == pytest.approx(11 / 12)
    assert ap[1] == 0.0
    assert math.isnan(ap[2]) and math.isnan(ap[3])
    assert mean_ap == pytest.approx(11 / 24)
    ap, mean_ap = instance_ap(*args, iou_threshold=0.7, num_classes=4)
    assert ap[0] == pytest.approx(2 / 3)
    assert mean_ap == pytest.approx(1 / 3)


def test_score_ties_within_an_image_follow_numpy_argsort_reversed() -> None:
    # One ground truth G = [0,4); two predictions with equal scores: Pa (index 0) = [0,4) IoU 1,
    # Pb (index 1) = [0,3) IoU 3/4. chainercv orders them with argsort()[::-1]; a stable argsort puts Pb first.
    case = ([masks((0, 4), (0, 3))], [ids(0, 0)], [scores(0.5, 0.5)], [masks((0, 4))], [ids(0)])
    ap_low, _ = instance_ap(*case, iou_threshold=0.5, num_classes=1)
    ap_high, _ = instance_ap(*case, iou_threshold=0.8, num_classes=1)
    if tie_order_reversed():
        # IoU 0.5: Pb first -> TP, Pa -> FP (G taken). Stored order (Pb, Pa) = (TP, FP); the final tie sort
        # reverses it again -> FP, TP: prec (0, 1/2), rec (0, 1) -> AP 1/2.
        assert ap_low[0] == pytest.approx(0.5)
        # IoU 0.8: Pb (3/4) -> FP, Pa -> TP; stored (FP, TP), final order TP, FP -> AP 1.
        assert ap_high[0] == pytest.approx(1.0)
    else:  # the mirror image if this numpy's sort is not stable on ties
        assert ap_low[0] == pytest.approx(1.0)
        assert ap_high[0] == pytest.approx(0.5)


def test_score_ties_across_images() -> None:
    # Image A: P .5 far from any ground truth -> FP (G_A = [0,2) is missed). Image B: P .5 on G_B -> TP. n_pos 2.
    # Scores concatenated in image order (.5 FP, .5 TP); argsort()[::-1] on ties (stable sort) gives TP, FP:
    # prec (1, 1/2), rec (1/2, 1/2) -> AP 1/2. The other tie order gives FP, TP: prec (0, 1/2) -> AP 1/4.
    ap, _ = instance_ap(
        [masks((6, 9)), masks((0, 4))], [ids(0), ids(0)], [scores(0.5), scores(0.5)],
        [masks((0, 2)), masks((0, 4))], [ids(0), ids(0)], iou_threshold=0.5, num_classes=1,
    )  # fmt: skip
    assert ap[0] == pytest.approx(0.5 if tie_order_reversed() else 0.25)


def test_empty_predictions_and_empty_images() -> None:
    gt = [masks((0, 4)), masks((2, 5), (6, 8))]
    gt_ids = [ids(0), ids(0, 1)]
    no_masks = [masks(), masks()]
    no_ids = [ids(), ids()]
    ap, mean_ap = instance_ap(no_masks, no_ids, [scores(), scores()], gt, gt_ids, iou_threshold=0.5, num_classes=3)
    # Classes 0 and 1 have ground truth and no prediction -> 0; class 2 -> NaN; mAP = 0.
    assert ap[0] == 0.0 and ap[1] == 0.0 and math.isnan(ap[2])
    assert mean_ap == 0.0
    # Nothing at all: every class NaN, mAP NaN (no exception, unlike chainercv which fails on max([])).
    ap, mean_ap = instance_ap([masks()], [ids()], [scores()], [masks()], [ids()], iou_threshold=0.5, num_classes=2)
    assert np.isnan(ap).all() and math.isnan(mean_ap)


def test_image_without_ground_truth_or_predictions_changes_nothing() -> None:
    base = InstanceAPAccumulator(2, (0.5,))
    padded = InstanceAPAccumulator(2, (0.5,))
    image = (masks((0, 4), (3, 9)), ids(0, 1), scores(0.9, 0.4), masks((0, 5), (5, 9)), ids(0, 0))
    base.add(*image)
    padded.add(masks(), ids(), scores(), masks(), ids())
    padded.add(*image)
    padded.add(np.zeros((0, 7, 7), bool), ids(), scores(), np.zeros((0, 7, 7), bool), ids())
    np.testing.assert_array_equal(base.result()[0.5][0], padded.result()[0.5][0])
    assert padded.n_images == 3


def test_accumulator_thresholds_agree_with_single_threshold_calls_and_torch() -> None:
    rng = np.random.default_rng(7)
    images = []
    for _ in range(4):
        gt_count, pred_count = rng.integers(1, 4), rng.integers(0, 5)
        gt = rng.random((gt_count, 6, 6)) < 0.4
        pred = rng.random((pred_count, 6, 6)) < 0.4
        pred[: min(gt_count, pred_count)] |= gt[: min(gt_count, pred_count)]
        images.append(
            (pred, rng.integers(0, 3, pred_count), rng.random(pred_count).astype(np.float32), gt, rng.integers(0, 3, gt_count))
        )
    accumulator = InstanceAPAccumulator(3, DEFAULT_IOU_THRESHOLDS)
    torch_accumulator = InstanceAPAccumulator(3, DEFAULT_IOU_THRESHOLDS)
    for image in images:
        accumulator.add(*image)
        torch_accumulator.add(*(torch.from_numpy(np.asarray(part)) for part in image))
    results = accumulator.result()
    torch_results = torch_accumulator.result()
    assert set(results) == set(DEFAULT_IOU_THRESHOLDS)
    for threshold in DEFAULT_IOU_THRESHOLDS:
        single = instance_ap(*zip(*images), iou_threshold=threshold, num_classes=3)
        np.testing.assert_array_equal(results[threshold][0], single[0])
        np.testing.assert_array_equal(torch_results[threshold][0], single[0])
        assert results[threshold][1] == single[1] or (math.isnan(single[1]) and math.isnan(results[threshold][1]))


def test_accumulator_matches_a_brute_force_restatement() -> None:
    """Random cases (distinct scores) against a straightforward re-derivation of VOC AP."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        images = []
        for _ in range(3):
            gt_count, pred_count = int(rng.integers(0, 4)), int(rng.integers(0, 6))
            gt = rng.random((gt_count, 5, 5)) < 0.5
            pred = rng.random((pred_count, 5, 5)) < 0.5
            pred[: min(gt_count, pred_count)] = gt[: min(gt_count, pred_count)] ^ (
                rng.random((min(gt_count, pred_count), 5, 5)) < 0.15
            )
            images.append((pred, rng.integers(0, 2, pred_count), rng.random(pred_count), gt, rng.integers(0, 2, gt_count)))
        for threshold in (0.3, 0.6):
            ap, _ = instance_ap(*zip(*images), iou_threshold=threshold, num_classes=2)
            for label in range(2):
                assert _brute_force_ap(images, label, threshold) == pytest.approx(ap[label], nan_ok=True)


def _brute_force_ap(images: list, label: int, threshold: float) -> float:
    """VOC AP from scratch: greedy matching with plain loops, then max-precision-at-recall-or-above integration."""
    detections = []  # (score, is_true_positive)
    positives = 0
    for pred, pred_ids, pred_scores, gt, gt_ids in images:
        gt_l = [g for g, c in zip(gt, gt_ids) if c == label]
        positives += len(gt_l)
        preds = sorted(
            [(s, p) for p, c, s in zip(pred, pred_ids, pred_scores) if c == label], key=lambda item: -item[0]
        )
        taken = [False] * len(gt_l)
        for score, mask in preds:
            best, best_index = -1.0, -1
            for index, g in enumerate(gt_l):
                union = np.logical_or(mask, g).sum()
                value = np.logical_and(mask, g).sum() / union if union else 0.0
                if value > best:
                    best, best_index = value, index
            hit = best_index >= 0 and np.float32(best) >= np.float32(threshold) and not taken[best_index]
            if best_index >= 0 and np.float32(best) >= np.float32(threshold):
                taken[best_index] = True
            detections.append((score, hit))
    if positives == 0:
        return math.nan
    detections.sort(key=lambda item: -item[0])
    points = []
    true_positives = 0
    for rank, (_, hit) in enumerate(detections, start=1):
        true_positives += hit
        points.append((true_positives / positives, true_positives / rank))
    area, previous_recall = 0.0, 0.0
    for recall_level in sorted({recall for recall, _ in points}):
        best_precision = max(precision for recall, precision in points if recall >= recall_level)
        area += (recall_level - previous_recall) * best_precision
        previous_recall = recall_level
    return area


def test_map_r_vol_is_mean_over_point_one_to_point_nine() -> None:
    # One ground truth [0,10), one prediction [0,6): IoU 0.6 -> AP 1 at thresholds 0.1..0.6, 0 at 0.7..0.9.
    accumulator = InstanceAPAccumulator(1)
    accumulator.add(masks((0, 6)), ids(0), scores(1.0), masks((0, 10)), ids(0))
    results = accumulator.result()
    assert set(VOLUME_IOU_THRESHOLDS) <= set(results)
    assert results[0.6][1] == 1.0 and results[0.7][1] == 0.0
    assert map_r_vol(results) == pytest.approx(6 / 9)
    with pytest.raises(InputError, match="missing"):
        map_r_vol({0.5: results[0.5]})
    assert ALL_IOU_THRESHOLDS == tuple(sorted(ALL_IOU_THRESHOLDS))
    assert VOLUME_IOU_THRESHOLDS[2] == 0.3  # exact literals, usable as dict keys


def test_instance_inputs_are_validated() -> None:
    accumulator = InstanceAPAccumulator(2, (0.5,))
    with pytest.raises(InputError, match="class ids"):
        accumulator.add(masks((0, 2)), ids(2), scores(1.0), masks(), ids())
    with pytest.raises(InputError, match="scores"):
        accumulator.add(masks((0, 2)), ids(0), scores(), masks(), ids())
    with pytest.raises(InputError, match="finite"):
        accumulator.add(masks((0, 2)), ids(0), scores(math.nan), masks(), ids())
    with pytest.raises(InputError, match="differ in size"):
        accumulator.add(masks((0, 2)), ids(0), scores(1.0), np.ones((1, 2, 2), bool), ids(0))
    with pytest.raises(InputError, match="matching"):
        InstanceAPAccumulator(2, matching="coco")
    with pytest.raises(InputError, match="differ in length"):
        instance_ap([masks()], [ids()], [scores()], [], [], iou_threshold=0.5, num_classes=2)


# ---------------------------------------------------------------------------------------------- COCO


@pytest.fixture(scope="module")
def coco_dataset(real_samples: Path):
    from irn_core.data.coco import COCODataset

    return COCODataset(real_samples / "coco" / "images", real_samples / "coco" / "annotations.json")


def test_coco_mask_ap_perfect_and_empty_predictions(coco_dataset) -> None:
    perfect = {}
    for image_id in coco_dataset.ids():
        instance_masks, class_ids = coco_dataset.instance_masks(image_id)
        perfect[image_id] = (instance_masks, class_ids, np.linspace(1.0, 0.5, len(class_ids)))
    stats = coco_mask_ap(perfect, coco_dataset.coco)
    assert len(stats) == 12
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AP50"] == pytest.approx(1.0)
    empty = {image_id: (np.zeros((0, 1, 1), bool), ids(), scores()) for image_id in coco_dataset.ids()}
    assert coco_mask_ap(empty, coco_dataset.coco)["AP"] == 0.0


def test_coco_mask_ap_wrong_classes_and_integer_ids(coco_dataset) -> None:
    image_id = "000000128372"
    instance_masks, class_ids = coco_dataset.instance_masks(image_id)
    # Every person (class 0) is predicted as a bicycle (class 1): persons are missed, so AP drops below 1.
    wrong = np.where(class_ids == 0, 1, class_ids)
    numeric = coco_dataset.coco_image_id(image_id)
    stats = coco_mask_ap({numeric: (instance_masks, wrong, np.ones(len(wrong)))}, coco_dataset.coco)
    assert 0.0 < stats["AP"] < 1.0
    with pytest.raises(InputError, match="not in the COCO ground truth"):
        coco_mask_ap({"nope": (instance_masks, class_ids, np.ones(len(class_ids)))}, coco_dataset.coco)


# ---------------------------------------------------------------------------------------------- tables


def test_semantic_table_and_write(tmp_path: Path) -> None:
    frame = semantic_table(np.array([0.9, 0.5, np.nan]), ["cat", "dog"])
    assert list(frame.index) == ["background", "cat", "dog", "mIoU"]
    assert frame.loc["mIoU", "IoU"] == pytest.approx(0.7)
    csv_path, markdown_path = write_table(frame, tmp_path / "out" / "semantic")
    assert csv_path.name == "semantic.csv" and markdown_path.name == "semantic.md"
    back = pd.read_csv(csv_path, index_col=0)
    assert back.loc["cat", "IoU"] == pytest.approx(0.5)
    assert math.isnan(back.loc["dog", "IoU"])
    text = markdown_path.read_text()
    assert "| mIoU" in text and "0.7000" in text
    assert not list((tmp_path / "out").glob(".*tmp"))
    with pytest.raises(InputError):
        semantic_table(np.array([0.5]), ["cat"])


def test_instance_table_columns_and_volume() -> None:
    accumulator = InstanceAPAccumulator(2)
    accumulator.add(masks((0, 6), (0, 3)), ids(0, 1), scores(1.0, 0.5), masks((0, 10)), ids(0))
    frame = instance_table(accumulator.result(), ["cat", "dog"])
    assert list(frame.index) == ["cat", "dog", "mAP"]
    assert "AP@0.5" in frame.columns and "AP@0.25" in frame.columns and "AP@0.75" in frame.columns
    assert frame.columns[-1] == "AP^r_vol"
    assert frame.loc["cat", "AP^r_vol"] == pytest.approx(6 / 9)
    assert math.isnan(frame.loc["dog", "AP@0.5"])
    assert frame.loc["mAP", "AP^r_vol"] == pytest.approx(6 / 9)
    only_default = {threshold: accumulator.result()[threshold] for threshold in DEFAULT_IOU_THRESHOLDS}
    assert "AP^r_vol" not in instance_table(only_default, ["cat", "dog"]).columns
