"""Centroid refinement, clustering and fragment detection against restatements and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from relations_oracles import clusters_reference, label_4_connected, refine_centroids_reference

from irn_core.errors import InputError
from irn_core.instances import cluster_centroids, connected_components, detect_instances, find_centroids


def radial_field(height: int, width: int, centre: tuple[float, float], step: float = 1.5) -> np.ndarray:
    """Displacement towards ``centre``, at most ``step`` long."""
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float64)
    vector = np.stack([centre[0] - grid_y, centre[1] - grid_x])
    length = np.sqrt((vector**2).sum(axis=0))
    scale = np.minimum(1.0, step / np.maximum(length, 1e-12))
    return (vector * scale).astype(np.float32)


def test_refinement_converges_to_the_centre_of_a_radial_field() -> None:
    field = radial_field(20, 16, (10.3, 7.6))
    centroids = find_centroids(field)
    assert centroids.dtype == np.int32 and centroids.shape == (2, 20, 16)
    assert np.all(centroids[0] == 10) and np.all(centroids[1] == 8)
    np.testing.assert_array_equal(centroids, refine_centroids_reference(field))
    # a field pushing out of the map is clipped to the border
    outward = -radial_field(9, 11, (4.3, 5.2), step=3.0)
    centroids = find_centroids(outward)
    assert set(np.unique(centroids[0])) <= {0, 8} and set(np.unique(centroids[1])) <= {0, 10}
    np.testing.assert_array_equal(centroids, refine_centroids_reference(outward))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refinement_matches_the_reference_on_rough_fields(seed: int) -> None:
    generator = np.random.default_rng(seed)
    height, width = 17, 23
    field = radial_field(height, width, (4.2, 5.5)) * (generator.random((height, width)) > 0.5)
    field = field + radial_field(height, width, (12.7, 17.1)) * (generator.random((height, width)) > 0.5)
    field = (field + generator.normal(scale=0.8, size=field.shape)).astype(np.float32)
    for iterations in (0, 1, 7, 300):
        np.testing.assert_array_equal(
            find_centroids(field, iterations=iterations), refine_centroids_reference(field, iterations)
        )
    np.testing.assert_array_equal(find_centroids(torch.from_numpy(field)), refine_centroids_reference(field))


def test_connected_components_are_4_connected_in_raster_order() -> None:
    generator = np.random.default_rng(5)
    for _ in range(5):
        mask = generator.random((13, 17)) < 0.45
        labels, count = connected_components(mask)
        expected, expected_count = label_4_connected(mask)
        assert count == expected_count
        np.testing.assert_array_equal(labels, expected)
    diagonal = np.eye(3, dtype=bool)
    assert connected_components(diagonal)[1] == 3


def test_clusters_and_the_extra_cluster() -> None:
    # row map, width 10: weak (|D| < 2.5) at x in {1, 2} and {6, 7}, strong elsewhere
    field = np.zeros((2, 1, 10), dtype=np.float32)
    field[1, 0] = [3, 0, 0, 3, 3, -3, 0, 0, -3, -3]
    centroids = np.zeros((2, 1, 10), dtype=np.int32)
    centroids[1, 0] = [1, 1, 2, 2, 4, 7, 6, 7, 7, 9]  # pixel 4 lands at 4 and pixel 9 at 9: strong area
    clusters = cluster_centroids(centroids, field)
    assert clusters.dtype == bool and clusters.shape == (3, 1, 10)
    np.testing.assert_array_equal(clusters.argmax(axis=0)[0], [1, 1, 1, 1, 0, 2, 2, 2, 2, 0])
    np.testing.assert_array_equal(clusters, clusters_reference(centroids, field))
    # a component that no centroid reaches is dropped, ids compacted
    centroids[1, 0] = [6, 6, 6, 6, 6, 6, 6, 6, 6, 6]
    clusters = cluster_centroids(centroids, field)
    assert clusters.shape == (1, 1, 10) and clusters.all()
    # no candidate centroid at all: one cluster, every pixel in it (the reference's behaviour)
    strong = np.full((2, 4, 5), 3.0, dtype=np.float32)
    clusters = cluster_centroids(find_centroids(strong), strong)
    assert clusters.shape == (1, 4, 5) and clusters.all()


@pytest.mark.parametrize("seed", [3, 4])
def test_clusters_match_the_reference_on_rough_fields(seed: int) -> None:
    generator = np.random.default_rng(seed)
    field = (radial_field(15, 19, (7.0, 9.0)) * 3 + generator.normal(scale=1.5, size=(2, 15, 19))).astype(np.float32)
    centroids = find_centroids(field)
    clusters = cluster_centroids(centroids, field)
    np.testing.assert_array_equal(clusters, clusters_reference(centroids, field))
    assert np.all(clusters.sum(axis=0) == 1)


def test_detect_instances_fragments_scores_and_order() -> None:
    height, width = 20, 30  # 600 pixels: fragments under 6 pixels get score 0
    scores = np.zeros((3, height, width), dtype=np.float32)
    assignment = np.zeros((height, width), dtype=np.int64)
    assignment[2:6, 20:25] = 2  # channel 1, first in raster order
    scores[1, 3, 21] = 0.9
    assignment[10:14, 2:8] = 2  # channel 1, second fragment
    scores[1, 11, 3] = 0.7
    scores[1, 0, 0] = 5.0  # outside every fragment: never a score
    assignment[18, 28:30] = 3  # channel 2: 2 pixels, under 1% of the image
    scores[2, 18, 28] = 0.95
    detections = detect_instances(scores, assignment, np.array([4, 4, 11]))
    assert len(detections) == 3
    np.testing.assert_array_equal(detections.class_ids, [4, 4, 11])
    np.testing.assert_allclose(detections.scores, [0.9, 0.7, 0.0])
    assert detections.scores.dtype == np.float32 and detections.class_ids.dtype == np.int64
    assert detections.masks.dtype == bool and detections.masks.shape == (3, height, width)
    assert detections.masks[0, 2:6, 20:25].all() and detections.masks[0].sum() == 20
    assert detections.masks[1, 10:14, 2:8].all() and detections.masks[1].sum() == 24
    assert detections.masks[2].sum() == 2
    empty = detect_instances(scores, np.zeros((height, width), dtype=np.int64), np.array([4, 4, 11]))
    assert len(empty) == 0 and empty.masks.shape == (0, height, width)


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match=r"\(2, h, w\)"):
        find_centroids(np.zeros((3, 4, 5), dtype=np.float32))
    with pytest.raises(InputError, match="NaN"):
        find_centroids(np.full((2, 4, 5), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="iterations"):
        find_centroids(np.zeros((2, 4, 5), dtype=np.float32), iterations=-1)
    with pytest.raises(InputError, match="centroids must be"):
        cluster_centroids(np.zeros((2, 4, 4), dtype=np.int32), np.zeros((2, 4, 5), dtype=np.float32))
    with pytest.raises(InputError, match="outside"):
        cluster_centroids(np.full((2, 4, 5), 9, dtype=np.int32), np.zeros((2, 4, 5), dtype=np.float32))
    with pytest.raises(InputError, match="mismatch"):
        detect_instances(np.zeros((2, 4, 5)), np.zeros((4, 6), dtype=np.int64), np.array([1, 2]))
