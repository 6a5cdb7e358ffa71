"""shifted_windows (the one-gather form of IRNet's path and destination stacks) against the slice stacks
it replaced: the same values bit for bit, the same gradients up to the order of float32 sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irn_core.errors import InputError
from irn_core.relations.affinity import boundary_to_path_max
from irn_core.relations.losses import _displacement_sums
from irn_core.relations.pair_labels import destination_stack, pair_labels
from irn_core.relations.path_index import path_index, shifted_windows
from relations_oracles import sliced_destinations, sliced_path_max, stacked_displacement_sums


def test_shifted_windows_are_the_slices() -> None:
    values = torch.arange(2 * 3 * 7 * 9, dtype=torch.float32).view(2, 3, 7, 9)
    offsets = np.array([[0, 0], [2, -1], [1, 3]])
    windows = shifted_windows(values, offsets, top=1, left=2, height=4, width=3)
    assert windows.shape == (2, 3, 3, 4, 3)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(windows[:, :, k], values[..., 1 + dy : 5 + dy, 2 + dx : 5 + dx])
    with pytest.raises(InputError, match="leave the 7x9 map"):
        shifted_windows(values, np.array([[4, 0]]), top=1, left=2, height=4, width=3)


def _assert_same_values_and_close_gradients(new: torch.Tensor, old: torch.Tensor, leaf: torch.Tensor) -> None:
    assert torch.equal(new, old)
    upstream = torch.randn(new.shape, generator=torch.Generator().manual_seed(2))
    (new_gradient,) = torch.autograd.grad(new, leaf, upstream)
    (old_gradient,) = torch.autograd.grad(old, leaf, upstream)
    torch.testing.assert_close(new_gradient, old_gradient, rtol=1e-5, atol=1e-5)
    assert float(old_gradient.abs().max()) > 0.1  # the comparison sees real gradients


@pytest.mark.parametrize("radius", [5, 10])
def test_destinations_and_path_maxima_equal_the_slice_stacks(radius: float) -> None:
    generator = torch.Generator().manual_seed(0)
    displacement = torch.randn(2, 2, 30, 33, generator=generator, requires_grad=True)
    boundary = torch.rand(2, 30, 33, generator=generator, requires_grad=True)
    labels = torch.randint(0, 3, (2, 30, 33), generator=generator).to(torch.uint8)
    index = path_index(radius)

    assert torch.equal(destination_stack(labels, index), sliced_destinations(labels, radius))
    _assert_same_values_and_close_gradients(
        destination_stack(displacement, index), sliced_destinations(displacement, radius), displacement
    )
    _assert_same_values_and_close_gradients(
        boundary_to_path_max(boundary, index, region="source_window"), sliced_path_max(boundary, radius), boundary
    )


def test_full_region_path_maximum_with_and_without_autograd_agree() -> None:
    """The gathered autograd branch against the running-maximum branch (padding read as 1 off the map)."""
    boundary = torch.rand(2, 17, 19, generator=torch.Generator().manual_seed(1))
    index = path_index(5)
    expected = boundary_to_path_max(boundary, index, region="full")
    actual = boundary_to_path_max(boundary.clone().requires_grad_(True), index, region="full")
    assert torch.equal(actual.detach(), expected)


def test_per_direction_displacement_sums_equal_the_stacked_form_with_their_gradients() -> None:
    """The loss's displacement terms, one direction at a time on views of the map, against the former
    (B, 2, D, hs, ws) stack of destinations: the same sums and gradients up to float64 rounding."""
    generator = torch.Generator().manual_seed(3)
    index = path_index(5)
    labels = torch.randint(0, 3, (2, 20, 23), generator=generator).to(torch.uint8)
    labels[:, :3] = 255
    masks = pair_labels(labels, index)
    fg_pos, bg_pos = masks.fg_pos.double(), masks.bg_pos.double()
    gradients, sums = [], []
    for form in ("per_direction", "stacked"):
        displacement = (3 * torch.randn((2, 2, 20, 23), generator=torch.Generator().manual_seed(4),
                                        dtype=torch.float64)).requires_grad_()
        if form == "per_direction":
            fg_sum, bg_sum = _displacement_sums(displacement, index, fg_pos, bg_pos)
        else:
            fg_sum, bg_sum = stacked_displacement_sums(displacement, index, fg_pos, bg_pos, destination_stack)
        (fg_sum + 2 * bg_sum).backward()
        sums.append(torch.stack([fg_sum, bg_sum]).detach())
        gradients.append(displacement.grad)
    assert float(sums[1][0]) > 0 and float(sums[1][1]) > 0
    torch.testing.assert_close(sums[0], sums[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-12, atol=1e-12)


def test_path_maximum_gradient_goes_to_the_point_max_picks_also_on_ties() -> None:
    """The hand-written backward of the path maximum against autograd through ``max`` on the former slice
    stacks, in float64 on a boundary of few distinct values (paths with tied maxima): the same points get
    the same gradient."""
    generator = torch.Generator().manual_seed(5)
    boundary = (torch.randint(0, 4, (2, 26, 29), generator=generator) / 4).double().requires_grad_()
    index = path_index(10)
    new = boundary_to_path_max(boundary, index, region="source_window")
    old = sliced_path_max(boundary, 10)
    assert torch.equal(new, old)
    upstream = torch.rand(new.shape, generator=generator, dtype=torch.float64)
    (new_gradient,) = torch.autograd.grad(new, boundary, upstream)
    (old_gradient,) = torch.autograd.grad(old, boundary, upstream)
    torch.testing.assert_close(new_gradient, old_gradient, rtol=1e-12, atol=1e-12)
    assert float(old_gradient.abs().sum()) == pytest.approx(float(upstream.sum()))  # each output's one point
