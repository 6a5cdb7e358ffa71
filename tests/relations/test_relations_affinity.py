"""boundary_to_affinity against an explicit loop restatement (boundary counted 1 off the map)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from relations_oracles import affinity_loops

from irn_core.errors import InputError
from irn_core.relations.affinity import boundary_to_affinity
from irn_core.relations.path_index import path_index


@pytest.mark.parametrize("radius", [3, 5])
def test_matches_loops(radius: int) -> None:
    generator = np.random.default_rng(radius)
    boundary = generator.random((2, 7, 11))
    index = path_index(radius)
    expected = affinity_loops(boundary, index.directions, list(index.paths))
    result = boundary_to_affinity(boundary, index)
    assert isinstance(result, np.ndarray) and result.shape == (2, index.num_directions, 7, 11)
    np.testing.assert_array_equal(result, expected)
    # with autograd (grouped gather + max(dim)) the values are the same
    tensor = torch.from_numpy(boundary).requires_grad_(True)
    with_grad = boundary_to_affinity(tensor, index)
    np.testing.assert_array_equal(with_grad.detach().numpy(), expected)


def test_outside_counts_as_boundary() -> None:
    index = path_index(5)
    affinity = boundary_to_affinity(torch.zeros(1, 6, 9), index)
    height, width = 6, 9
    for number, (dy, dx) in enumerate(index.directions.tolist()):
        for y in range(height):
            for x in range(width):
                inside = 0 <= y + dy < height and 0 <= x + dx < width
                assert affinity[0, number, y, x].item() == (1.0 if inside else 0.0)
    # a single boundary pixel cuts every pair whose path crosses it
    boundary = torch.zeros(1, 6, 9)
    boundary[0, 2, 4] = 0.75
    affinity = boundary_to_affinity(boundary, index)
    for number, path in enumerate(index.paths):
        for y in range(height):
            for x in range(width):
                dy, dx = path[0]
                if not (0 <= y + dy < height and 0 <= x + dx < width):
                    continue
                crosses = any((y + py, x + px) == (2, 4) for py, px in path.tolist())
                assert affinity[0, number, y, x].item() == pytest.approx(0.25 if crosses else 1.0)


def test_source_window_is_a_crop_of_full() -> None:
    index = path_index(10)
    boundary = torch.rand(2, 16, 24, dtype=torch.float64)
    full = boundary_to_affinity(boundary, index)
    window = boundary_to_affinity(boundary, index, region="source_window")
    rows, cols = index.source_window(16, 24)
    assert window.shape == (2, 152, 7, 6)
    torch.testing.assert_close(window, full[:, :, rows, cols], rtol=0, atol=0)
    assert bool((window > 0).all())  # no path of the window leaves the map


def test_gradient_flows_to_the_path_maximum() -> None:
    index = path_index(3)
    boundary = torch.rand(1, 5, 6, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda b: boundary_to_affinity(b, index), (boundary,))
    affinity = boundary_to_affinity(boundary, index)
    affinity.sum().backward()
    # every affinity's gradient −1 lands on exactly one pixel: the gradient sums to −(number of in-map pairs)
    in_map = int((affinity.detach() > 0).sum())
    assert boundary.grad.sum().item() == pytest.approx(-in_map)


def test_bad_inputs() -> None:
    index = path_index(5)
    with pytest.raises(InputError):
        boundary_to_affinity(torch.zeros(5, 5), index)
    with pytest.raises(InputError):
        boundary_to_affinity(torch.zeros(1, 5, 5, dtype=torch.int64), index)
    with pytest.raises(InputError):
        boundary_to_affinity(torch.zeros(1, 5, 5), index, region="middle")  # type: ignore[arg-type]


def test_backward_keeps_no_gathered_path_tensor() -> None:
    """What autograd saves is at most affinity-sized (each output's argmax point, one tensor for every path,
    and the gather index of the distinct path points' windows, which has no batch dimension), never the
    Σ len gather."""
    index = path_index(10)
    boundary = torch.rand(2, 24, 30, requires_grad=True)
    saved_sizes: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved_sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        affinity = boundary_to_affinity(boundary, index, region="source_window")
    affinity.sum().backward()
    distinct_points = len({(dy, dx) for group in index.groups for dy, dx in group.offsets.reshape(-1, 2).tolist()})
    window = affinity.shape[-2] * affinity.shape[-1]
    assert distinct_points == 162
    assert saved_sizes and max(saved_sizes) <= max(2 * index.num_directions, distinct_points) * window
    # + each group's choice among the distinct points (2134 in all); vs 2 · 2134 · window for the gather
    points = sum(group.count * group.length for group in index.groups)
    assert sum(saved_sizes) <= (2 * index.num_directions + distinct_points) * window + points
    assert boundary.grad is not None and torch.isfinite(boundary.grad).all()
