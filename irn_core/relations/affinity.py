"""Class-boundary probabilities → inter-pixel affinities (reference §6.5).

``a_ij = 1 − max_{k ∈ Π_ij} B_k``: one minus the largest boundary probability on the path between
``i`` and ``j`` (both endpoints included). Outside the map the boundary counts as 1, so a pair
whose path leaves the map has affinity 0.

Representation: ``(B, D, H, W)`` where ``[b, d, y, x]`` relates ``(y, x)`` and
``(y + dy, x + dx)`` for direction ``d`` of the :class:`~irn_core.relations.path_index.PathIndex`
(0 where the destination is off the map). ``region="source_window"`` returns only the reference's
training window (rows ``[0, H − rf)`` × cols ``[rf, W − rf)``), whose destinations are all on the map.

Memory: paths are gathered one length-group at a time and reduced with ``max(dim)``; the backward
keeps only each output's argmax point, never the gathered ``(B, Σ len, N)`` tensor. Speed: with autograd,
the window of each distinct path point is gathered once by one ``index_select``
(:func:`~irn_core.relations.path_index.shifted_windows`) and the groups pick from those windows (stored
points-first, so that each pick is one contiguous block); the backward (:class:`_GroupedPathMax`) adds
each output's gradient onto its argmax point's window by one ``scatter_add_``, rather than one map-sized
gradient per path point (about 4,600 per radius-10 batch) or a zero-filled gradient of each group's
gathered tensor. The values are the same; the boundary's gradient sums the same terms in another order.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from irn_core.errors import InputError
from irn_core.relations.path_index import PathIndex, shifted_windows

__all__ = ["boundary_to_affinity", "boundary_to_path_max"]

Region = Literal["full", "source_window"]


def _output_box(index: PathIndex, height: int, width: int, region: Region) -> tuple[int, int, int, int]:
    """(row_start, row_stop, col_start, col_stop) of the output pixels on the map."""
    if region == "full":
        return 0, height, 0, width
    if region == "source_window":
        rows, cols = index.source_window(height, width)
        return rows.start, rows.stop, cols.start, cols.stop
    raise InputError(f"boundary_to_affinity: region must be 'full' or 'source_window', got {region!r}")


def boundary_to_path_max(
    boundary: torch.Tensor,
    index: PathIndex,
    *,
    region: Region = "full",
    outside_value: float = 1.0,
) -> torch.Tensor:
    """Largest boundary value on every path: ``boundary (B, H, W)`` → ``(B, D, h_out, w_out)``.

    ``h_out × w_out`` is ``H × W`` for ``region="full"`` and the source window otherwise. Points off
    the map read ``outside_value``. Differentiable; see the module docstring for memory.
    """
    if boundary.dim() != 3:
        raise InputError(f"boundary_to_affinity: boundary must be (B, H, W), got shape {tuple(boundary.shape)}")
    height, width = boundary.shape[1:]
    row_start, row_stop, col_start, col_stop = _output_box(index, height, width, region)
    out_height, out_width = row_stop - row_start, col_stop - col_start
    margin = index.radius_floor
    if region == "full":
        padded = F.pad(boundary, (margin, margin, margin, margin), mode="constant", value=outside_value)
        origin_y, origin_x = margin, margin
    else:
        padded = boundary  # every path of the source window stays on the map
        origin_y, origin_x = 0, 0
    def point(dy: int, dx: int) -> torch.Tensor:
        top, left = origin_y + row_start + dy, origin_x + col_start + dx
        return padded[:, top : top + out_height, left : left + out_width]

    if not (torch.is_grad_enabled() and boundary.requires_grad):
        # no autograd: a running elementwise maximum per path (no gathered tensor at all)
        group_maxima = []
        for path in index.paths:
            running = point(int(path[0, 0]), int(path[0, 1]))
            for dy, dx in path[1:].tolist():
                running = torch.maximum(running, point(dy, dx))
            group_maxima.append(running.unsqueeze(1))
        return torch.cat(group_maxima, dim=1)
    # every distinct path point's window once, then each length-group's points picked from them
    points = np.concatenate([group.offsets.reshape(-1, 2) for group in index.groups])
    distinct, inverse = np.unique(points, axis=0, return_inverse=True)
    inverse = torch.from_numpy(inverse.reshape(-1)).to(boundary.device)
    windows = shifted_windows(
        padded, distinct, top=origin_y + row_start, left=origin_x + col_start, height=out_height, width=out_width
    )
    # points first, so that each selected window (and its gradient) is one contiguous block of the batch
    windows = windows.transpose(0, 1).contiguous()  # (points, B, h_out, w_out)
    selections = []
    start = 0
    for group in index.groups:
        selections.append(inverse[start : start + group.count * group.length].view(group.count, group.length))
        start += group.count * group.length
    return _GroupedPathMax.apply(windows, tuple(selections)).transpose(0, 1).contiguous()


class _GroupedPathMax(torch.autograd.Function):
    """Per path, the largest of its points' windows, with a hand-written gradient.

    ``windows``: ``(P, B, h, w)``, the distinct path points' windows; ``selections``: per length-group a
    ``(count, length)`` index of each path's points into ``windows``. Returns ``(D, B, h, w)``, the groups'
    paths in order. Forward: one length-group at a time, gathered and reduced by ``max(dim)``. Backward: the
    gradient goes to each output's argmax point (the point ``max`` picks, as autograd would), added into
    ``(P, B, h, w)`` by one ``scatter_add_`` — instead of autograd's zero-filled gradient of every group's
    gathered ``(count, length, B, h, w)`` tensor and the ``index_add`` back onto the windows.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, windows: torch.Tensor, selections: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        points, trailing = windows.shape[0], windows.shape[1:]
        flat = windows.reshape(points, -1)
        maxima, sources = [], []
        for selection in selections:
            count, length = selection.shape
            gathered = flat.index_select(0, selection.reshape(-1)).view(count, length, flat.shape[1])
            values, position = torch.max(gathered, dim=1)
            del gathered
            maxima.append(values)
            sources.append(torch.gather(selection, 1, position))  # (count, N): the argmax's window
        ctx.save_for_backward(torch.cat(sources, dim=0))
        ctx.points = points
        return torch.cat(maxima, dim=0).view(-1, *trailing)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, gradient: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        (sources,) = ctx.saved_tensors
        flat_gradient = gradient.reshape(sources.shape)
        window_gradient = flat_gradient.new_zeros(ctx.points, sources.shape[1])
        window_gradient.scatter_add_(0, sources, flat_gradient)
        return window_gradient.view(ctx.points, *gradient.shape[1:]), None


