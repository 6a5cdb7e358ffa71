"""Pair labels for IRNet training (reference §6.6, ``GetAffinityLabelFromIndices``).

Built on the training device from the stride-4 ``uint8`` label map (0 background, k+1 class k,
``ignore_index`` unknown) instead of shipping three float tensors of ``D × N_src`` per sample
from the data loader.

Pairs are (source, direction) over the reference's source window: sources in rows
``[0, h − rf)`` × cols ``[rf, w − rf)``, destination ``source + (dy, dx)`` — the same pairs as
:func:`irn_core.relations.affinity.boundary_to_affinity` with ``region="source_window"``.

* valid = neither end is ``ignore_index`` (the reference tests ``label < 21``; its maps hold only
  0..20 and 255, so this is the same on VOC and also right for other class counts);
* ``bg_pos`` = valid ∧ equal ∧ background; ``fg_pos`` = valid ∧ equal ∧ foreground (same class,
  any instance); ``neg`` = valid ∧ different labels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from irn_core.errors import InputError
from irn_core.relations.path_index import PathIndex, shifted_windows

__all__ = ["PairLabels", "pair_labels", "destination_stack"]


class PairLabels(NamedTuple):
    """Bool masks ``(B, D, h − rf, w − 2·rf)`` over the source window (see the module docstring)."""

    bg_pos: torch.Tensor
    fg_pos: torch.Tensor
    neg: torch.Tensor


def destination_stack(values: torch.Tensor, index: PathIndex) -> torch.Tensor:
    """Values at the destinations of every direction: ``(..., h, w)`` → ``(..., D, h − rf, w − 2·rf)``.

    ``[..., d, y, x]`` is ``values[..., y + dy, rf + x + dx]`` for the source ``(y, rf + x)`` of the window
    (gathered by :func:`~irn_core.relations.path_index.shifted_windows`: one backward pass for all directions).
    """
    height, width = values.shape[-2:]
    rows, cols = index.source_window(height, width)
    return shifted_windows(
        values, index.directions, top=0, left=cols.start, height=rows.stop, width=cols.stop - cols.start
    )


def pair_labels(
    label_map: torch.Tensor | np.ndarray,
    index: PathIndex,
    *,
    ignore_index: int = 255,
) -> PairLabels:
    """Background-positive, foreground-positive and negative pairs of a label map.

    Args:
        label_map: ``(B, h, w)`` uint8 labels (0 background, k+1 class k, ``ignore_index``
            unknown) on the device where the masks are wanted; numpy is moved to a CPU tensor.
        index: the path index (radius 10 in training).
        ignore_index: label of unknown pixels.

    Returns:
        :class:`PairLabels` of bool tensors ``(B, D, h − rf, w − 2·rf)`` on the label map's device.
    """
    if isinstance(label_map, np.ndarray):
        label_map = torch.from_numpy(np.ascontiguousarray(label_map))
    if not isinstance(label_map, torch.Tensor):
        raise InputError(f"pair_labels: label_map must be a tensor or array, got {type(label_map).__name__}")
    if label_map.dim() != 3:
        raise InputError(f"pair_labels: label_map must be (B, h, w), got shape {tuple(label_map.shape)}")
    if label_map.dtype != torch.uint8:
        raise InputError(f"pair_labels: label_map must be uint8, got {label_map.dtype}")
    rows, cols = index.source_window(label_map.shape[1], label_map.shape[2])
    source = label_map[:, rows, cols].unsqueeze(1)  # (B, 1, hs, ws)
    destination = destination_stack(label_map, index)  # (B, D, hs, ws)
    valid = (source != ignore_index) & (destination != ignore_index)
    equal = source == destination
    positive = equal & valid
    return PairLabels(
        bg_pos=positive & (source == 0),
        fg_pos=positive & (source > 0),
        neg=valid & ~equal,
    )
