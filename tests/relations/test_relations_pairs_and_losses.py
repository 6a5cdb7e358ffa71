"""Pair labels and IRNet's losses against restatements (flat reference indices; explicit loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from relations_oracles import pair_labels_flat

from irn_core.errors import InputError
from irn_core.relations.losses import affinity_displacement_loss
from irn_core.relations.pair_labels import pair_labels
from irn_core.relations.path_index import path_index


def _random_labels(generator: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    labels = generator.choice(np.array([0, 0, 3, 3, 7, 255], dtype=np.uint8), size=shape)
    # blocks, so that many pairs are equal
    return np.repeat(np.repeat(labels, 3, axis=-2), 3, axis=-1)


def test_pair_labels_match_the_reference_indices() -> None:
    generator = np.random.default_rng(0)
    index = path_index(10)
    label_map = _random_labels(generator, (2, 10, 11))[:, :29, :31]  # (2, 29, 31)
    masks = pair_labels(torch.from_numpy(label_map), index)
    _, source, destination = index.reference_indices(29, 31)
    rows, cols = index.source_window(29, 31)
    for batch in range(2):
        expected = pair_labels_flat(label_map[batch], source, destination)
        for mask, reference in zip(masks, expected):
            assert mask.dtype == torch.bool
            assert mask.shape == (2, 152, rows.stop - rows.start, cols.stop - cols.start)
            np.testing.assert_array_equal(mask[batch].reshape(152, -1).numpy(), reference.astype(bool))
    assert int(masks.bg_pos.sum()) > 0 and int(masks.fg_pos.sum()) > 0 and int(masks.neg.sum()) > 0
    # the three sets are disjoint, and together they are exactly the pairs without an ignored end
    total = masks.bg_pos.int() + masks.fg_pos.int() + masks.neg.int()
    assert int(total.max()) == 1


def test_pair_labels_bad_inputs() -> None:
    index = path_index(10)
    with pytest.raises(InputError, match="uint8"):
        pair_labels(torch.zeros(1, 20, 30, dtype=torch.int64), index)
    with pytest.raises(InputError):
        pair_labels(torch.zeros(20, 30, dtype=torch.uint8), index)
    with pytest.raises(InputError, match="source window"):
        pair_labels(torch.zeros(1, 20, 15, dtype=torch.uint8), index)


def _loss_by_loops(logits: np.ndarray, displacement: np.ndarray, labels: np.ndarray, radius: int) -> dict[str, float]:
    """Every (image, source, direction) pair visited explicitly; reductions of train_irn."""
    index = path_index(radius)
    floor = index.radius_floor
    batch, _, height, width = logits.shape
    boundary = 1.0 / (1.0 + np.exp(-logits[:, 0]))
    sums = dict(bg=0.0, fg=0.0, neg=0.0, bg_loss=0.0, fg_loss=0.0, neg_loss=0.0, dfg=0.0, dbg=0.0)
    for b in range(batch):
        for y in range(0, height - floor):
            for x in range(floor, width - floor):
                for (dy, dx), path in zip(index.directions.tolist(), index.paths):
                    affinity = 1.0 - max(boundary[b, y + py, x + px] for py, px in path.tolist())
                    source, target = int(labels[b, y, x]), int(labels[b, y + dy, x + dx])
                    if source == 255 or target == 255:
                        continue
                    pair = displacement[b, :, y, x] - displacement[b, :, y + dy, x + dx]
                    if source == target:
                        kind = "bg" if source == 0 else "fg"
                        sums[kind] += 1
                        sums[kind + "_loss"] += -math.log(affinity + 1e-5)
                        if kind == "fg":
                            sums["dfg"] += abs(pair[0] - dy) + abs(pair[1] - dx)
                        else:
                            sums["dbg"] += abs(pair[0]) + abs(pair[1])
                    else:
                        sums["neg"] += 1
                        sums["neg_loss"] += -math.log(1 + 1e-5 - affinity)
    pos_bg = sums["bg_loss"] / (sums["bg"] + 1e-5)
    pos_fg = sums["fg_loss"] / (sums["fg"] + 1e-5)
    neg = sums["neg_loss"] / (sums["neg"] + 1e-5)
    displacement_fg = sums["dfg"] / (2 * sums["fg"] + 1e-5)
    displacement_bg = sums["dbg"] / (2 * sums["bg"] + 1e-5)
    total = (pos_bg / 2 + pos_fg / 2 + neg) / 2 + (displacement_fg + displacement_bg) / 2
    return dict(pos_bg=pos_bg, pos_fg=pos_fg, neg=neg, displacement_fg=displacement_fg,
                displacement_bg=displacement_bg, total=total)


@pytest.mark.parametrize(("radius", "size"), [(3, (8, 10)), (5, (11, 13))])
def test_loss_matches_loops(radius: int, size: tuple[int, int]) -> None:
    generator = np.random.default_rng(radius)
    height, width = size
    logits = generator.normal(size=(2, 1, height, width)) * 2
    displacement = generator.normal(size=(2, 2, height, width)) * 3
    labels = _random_labels(generator, (2, height // 3 + 1, width // 3 + 1))[:, :height, :width].copy()
    result = affinity_displacement_loss(
        torch.from_numpy(logits), torch.from_numpy(displacement), torch.from_numpy(labels), path_index(radius)
    )
    expected = _loss_by_loops(logits, displacement, labels, radius)
    assert set(result) == set(expected)
    for key, value in expected.items():
        assert result[key].item() == pytest.approx(value, rel=1e-10), key


def test_loss_backward_and_empty_sets() -> None:
    index = path_index(10)
    logits = torch.randn(2, 1, 20, 24, requires_grad=True)
    displacement = torch.randn(2, 2, 20, 24, requires_grad=True)
    labels = torch.zeros(2, 20, 24, dtype=torch.uint8)  # background only: no fg or negative pairs
    losses = affinity_displacement_loss(logits, displacement, labels, index)
    assert losses["pos_fg"].item() == 0 and losses["neg"].item() == 0 and losses["displacement_fg"].item() == 0
    losses["total"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert torch.isfinite(displacement.grad).all() and displacement.grad.abs().sum() > 0
    # a displacement field pointing every pixel at one centroid costs nothing on fg pairs
    grid_y, grid_x = torch.meshgrid(torch.arange(20.0), torch.arange(24.0), indexing="ij")
    to_centre = torch.stack([10.0 - grid_y, 12.0 - grid_x]).expand(2, 2, 20, 24)
    losses = affinity_displacement_loss(logits.detach(), to_centre, torch.ones(2, 20, 24, dtype=torch.uint8), index)
    assert losses["displacement_fg"].item() == pytest.approx(0.0, abs=1e-6)


def test_loss_bad_shapes() -> None:
    index = path_index(10)
    logits = torch.zeros(2, 1, 20, 24)
    labels = torch.zeros(2, 20, 24, dtype=torch.uint8)
    with pytest.raises(InputError, match="displacement"):
        affinity_displacement_loss(logits, torch.zeros(2, 2, 20, 23), labels, index)
    with pytest.raises(InputError, match="label_map"):
        affinity_displacement_loss(logits, torch.zeros(2, 2, 20, 24), labels[:1], index)
    with pytest.raises(InputError, match="label_map"):
        affinity_displacement_loss(logits, torch.zeros(2, 2, 20, 24), labels.numpy(), index)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="boundary_logits"):
        affinity_displacement_loss(torch.zeros(2, 20, 24), torch.zeros(2, 2, 20, 24), labels, index)


def test_count_reducer_sets_the_denominators() -> None:
    """A reducer that doubles the counts (two identical data-parallel processes) doubles every denominator."""
    torch.manual_seed(0)
    index = path_index(10)
    logits = torch.randn(2, 1, 20, 24, dtype=torch.float64)
    displacement = torch.randn(2, 2, 20, 24, dtype=torch.float64)
    labels = torch.from_numpy(_random_labels(np.random.default_rng(1), (2, 7, 8))[:, :20, :24].copy())
    local = affinity_displacement_loss(logits, displacement, labels, index)
    seen: list[torch.Tensor] = []

    def double(counts: torch.Tensor) -> torch.Tensor:
        seen.append(counts)
        return counts * 2

    reduced = affinity_displacement_loss(logits, displacement, labels, index, count_reducer=double)
    masks = pair_labels(labels, index)
    counts = [float(mask.sum()) for mask in masks]
    np.testing.assert_array_equal(seen[0].numpy(), counts)
    assert not seen[0].requires_grad
    for key, count, factor in [("pos_bg", counts[0], 1), ("pos_fg", counts[1], 1), ("neg", counts[2], 1),
                               ("displacement_fg", counts[1], 2), ("displacement_bg", counts[0], 2)]:
        expected = local[key].item() * (factor * count + 1e-5) / (2 * factor * count + 1e-5)
        assert reduced[key].item() == pytest.approx(expected, rel=1e-12), key
    with pytest.raises(InputError, match="count_reducer"):
        affinity_displacement_loss(logits, displacement, labels, index, count_reducer=lambda counts: counts.sum())
