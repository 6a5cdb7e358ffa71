"""Neighbourhood directions and pixel paths of IRNet's inter-pixel relations (reference §6.4).

A *direction* ``(dy, dx)`` relates a source pixel ``(y, x)`` to the destination ``(y + dy, x + dx)``.
Only the "forward half-disk" is listed (``(0, x)`` for ``x = 1 .. radius_floor``, then every
``(y, x)`` with ``y >= 1`` and ``y² + x² < radius²``); the reverse pairs are implied.

The *path* of a direction is every integer point of the axis-aligned box between ``(0, 0)`` and
``(dy, dx)`` whose distance to the segment is below one pixel (squared perpendicular distance
``(dy·x − dx·y)² / (dy² + dx²) < 1``). Both endpoints belong to it. Points are ordered as the
reference orders them: box points in row-major order, then a stable sort by decreasing
``|y| + |x|`` — so point 0 is the destination and the last point is the source ``(0, 0)``.

Directions are grouped by path length (groups by increasing length; inside a group, the order
in which the directions were generated). The concatenation of the groups is the reference's
``search_dst`` order, used everywhere in this package (affinities, pair labels, losses).

Radius 5 gives 34 directions (used by the random walk), radius 10 gives 152 (IRNet training).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from irn_core.errors import InputError

__all__ = ["PathGroup", "PathIndex", "path_index", "shifted_windows"]


@dataclass(frozen=True, eq=False)
class PathGroup:
    """Directions whose paths have the same number of points.

    Attributes:
        length: number of points of every path in the group (both endpoints included).
        start: index of the group's first direction in :attr:`PathIndex.directions`.
        offsets: ``(count, length, 2)`` int64 path points ``(y, x)`` relative to the source,
            point 0 the destination, the last point ``(0, 0)``.
    """

    length: int
    start: int
    offsets: np.ndarray

    @property
    def count(self) -> int:
        """Number of directions in the group."""
        return int(self.offsets.shape[0])

    @property
    def stop(self) -> int:
        """One past the index of the group's last direction in :attr:`PathIndex.directions`."""
        return self.start + self.count