def boundary_to_affinity(
    boundary: torch.Tensor | np.ndarray,
    index: PathIndex,
    *,
    region: Region = "full",
    outside_value: float = 1.0,
) -> torch.Tensor | np.ndarray:
    """Affinities ``1 − max boundary on the path``.

    Args:
        boundary: ``(B, H, W)`` boundary probabilities in [0, 1] (torch, any device, or numpy).
        index: the path index (radius 5 for the random walk, 10 for IRNet training).
        region: ``"full"`` → ``(B, D, H, W)``, pairs whose destination is off the map get 0;
            ``"source_window"`` → ``(B, D, H − rf, W − 2·rf)``, the reference's training window.
        outside_value: boundary value assumed off the map (the reference pads with 1.0).

    Returns:
        Affinities of the same kind (torch on the input's device, or numpy) and float dtype.
        Differentiable with respect to a torch ``boundary``.
    """
    if isinstance(boundary, np.ndarray):
        result = boundary_to_affinity(torch.from_numpy(boundary), index, region=region, outside_value=outside_value)
        return result.numpy()
    if not isinstance(boundary, torch.Tensor):
        raise InputError(f"boundary_to_affinity: boundary must be a tensor or array, got {type(boundary).__name__}")
    if not boundary.is_floating_point():
        raise InputError(f"boundary_to_affinity: boundary must be floating point, got {boundary.dtype}")
    return 1.0 - boundary_to_path_max(boundary, index, region=region, outside_value=outside_value)
