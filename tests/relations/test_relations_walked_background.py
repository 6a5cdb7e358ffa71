"""``background="walked"`` (``random_walk.background``): the background seed walked with the classes.

The restatement below builds the labels from the literal dense walk (:func:`propagate_dense`) of the
stacked seeds ``[threshold · ones, class seeds]``, without the library's code paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from relations_oracles import (
    assert_instances_match,
    clusters_reference,
    detect_instance_reference,
    refine_centroids_reference,
)
from synthetic_scenes import random_scene

from irn_core.errors import InputError
from irn_core.pseudo_labels import instance_labels, semantic_and_instance_labels, semantic_label
from irn_core.random_walk import propagate_dense


def _walk_with_background_seed(seeds: np.ndarray, boundary: np.ndarray, threshold: float, image_size) -> torch.Tensor:
    """Dense walk of ``[threshold · ones, seeds]``, bilinear ×4, cropped: ``(1 + C, H, W)`` float64."""
    stacked = np.concatenate([np.full((1, *seeds.shape[1:]), threshold), seeds]).astype(np.float64)
    walk = torch.from_numpy(propagate_dense(stacked, boundary, dtype=torch.float64))
    upsampled = F.interpolate(walk[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    return upsampled[:, : image_size[0], : image_size[1]]


def _semantic_restated(scene, threshold: float = 0.25) -> np.ndarray:
    scores = _walk_with_background_seed(scene.cams, scene.boundary, threshold, scene.image_size)
    keys = np.concatenate([[0], scene.class_ids + 1])
    return keys[torch.argmax(scores, dim=0).numpy()]


def _instances_restated(scene, threshold: float = 0.25) -> list[tuple[int, float, np.ndarray]]:
    centroids = refine_centroids_reference(scene.displacement)
    clusters = clusters_reference(centroids, scene.displacement)
    seeds = (scene.cams[:, None] * clusters[None]).reshape(-1, *scene.cams.shape[1:])
    channel_classes = np.repeat(scene.class_ids, clusters.shape[0])
    scores = _walk_with_background_seed(seeds, scene.boundary, threshold, scene.image_size)
    shape = torch.argmax(scores, dim=0).numpy()
    normalised = (scores[1:] / scores[1:].max()).numpy()
    return detect_instance_reference(shape, normalised, channel_classes, scene.image_size)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_walked_background_matches_the_restatement(seed: int) -> None:
    scene = random_scene(np.random.default_rng(seed), 14, 19, 3)
    semantic = semantic_label(scene.cams, scene.class_ids, scene.boundary, scene.image_size, background="walked")
    expected = _semantic_restated(scene)
    assert np.mean(semantic == expected) >= 0.999
    constant = semantic_label(scene.cams, scene.class_ids, scene.boundary, scene.image_size)
    assert not np.array_equal(constant, semantic)  # the option changes the labels of these scenes
    result = instance_labels(
        scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size, background="walked"
    )
    reference = _instances_restated(scene)
    assert_instances_match(result, reference)


def test_one_walk_gives_the_same_labels_with_a_walked_background() -> None:
    scene = random_scene(np.random.default_rng(5), 18, 22, 2)
    semantic, instances = semantic_and_instance_labels(
        scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size, background="walked",
        instance_bg_threshold=0.3,
    )
    alone = semantic_label(scene.cams, scene.class_ids, scene.boundary, scene.image_size, background="walked")
    np.testing.assert_array_equal(semantic, alone)
    separate = instance_labels(
        scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size, background="walked",
        bg_threshold=0.3,
    )
    np.testing.assert_array_equal(instances.masks, separate.masks)
    np.testing.assert_allclose(instances.scores, separate.scores, rtol=1e-6)


def _half_seeded(wall: bool) -> tuple[np.ndarray, np.ndarray]:
    """16x24 maps: one class seeded on 60 of the left half's 192 cells; a wall at column 12 or none."""
    boundary = np.zeros((16, 24), dtype=np.float32)
    if wall:
        boundary[:, 12] = 1.0
    cams = np.zeros((1, 16, 24), dtype=np.float32)
    cams[0, 3:9, 1:11] = 1.0
    return cams, boundary


def test_a_closed_region_fills_and_a_leak_does_not_flood() -> None:
    cams, boundary = _half_seeded(wall=True)
    for background in ("constant", "walked"):
        labels = semantic_label(cams, [4], boundary, (64, 96), background=background)
        # the seed holds 31% of its closed half: the half is the class under both rules, the other half not
        assert np.all(labels[:, :46] == 5) and np.all(labels[:, 52:] == 0), background
    cams, boundary = _half_seeded(wall=False)
    flooded = semantic_label(cams, [4], boundary, (64, 96))
    # reference rule: the walk spreads the seed over the whole map, the global max follows it down,
    # and the class covers the image
    assert np.mean(flooded == 5) > 0.95
    contained = semantic_label(cams, [4], boundary, (64, 96), background="walked")
    # walked background: 60 of 384 cells (16%) is less than the background's 25%: nothing is claimed
    # far from the seed
    assert np.all(contained[:, 60:] == 0)


def test_an_unknown_background_rule_is_refused() -> None:
    cams, boundary = _half_seeded(wall=True)
    with pytest.raises(InputError, match="background must be one of"):
        semantic_label(cams, [4], boundary, (64, 96), background="walk")  # type: ignore[arg-type]