@dataclass(frozen=True, eq=False)
class PathIndex:
    """Directions and paths for one radius (build it with :func:`path_index`, which caches).

    Attributes:
        radius: the search radius (pairs at Euclidean distance < radius are related).
        radius_floor: ``ceil(radius) − 1``, the largest |dy| or |dx| of any direction.
        directions: ``(D, 2)`` int64 ``(dy, dx)`` in the reference's ``search_dst`` order.
        paths: per direction, a ``(length, 2)`` int64 array of path points (destination first).
        groups: the grouping by path length, in increasing length.
    """

    radius: float
    radius_floor: int
    directions: np.ndarray
    paths: tuple[np.ndarray, ...]
    groups: tuple[PathGroup, ...]

    @property
    def num_directions(self) -> int:
        """D, the number of (forward) directions."""
        return int(self.directions.shape[0])

    @property
    def path_lengths(self) -> np.ndarray:
        """``(D,)`` int64 number of points of each direction's path."""
        return np.asarray([len(path) for path in self.paths], dtype=np.int64)

    def source_window(self, height: int, width: int) -> tuple[slice, slice]:
        """Rows and columns of the reference's source window on a ``height × width`` grid.

        The window is rows ``[0, height − rf)`` × cols ``[rf, width − rf)`` (rf =
        :attr:`radius_floor`): every destination of every source in it lies on the grid.
        """
        rf = self.radius_floor
        if height - rf <= 0 or width - 2 * rf <= 0:
            raise InputError(
                f"path index radius {self.radius}: a {height}x{width} grid has no source window "
                f"(needs height > {rf} and width > {2 * rf})"
            )
        return slice(0, height - rf), slice(rf, width - rf)

    def reference_indices(self, height: int, width: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Flat index arrays as the reference's ``PathIndex.get_path_indices((height, width))``.

        Returns:
            path_indices: per group, ``(count, length, N_src)`` int64 flat (row-major) indices of
                every path point for every source of the source window.
            source_indices: ``(N_src,)`` int64 flat indices of the source window.
            destination_indices: ``(D, N_src)`` int64 flat indices of the destinations.
        """
        rows, cols = self.source_window(height, width)
        full = np.arange(height * width, dtype=np.int64).reshape(height, width)
        window_height = rows.stop - rows.start
        window_width = cols.stop - cols.start
        per_group = []
        for group in self.groups:
            indices = np.empty((group.count, group.length, window_height * window_width), dtype=np.int64)
            for path_number, path in enumerate(group.offsets):
                for point_number, (dy, dx) in enumerate(path):
                    block = full[dy : dy + window_height, cols.start + dx : cols.start + dx + window_width]
                    indices[path_number, point_number] = block.reshape(-1)
            per_group.append(indices)
        source_indices = full[rows, cols].reshape(-1)
        destination_indices = np.concatenate([indices[:, 0] for indices in per_group], axis=0)
        return per_group, source_indices, destination_indices


def _forward_directions(radius: float, radius_floor: int) -> list[tuple[int, int]]:
    """Directions in the reference's generation order (before grouping by path length)."""
    directions = [(0, dx) for dx in range(1, radius_floor + 1)]
    for dy in range(1, radius_floor + 1):
        for dx in range(-radius_floor, radius_floor + 1):
            if dx * dx + dy * dy < radius * radius:
                directions.append((dy, dx))
    return directions


def _path_points(direction: tuple[int, int]) -> list[tuple[int, int]]:
    """Points within distance < 1 of the segment (0, 0)–direction, in the reference's order."""
    dy, dx = direction
    length_squared = dy * dy + dx * dx
    y_low, y_high = sorted((0, dy))
    x_low, x_high = sorted((0, dx))
    points = [
        (y, x)
        for y in range(y_low, y_high + 1)
        for x in range(x_low, x_high + 1)
        if (dy * x - dx * y) ** 2 / length_squared < 1
    ]
    points.sort(key=lambda point: -abs(point[0]) - abs(point[1]))  # stable, as the reference's list.sort
    return points


@functools.lru_cache(maxsize=16)
def _build(radius: float) -> PathIndex:
    radius_floor = int(math.ceil(radius) - 1)
    by_length: dict[int, list[list[tuple[int, int]]]] = {}
    for direction in _forward_directions(radius, radius_floor):
        points = _path_points(direction)
        by_length.setdefault(len(points), []).append(points)
    groups = []
    paths = []
    start = 0
    for length in sorted(by_length):
        offsets = np.asarray(by_length[length], dtype=np.int64).reshape(-1, length, 2)
        offsets.setflags(write=False)
        groups.append(PathGroup(length=length, start=start, offsets=offsets))
        for path in offsets:
            paths.append(path)
        start += offsets.shape[0]
    directions = np.ascontiguousarray(np.stack([path[0] for path in paths]).astype(np.int64))
    directions.setflags(write=False)
    return PathIndex(
        radius=radius, radius_floor=radius_floor, directions=directions, paths=tuple(paths), groups=tuple(groups)
    )


def path_index(radius: float) -> PathIndex:
    """The :class:`PathIndex` of ``radius`` (> 1; cached per radius, arrays read-only).

    >>> path_index(5).num_directions, path_index(10).num_directions
    (34, 152)
    """
    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating)):
        raise InputError(f"path index: radius must be a number, got {radius!r}")
    radius = float(radius)
    if not math.isfinite(radius) or radius <= 1.0:
        raise InputError(f"path index: radius must be a finite number > 1, got {radius}")
    return _build(radius)


def shifted_windows(
    values: torch.Tensor, offsets: np.ndarray, *, top: int, left: int, height: int, width: int
) -> torch.Tensor:
    """The ``height × width`` windows of ``values`` whose corners are ``(top + dy, left + dx)``, one per offset.

    ``values``: ``(..., H, W)``; ``offsets``: ``(n, 2)`` integer ``(dy, dx)``, each window inside the map.
    Returns ``(..., n, height, width)`` with ``[..., k, y, x] = values[..., top + dy_k + y, left + dx_k + x]``:
    the same values as stacking the ``n`` slices, gathered by one ``index_select`` on the flattened map,
    whose backward is one ``index_add`` instead of one map-sized gradient per slice.
    """
    map_height, map_width = values.shape[-2:]
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    tops, lefts = top + offsets[:, 0], left + offsets[:, 1]
    if len(offsets) and (
        tops.min() < 0 or lefts.min() < 0 or tops.max() + height > map_height or lefts.max() + width > map_width
    ):
        raise InputError(
            f"shifted_windows: {height}x{width} windows at offsets from ({top}, {left}) leave the "
            f"{map_height}x{map_width} map"
        )
    device = values.device
    corners = torch.from_numpy(tops * map_width + lefts).to(device)
    window = (torch.arange(height, device=device) * map_width)[:, None] + torch.arange(width, device=device)
    flat_index = (corners[:, None, None] + window).reshape(-1)
    flat = values.reshape(*values.shape[:-2], map_height * map_width)
    gathered = flat.index_select(-1, flat_index)
    return gathered.view(*values.shape[:-2], len(offsets), height, width)
