"""The sparse random walk against the dense reference formulation, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irn_core.errors import InputError
from irn_core.random_walk import propagate, propagate_dense, transition_matrix
from irn_core.relations.affinity import boundary_to_affinity
from irn_core.relations.path_index import path_index

CASES = [  # (height, width, channels, beta, radius, exp_times)
    (12, 17, 3, 10.0, 5, 8),
    (20, 23, 2, 3.0, 5, 5),
    (9, 30, 4, 10.0, 3, 6),
    (15, 15, 2, 10.0, 7, 8),
    (3, 4, 2, 10.0, 5, 8),  # smaller than the neighbourhood
    (1, 9, 1, 10.0, 5, 0),  # a single step
]


def _inputs(generator: np.random.Generator, height: int, width: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    scores = generator.random((channels, height, width))
    scores[:, generator.random((height, width)) < 0.5] = 0  # sparse seeds, as CAMs after ReLU
    boundary = generator.random((height, width)) ** 3
    boundary[generator.random((height, width)) < 0.1] = 1.0
    return scores, boundary


@pytest.mark.parametrize(("height", "width", "channels", "beta", "radius", "exp_times"), CASES)
def test_equals_dense_oracle_float64(
    height: int, width: int, channels: int, beta: float, radius: int, exp_times: int
) -> None:
    generator = np.random.default_rng(height * 100 + width)
    scores, boundary = _inputs(generator, height, width, channels)
    dense = propagate_dense(scores, boundary, beta=beta, radius=radius, exp_times=exp_times, dtype=torch.float64)
    for method in ("sparse", "stencil"):
        result = propagate(scores, boundary, beta=beta, radius=radius, exp_times=exp_times, method=method)
        assert isinstance(result, np.ndarray) and result.dtype == np.float64 and result.shape == scores.shape
        np.testing.assert_allclose(result, dense, rtol=0, atol=1e-12 * np.abs(dense).max())


@pytest.mark.parametrize(("height", "width", "channels"), [(14, 19, 3), (24, 30, 5)])
def test_float32_within_the_references_own_error(height: int, width: int, channels: int) -> None:
    generator = np.random.default_rng(7)
    scores, boundary = _inputs(generator, height, width, channels)
    scores, boundary = scores.astype(np.float32), boundary.astype(np.float32)
    exact = propagate_dense(scores, boundary, dtype=torch.float64)
    reference = propagate_dense(scores, boundary, dtype=torch.float32)
    result = propagate(scores, boundary)
    assert result.dtype == np.float32
    largest = np.abs(reference).max()
    assert np.abs(result - reference).max() <= 1e-3 * largest
    # no larger than the float32 reference's own error against float64 (plus the final float32 rounding)
    own_error = np.abs(reference - exact).max()
    assert np.abs(result - exact).max() <= own_error + np.spacing(np.float32(largest))


def test_torch_in_torch_out_and_boundary_shapes() -> None:
    scores = torch.rand(2, 10, 12)
    boundary = torch.rand(1, 10, 12)
    result = propagate(scores, boundary)
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float32 and result.device == scores.device
    same = propagate(scores, boundary[0])
    torch.testing.assert_close(result, same, rtol=0, atol=0)
    from_numpy = propagate(scores.numpy(), boundary.numpy())
    np.testing.assert_array_equal(from_numpy, result.numpy())
    # channels are walked independently
    one = propagate(scores[1:], boundary)
    torch.testing.assert_close(one[0], result[1], rtol=1e-6, atol=1e-7)


def test_integer_scores_and_empty_channel_list() -> None:
    boundary = np.zeros((6, 7))
    walked = propagate(np.ones((1, 6, 7), dtype=np.int64), boundary)
    assert walked.dtype == np.float32
    np.testing.assert_allclose(walked, 1.0, rtol=1e-6)
    assert propagate(np.zeros((0, 6, 7), dtype=np.float32), boundary).shape == (0, 6, 7)


def test_no_leak_across_a_closed_boundary() -> None:
    height, width = 24, 26
    boundary = np.zeros((height, width), dtype=np.float32)
    boundary[5, 5:20] = boundary[18, 5:20] = 1.0
    boundary[5:19, 5] = boundary[5:19, 19] = 1.0  # a closed square ring, one pixel thick
    inside = np.zeros((height, width), dtype=bool)
    inside[6:18, 6:19] = True
    scores = np.zeros((2, height, width), dtype=np.float32)
    scores[0, 10, 10] = 1.0  # seed inside
    scores[1, 1, 1] = 1.0  # seed outside
    walked = propagate(scores, boundary)
    outside = ~inside & (boundary == 0)
    assert np.all(walked[0][~inside] == 0) and np.all(walked[0][inside] > 0)
    assert np.all(walked[1][inside] == 0) and np.all(walked[1][outside] > 0)
    assert np.all(walked[:, boundary == 1] == 0)
    # the walk has mixed: inside the ring the seed is spread almost evenly (d-weighted mass 1)
    assert walked[0][inside].max() / walked[0][inside].min() < 1.5


def _column_sums(boundary: np.ndarray, beta: float, radius: int) -> np.ndarray:
    """d_j = Σ_i S_ij over in-image i (self-loop 1), by explicit loops over directions."""
    index = path_index(radius)
    affinity = boundary_to_affinity(boundary[None], index)[0]
    height, width = boundary.shape
    sums = np.ones((height, width))
    for number, (dy, dx) in enumerate(index.directions.tolist()):
        for y in range(height):
            for x in range(width):
                if 0 <= y + dy < height and 0 <= x + dx < width:
                    weight = affinity[number, y, x] ** beta
                    sums[y, x] += weight
                    sums[y + dy, x + dx] += weight
    return sums


def test_normalisation_constants_and_mass() -> None:
    generator = np.random.default_rng(3)
    height, width, beta = 13, 16, 10.0
    boundary = generator.random((height, width)) * 0.9
    # T is column-stochastic: x T = x for constant x (after the (1 − boundary) suppression)
    constant = np.full((1, height, width), 2.5) / (1.0 - boundary)
    np.testing.assert_allclose(propagate(constant, boundary, beta=beta), 2.5, rtol=1e-12)
    # ... and S symmetric: the d-weighted mass Σ_j d_j y_j is that of the suppressed seeds
    sums = _column_sums(boundary, beta, 5)
    scores = generator.random((3, height, width))
    walked = propagate(scores, boundary, beta=beta)
    seeds = scores * (1 - boundary)
    np.testing.assert_allclose((walked * sums).sum(axis=(1, 2)), (seeds * sums).sum(axis=(1, 2)), rtol=1e-12)
    # the CSR operator: rows sum to 1, the weights are S_ij / d_j
    matrix = transition_matrix(torch.from_numpy(boundary), beta=beta).to_dense().numpy()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-12)
    symmetric = matrix * sums.reshape(-1, 1)
    np.testing.assert_allclose(symmetric, symmetric.T, rtol=1e-12, atol=1e-15)
    assert np.count_nonzero(matrix[(height // 2) * width + width // 2]) == 69  # 34 + 34 + self at radius 5


@pytest.mark.parametrize(
    ("scores", "boundary", "message"),
    [
        (np.zeros((2, 5, 6)), np.zeros((5, 7)), "mismatch"),
        (np.zeros((5, 6)), np.zeros((5, 6)), "scores must be"),
        (np.zeros((2, 5, 6)), np.zeros((2, 5, 6)), "boundary must be"),
        (np.full((2, 5, 6), np.nan), np.zeros((5, 6)), "NaN"),
        (np.zeros((2, 5, 6)), np.full((5, 6), np.inf), "NaN or inf"),
        (np.zeros((2, 5, 6)), np.full((5, 6), 1.5), r"\[0, 1\]"),
        (np.zeros((2, 0, 6)), np.zeros((0, 6)), "empty"),
        ([[1.0]], np.zeros((5, 6)), "numpy array or torch tensor"),
    ],
)
def test_bad_inputs(scores: object, boundary: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        propagate(scores, boundary)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "keywords",
    [dict(beta=0), dict(beta=float("nan")), dict(exp_times=-1), dict(exp_times=2.0), dict(radius=1), dict(method="dense")],
)
def test_bad_parameters(keywords: dict) -> None:
    with pytest.raises(InputError):
        propagate(np.zeros((1, 5, 6)), np.zeros((5, 6)), **keywords)


def test_dense_oracle_needs_an_integer_radius() -> None:
    with pytest.raises(InputError, match="integer"):
        propagate_dense(np.zeros((1, 5, 6)), np.zeros((5, 6)), radius=4.5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    generator = np.random.default_rng(11)
    scores, boundary = _inputs(generator, 30, 41, 4)
    cpu = propagate(torch.from_numpy(scores), torch.from_numpy(boundary))
    for method in ("sparse", "stencil"):
        cuda = propagate(torch.from_numpy(scores).cuda(), torch.from_numpy(boundary).cuda(), method=method)
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-10, atol=1e-12)
