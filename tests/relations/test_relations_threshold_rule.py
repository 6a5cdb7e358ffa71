"""``threshold_rule="otsu"`` (``random_walk.threshold_rule``): each channel's own background threshold.

The restatement builds the labels from the literal dense walk (:func:`propagate_dense`) and a numpy
Otsu that tries every cut of the histogram, without the library's code paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from relations_oracles import clusters_reference, detect_instance_reference, refine_centroids_reference
from synthetic_scenes import random_scene

from irn_core.config import RandomWalkConfig
from irn_core.errors import InputError
from irn_core.pseudo_labels import (
    instance_labels,
    semantic_and_instance_labels,
    semantic_and_instance_labels_with_margin,
    semantic_label,
    uncertain_mask,
)
from irn_core.random_walk import propagate_dense
from irn_core.thresholds import OTSU_LIMITS, otsu_thresholds


def _otsu_restated(values: np.ndarray, bins: int = 100) -> float:
    """Every cut k of a ``bins``-bin histogram on [0, 1] tried; values at their bin's centre; the first
    cut of largest between-class variance; its upper edge k / bins, clamped to OTSU_LIMITS. NaN (no
    score: the walk reaches no seed there) does not count."""
    values = values[~np.isnan(values)]
    counts, _ = np.histogram(np.clip(values, 0, 1), bins=bins, range=(0.0, 1.0))
    centres = (np.arange(bins) + 0.5) / bins
    best, best_cut = -1.0, 1
    for cut in range(1, bins + 1):
        below, above = counts[:cut], counts[cut:]
        w0, w1 = below.sum(), above.sum()
        m0 = (below * centres[:cut]).sum() / max(w0, 1)
        m1 = (above * centres[cut:]).sum() / max(w1, 1)
        variance = float(w0) * float(w1) * (m0 - m1) ** 2
        if variance > best + 1e-9 * max(best, 1e-30):
            best, best_cut = variance, cut
    return float(np.clip(best_cut / bins, *OTSU_LIMITS))


def _scaled_scores(seeds: np.ndarray, boundary: np.ndarray, image_size, background: str) -> torch.Tensor:
    """The walked seeds on the thresholds' scale: ``(C, H, W)`` float64 (NaN where the walked ones are 0)."""
    stacked = np.concatenate([np.ones((1, *seeds.shape[1:])), seeds]).astype(np.float64)
    walk = torch.from_numpy(propagate_dense(stacked, boundary, dtype=torch.float64))
    upsampled = F.interpolate(walk[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    upsampled = upsampled[:, : image_size[0], : image_size[1]]
    if background == "walked":
        return upsampled[1:] / upsampled[0]
    return upsampled[1:] / upsampled[1:].max()


def _labels_restated(scaled: torch.Tensor) -> np.ndarray:
    """0 background, j + 1 where channel j's score over its own Otsu threshold is largest and above 1."""
    thresholds = np.array([_otsu_restated(channel.numpy()) for channel in scaled])
    relative = np.nan_to_num(scaled.numpy() / thresholds[:, None, None], nan=0.0)
    return np.where(relative.max(0) > 1, relative.argmax(0) + 1, 0)


def test_otsu_thresholds_match_the_restatement_and_split_two_modes() -> None:
    rng = np.random.default_rng(0)
    low = rng.normal(0.12, 0.04, 600)
    high = rng.normal(0.7, 0.08, 300)
    scores = np.stack([np.concatenate([low, high]), rng.uniform(0, 1, 900), np.full(900, 0.4)]).reshape(3, 30, 30)
    thresholds = otsu_thresholds(torch.from_numpy(scores).float()).numpy()
    assert thresholds.dtype == np.float32 and thresholds.shape == (3,)
    np.testing.assert_allclose(thresholds, [_otsu_restated(channel) for channel in scores], atol=1e-6)
    assert 0.2 < thresholds[0] < 0.55  # between the two modes
    assert thresholds[2] == pytest.approx(OTSU_LIMITS[0])  # a constant channel: the lower limit
    clamped = otsu_thresholds(torch.from_numpy(np.concatenate([np.full(50, 0.9), np.full(50, 1.0)])[None, None]))
    assert float(clamped[0]) == pytest.approx(OTSU_LIMITS[1])  # both modes above the range: the upper limit


@pytest.mark.parametrize("background", ["constant", "walked"])
@pytest.mark.parametrize("seed", [0, 1])
def test_otsu_semantic_labels_match_the_restatement(seed: int, background: str) -> None:
    scene = random_scene(np.random.default_rng(seed), 14, 19, 3)
    semantic = semantic_label(
        scene.cams, scene.class_ids, scene.boundary, scene.image_size, background=background, threshold_rule="otsu"
    )
    channels = _labels_restated(_scaled_scores(scene.cams, scene.boundary, scene.image_size, background))
    expected = np.concatenate([[0], scene.class_ids + 1])[channels]
    assert np.mean(semantic == expected) >= 0.999
    fixed = semantic_label(scene.cams, scene.class_ids, scene.boundary, scene.image_size, background=background)
    assert not np.array_equal(fixed, semantic)  # the rule changes the labels of these scenes


def test_otsu_instances_match_the_restatement_and_the_joint_walk() -> None:
    scene = random_scene(np.random.default_rng(3), 14, 19, 2)
    result = instance_labels(
        scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size,
        background="walked", threshold_rule="otsu",
    )
    clusters = clusters_reference(refine_centroids_reference(scene.displacement), scene.displacement)
    seeds = (scene.cams[:, None] * clusters[None]).reshape(-1, *scene.cams.shape[1:])
    channel_classes = np.repeat(scene.class_ids, clusters.shape[0])
    scaled = _scaled_scores(seeds, scene.boundary, scene.image_size, "walked")
    stacked = np.concatenate([np.ones((1, *seeds.shape[1:])), seeds]).astype(np.float64)
    walk = torch.from_numpy(propagate_dense(stacked, scene.boundary, dtype=torch.float64))
    upsampled = F.interpolate(walk[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    upsampled = upsampled[1:, : scene.image_size[0], : scene.image_size[1]]
    normalised = (upsampled / upsampled.max()).numpy()  # the scores stay the normalised walk
    expected = detect_instance_reference(_labels_restated(scaled), normalised, channel_classes, scene.image_size)
    assert len(result.masks) == len(expected) > 0
    for mask, class_id, score, (expected_class, expected_score, expected_mask) in zip(
        result.masks, result.class_ids, result.scores, expected, strict=True
    ):
        assert class_id == expected_class
        assert score == pytest.approx(expected_score, abs=1e-4)
        assert np.mean(mask == expected_mask) >= 0.999
    semantic, joint = semantic_and_instance_labels(
        scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size,
        background="walked", threshold_rule="otsu",
    )
    np.testing.assert_array_equal(semantic, semantic_label(
        scene.cams, scene.class_ids, scene.boundary, scene.image_size, background="walked", threshold_rule="otsu"))
    assert len(joint.masks) == len(result.masks)


def test_bad_threshold_rule_is_named_and_the_config_default_is_the_reference() -> None:
    scene = random_scene(np.random.default_rng(0), 8, 8, 1)
    with pytest.raises(InputError, match="threshold_rule must be one of.*'median'"):
        semantic_label(scene.cams, scene.class_ids, scene.boundary, scene.image_size, threshold_rule="median")
    assert RandomWalkConfig().threshold_rule == "fixed"
    assert RandomWalkConfig(threshold_rule="otsu").threshold_rule == "otsu"


def _margin_restated(scene, background: str, threshold_rule: str) -> np.ndarray:
    """The best channel's score over its threshold, from the dense walk: 0.25 (fixed; walked: 0.25 times the
    walked ones on the same scale) or the channel's restated Otsu threshold."""
    scaled = _scaled_scores(scene.cams, scene.boundary, scene.image_size, background).numpy()
    if threshold_rule == "fixed":
        return np.nan_to_num(scaled / 0.25, nan=0.0).max(0)
    thresholds = np.array([_otsu_restated(channel) for channel in scaled])
    return np.nan_to_num(scaled / thresholds[:, None, None], nan=0.0).max(0)


@pytest.mark.parametrize("threshold_rule", ["fixed", "otsu"])
@pytest.mark.parametrize("background", ["constant", "walked"])
def test_margin_is_the_best_score_over_its_threshold_and_decides_the_labels(
    background: str, threshold_rule: str
) -> None:
    scene = random_scene(np.random.default_rng(5), 14, 19, 3)
    semantic, margin, instances = semantic_and_instance_labels_with_margin(
        scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size,
        background=background, threshold_rule=threshold_rule,
    )
    assert margin.dtype == np.float32 and margin.shape == semantic.shape
    expected = _margin_restated(scene, background, threshold_rule)
    np.testing.assert_allclose(margin, expected, rtol=1e-4, atol=1e-5)
    away_from_one = np.abs(margin - 1) > 1e-4
    np.testing.assert_array_equal((semantic > 0)[away_from_one], (margin > 1)[away_from_one])
    assert (margin > 1).any() and (margin < 1).any()
    same, same_instances = semantic_and_instance_labels(
        scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size,
        background=background, threshold_rule=threshold_rule,
    )
    np.testing.assert_array_equal(same, semantic)
    assert len(same_instances.masks) == len(instances.masks)


def test_uncertain_mask_is_the_band_half_open_and_checks_its_order() -> None:
    margin = np.array([[0.0, 0.49, 0.5, 0.99], [1.0, 1.01, 2.0, 3.0]], dtype=np.float32)
    np.testing.assert_array_equal(
        uncertain_mask(margin, (0.5, 1.0)), [[False, False, True, True], [False, False, False, False]]
    )
    np.testing.assert_array_equal(
        uncertain_mask(margin, (0.5, 2.0)), [[False, False, True, True], [True, True, False, False]]
    )
    with pytest.raises(InputError, match="0 <= low < high"):
        uncertain_mask(margin, (1.0, 0.5))
    assert RandomWalkConfig().uncertain_band is None
    with pytest.raises(ValueError, match="uncertain_band"):
        RandomWalkConfig(uncertain_band=(0.8, 0.8))
