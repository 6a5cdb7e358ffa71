"""Semantic and instance pseudo labels against the reference's post-processing of the dense walk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from relations_oracles import (
    assert_instances_match,
    clusters_reference,
    instances_reference,
    refine_centroids_reference,
    semantic_reference,
)
from synthetic_scenes import random_scene, touching_discs

from irn_core.errors import InputError
from irn_core.pseudo_labels import instance_labels, semantic_and_instance_labels, semantic_label
from irn_core.random_walk import propagate_dense


def test_semantic_label_of_two_walled_halves() -> None:
    height, width = 16, 24
    boundary = np.zeros((height, width), dtype=np.float32)
    boundary[:, 12] = 1.0  # a wall: left and right halves are closed (outside the map counts as boundary)
    cams = np.zeros((2, height, width), dtype=np.float32)
    cams[0, 6:9, 3:6] = 1.0  # class 2 seeded on the left
    cams[1, 6:9, 17:20] = 0.6  # class 9 seeded on the right, weaker
    labels = semantic_label(cams, [2, 9], boundary, (64, 96))
    assert labels.dtype == np.uint8 and labels.shape == (64, 96)
    # the walk spreads each seed over its own half; after the global max the right half scores
    # about 0.6 > 0.25, so both halves are labelled, each with its own class
    assert np.all(labels[:, :46] == 3) and np.all(labels[:, 52:] == 10)
    assert np.all(labels[:, 49:50] == 0)  # the wall itself (walk value 0) is background
    # a weak right seed (about 0.1 after normalisation) loses to the background score 0.25
    cams[1] *= 1 / 6
    labels = semantic_label(cams, [2, 9], boundary, (64, 96))
    assert np.all(labels[:, :46] == 3) and np.all(labels[:, 52:] == 0)
    # the background score is a parameter
    labels = semantic_label(cams, [2, 9], boundary, (64, 96), bg_threshold=0.05)
    assert np.all(labels[:, 52:] == 10)


def test_touching_discs_of_one_class_become_two_instances() -> None:
    scene = touching_discs()
    result = instance_labels(scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size)
    assert len(result) == 2
    np.testing.assert_array_equal(result.class_ids, [5, 5])
    assert np.all(result.scores > 0.9)
    assert result.masks.shape == (2, *scene.image_size)
    assert not np.any(result.masks[0] & result.masks[1])
    left, right = result.masks
    assert left[48, 44] and right[48, 112]  # each disc's centre (×4) is in its own instance
    assert left[:, 84:].sum() == 0 and right[:, :80].sum() == 0  # split at the boundary line
    semantic = semantic_label(scene.cams, scene.class_ids, scene.boundary, scene.image_size)
    assert semantic[48, 44] == 6 and semantic[48, 112] == 6 and semantic[0, 0] == 0


def _reference_labels(scene, *, instances: bool):
    """The reference pipeline, restated, on the float64 dense walk."""
    if not instances:
        walk = propagate_dense(scene.cams, scene.boundary, dtype=torch.float64)
        return semantic_reference(torch.from_numpy(walk), scene.class_ids, scene.image_size)
    centroids = refine_centroids_reference(scene.displacement)
    clusters = clusters_reference(centroids, scene.displacement)
    seeds = (scene.cams[:, None] * clusters[None]).reshape(-1, *scene.cams.shape[1:])
    walk = propagate_dense(seeds, scene.boundary, dtype=torch.float64)
    channel_classes = np.repeat(scene.class_ids, clusters.shape[0])
    return instances_reference(torch.from_numpy(walk), channel_classes, scene.image_size)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_labels_match_the_reference_restatement(seed: int) -> None:
    scene = random_scene(np.random.default_rng(seed), 14, 19, 3)
    semantic = semantic_label(scene.cams, scene.class_ids, scene.boundary, scene.image_size)
    expected = _reference_labels(scene, instances=False)
    assert semantic.shape == expected.shape == scene.image_size
    assert np.mean(semantic == expected) >= 0.999
    result = instance_labels(scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size)
    reference = _reference_labels(scene, instances=True)
    assert_instances_match(result, reference)


def test_one_walk_gives_the_same_labels() -> None:
    scene = random_scene(np.random.default_rng(9), 20, 26, 2)
    semantic, instances = semantic_and_instance_labels(
        scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size
    )
    alone = semantic_label(scene.cams, scene.class_ids, scene.boundary, scene.image_size)
    np.testing.assert_array_equal(semantic, alone)
    separate = instance_labels(scene.cams, scene.class_ids, scene.boundary, scene.displacement, scene.image_size)
    np.testing.assert_array_equal(instances.masks, separate.masks)
    np.testing.assert_array_equal(instances.class_ids, separate.class_ids)
    np.testing.assert_allclose(instances.scores, separate.scores, rtol=1e-6)
    # torch inputs give the same labels
    torch_semantic, torch_instances = semantic_and_instance_labels(
        torch.from_numpy(scene.cams), torch.tensor(scene.class_ids), torch.from_numpy(scene.boundary[None]),
        torch.from_numpy(scene.displacement), scene.image_size,
    )
    np.testing.assert_array_equal(torch_semantic, semantic)
    np.testing.assert_array_equal(torch_instances.masks, instances.masks)


def test_no_seed_left_means_background_and_no_instances() -> None:
    cams = np.zeros((1, 6, 8), dtype=np.float32)
    cams[0, 2, 3] = 1.0
    boundary = np.zeros((6, 8), dtype=np.float32)
    boundary[2, 3] = 1.0  # the only seed sits on a boundary: every suppressed seed is zero
    displacement = np.zeros((2, 6, 8), dtype=np.float32)
    semantic, instances = semantic_and_instance_labels(cams, [0], boundary, displacement, (24, 32))
    assert np.all(semantic == 0) and len(instances) == 0 and instances.masks.shape == (0, 24, 32)


def _valid() -> dict:
    return dict(
        cam_s4=np.zeros((2, 5, 6), dtype=np.float32) + 0.5,
        class_ids=[1, 4],
        boundary=np.zeros((5, 6), dtype=np.float32),
        displacement=np.zeros((2, 5, 6), dtype=np.float32),
        image_size=(20, 24),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(boundary=np.zeros((5, 7), dtype=np.float32)), "mismatch"),
        (dict(displacement=np.zeros((2, 5, 7), dtype=np.float32)), "mismatch"),
        (dict(displacement=np.zeros((3, 5, 6), dtype=np.float32)), "displacement"),
        (dict(cam_s4=np.full((2, 5, 6), np.nan, dtype=np.float32)), "NaN"),
        (dict(boundary=np.full((5, 6), np.inf, dtype=np.float32)), "NaN or inf"),
        (dict(displacement=np.full((2, 5, 6), -np.inf, dtype=np.float32)), "NaN or inf"),
        (dict(class_ids=[]), "empty class list"),
        (dict(class_ids=[1]), "2 CAM channels"),
        (dict(class_ids=[1, -1]), "0-based"),
        (dict(image_size=(21, 24)), "cover"),
        (dict(image_size=(20, 25)), "cover"),
        (dict(image_size=(0, 24)), "positive"),
        (dict(cam_s4=np.zeros((5, 6), dtype=np.float32)), r"\(K, h, w\)"),
        (dict(boundary=np.full((5, 6), 1.01, dtype=np.float32)), r"\[0, 1\]"),
    ],
)
def test_bad_inputs(change: dict, message: str) -> None:
    arguments = {**_valid(), **change}
    with pytest.raises(InputError, match=message):
        instance_labels(**arguments, image_id="2007_000032")
    if "displacement" not in change:
        arguments.pop("displacement")
        with pytest.raises(InputError, match=message):
            semantic_label(**arguments)


def test_error_names_the_image() -> None:
    with pytest.raises(InputError, match="2007_000032"):
        semantic_label(np.zeros((1, 5, 6)), [], np.zeros((5, 6)), (20, 24), image_id="2007_000032")
