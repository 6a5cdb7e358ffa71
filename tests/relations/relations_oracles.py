"""Straightforward restatements of the reference computations, for tests only.

Written from the spec (reference-irnet.md §6.4–6.7, §7, §8), deliberately naive (loops, flat
indices, the reference's NumPy/torch post-processing) and independent of the library's code paths
except for :func:`irn_core.random_walk.propagate_dense`, itself the literal reference walk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from irn_core.relations.path_index import PathIndex, path_index


def path_points_brute_force(dy: int, dx: int) -> set[tuple[int, int]]:
    """Every integer point of the box whose distance to the segment (0,0)-(dy,dx) is < 1."""
    points = set()
    for y in range(min(0, dy), max(0, dy) + 1):
        for x in range(min(0, dx), max(0, dx) + 1):
            # distance from (y, x) to the infinite line through 0 and (dy, dx)
            if (dy * x - dx * y) ** 2 < dy * dy + dx * dx:
                points.add((y, x))
    return points


def affinity_loops(boundary: np.ndarray, directions: np.ndarray, paths: list[np.ndarray]) -> np.ndarray:
    """(B, H, W) boundary → (B, D, H, W) affinity by explicit loops; boundary 1 off the map."""
    batch, height, width = boundary.shape
    result = np.zeros((batch, len(directions), height, width), dtype=np.float64)

    def value(b: int, y: int, x: int) -> float:
        return float(boundary[b, y, x]) if 0 <= y < height and 0 <= x < width else 1.0

    for b in range(batch):
        for d, path in enumerate(paths):
            for y in range(height):
                for x in range(width):
                    result[b, d, y, x] = 1.0 - max(value(b, y + py, x + px) for py, px in path)
    return result


def pair_labels_flat(label_map: np.ndarray, source_indices: np.ndarray, destination_indices: np.ndarray):
    """The reference's GetAffinityLabelFromIndices for one (h, w) map: (D, N_src) float32 masks."""
    flat = label_map.reshape(-1)
    source = flat[source_indices][None, :]
    destination = flat[destination_indices]
    valid = (source < 21) & (destination < 21)
    equal = source == destination
    positive = equal & valid
    bg_pos = (positive & (source == 0)).astype(np.float32)
    fg_pos = (positive & (source > 0)).astype(np.float32)
    neg = (~equal & valid).astype(np.float32)
    return bg_pos, fg_pos, neg


def label_4_connected(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components by flood fill, numbered 1.. in raster order of their first pixel
    (what skimage.measure.label(connectivity=1) gives the reference)."""
    height, width = mask.shape
    labels = np.zeros((height, width), dtype=np.int64)
    count = 0
    for y in range(height):
        for x in range(width):
            if mask[y, x] and labels[y, x] == 0:
                count += 1
                labels[y, x] = count
                stack = [(y, x)]
                while stack:
                    cy, cx = stack.pop()
                    for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                        if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and labels[ny, nx] == 0:
                            labels[ny, nx] = count
                            stack.append((ny, nx))
    return labels, count


def refine_centroids_reference(displacement: np.ndarray, iterations: int = 300) -> np.ndarray:
    """The reference's find_centroids_with_refinement, restated with NumPy's own promotion rules."""
    height, width = displacement.shape[1:3]
    centroid_y = np.repeat(np.arange(height)[:, None], width, axis=1).astype(np.float32)
    centroid_x = np.repeat(np.arange(width)[None, :], height, axis=0).astype(np.float32)
    for _ in range(iterations):
        uy = np.ceil(centroid_y).astype(np.int32)
        dy = np.floor(centroid_y).astype(np.int32)
        y_c = centroid_y - dy
        ux = np.ceil(centroid_x).astype(np.int32)
        dx = np.floor(centroid_x).astype(np.int32)
        x_c = centroid_x - dx
        centroid_y += (
            displacement[0][uy, ux] * y_c * x_c
            + displacement[0][dy, ux] * (1 - y_c) * x_c
            + displacement[0][uy, dx] * y_c * (1 - x_c)
            + displacement[0][dy, dx] * (1 - y_c) * (1 - x_c)
        )
        centroid_x += (
            displacement[1][uy, ux] * y_c * x_c
            + displacement[1][dy, ux] * (1 - y_c) * x_c
            + displacement[1][uy, dx] * y_c * (1 - x_c)
            + displacement[1][dy, dx] * (1 - y_c) * (1 - x_c)
        )
        centroid_y = np.clip(centroid_y, 0, height - 1)
        centroid_x = np.clip(centroid_x, 0, width - 1)
    return np.stack([np.round(centroid_y).astype(np.int32), np.round(centroid_x).astype(np.int32)])


def clusters_reference(centroids: np.ndarray, displacement: np.ndarray, threshold: float = 2.5) -> np.ndarray:
    """The reference's cluster_centroids: (n, h, w) bool."""
    strength = np.sqrt(displacement[1] ** 2 + displacement[0] ** 2)
    height, width = strength.shape
    components, _ = label_4_connected(strength < threshold)
    clusters = components.reshape(-1)[centroids[0] * width + centroids[1]].reshape(height, width) + 1
    uniques = np.unique(clusters)
    lookup = np.zeros(uniques.max() + 1, dtype=np.int64)
    lookup[uniques] = np.arange(uniques.size)
    compact = lookup[clusters]
    return np.stack([compact == value for value in range(compact.max() + 1)])


def upsample_normalise_reference(walk: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) walk → the reference's rw_up: ×4 bilinear, crop, / global max."""
    rw = walk.to(torch.float32).unsqueeze(1)  # (C, 1, h, w) as the reference's propagate_to_edge returns
    rw_up = F.interpolate(rw, scale_factor=4, mode="bilinear", align_corners=False)
    rw_up = rw_up[:, 0, : image_size[0], : image_size[1]]
    return rw_up / torch.max(rw_up)


def semantic_reference(walk: torch.Tensor, keys: np.ndarray, image_size: tuple[int, int], bg: float = 0.25):
    rw_up = upsample_normalise_reference(walk, image_size)
    rw_up_bg = F.pad(rw_up, (0, 0, 0, 0, 1, 0), value=bg)
    prediction = torch.argmax(rw_up_bg, dim=0).numpy()
    return np.pad(keys + 1, (1, 0), mode="constant")[prediction]


def instances_reference(
    walk: torch.Tensor, channel_classes: np.ndarray, image_size: tuple[int, int], bg: float = 0.25
) -> list[tuple[int, float, np.ndarray]]:
    """The reference's instance post-processing + detect_instance: list of (class, score, mask)."""
    rw_up = upsample_normalise_reference(walk, image_size)
    rw_up_bg = F.pad(rw_up, (0, 0, 0, 0, 1, 0), value=bg)
    shape = torch.argmax(rw_up_bg, dim=0).numpy()
    return detect_instance_reference(shape, rw_up.numpy(), channel_classes, image_size)


def detect_instance_reference(
    shape: np.ndarray, scores: np.ndarray, channel_classes: np.ndarray, image_size: tuple[int, int]
) -> list[tuple[int, float, np.ndarray]]:
    """The reference's detect_instance: ``shape`` (H, W) argmax (0 background, j+1 channel j), ``scores``
    (C, H, W) normalised walk scores → every 4-connected component of every channel, scored by the channel's
    max inside it, 0 under 1% of the image: list of (class, score, mask)."""
    min_size = image_size[0] * image_size[1] * 0.01
    detections = []
    for channel in range(scores.shape[0]):
        mask = shape == channel + 1
        if mask.sum() < 1:
            continue
        components, count = label_4_connected(mask)
        for component in range(1, count + 1):
            segment = components == component
            score = 0.0 if segment.sum() < min_size else float(np.max(scores[channel] * segment))
            detections.append((int(channel_classes[channel]), score, segment))
    return detections


def assert_instances_match(result, reference: list[tuple[int, float, np.ndarray]]) -> None:
    """``result`` (InstanceLabels) equals a restated ``[(class, score, mask), ...]`` in order: same classes,
    scores within 1e-5, masks on at least 99.9% of the pixels (ties within float rounding may flip)."""
    assert len(result) == len(reference) > 0
    for mask, class_id, score, (expected_class, expected_score, expected_mask) in zip(
        result.masks, result.class_ids, result.scores, reference
    ):
        assert class_id == expected_class
        assert abs(float(score) - expected_score) <= 1e-5
        assert np.mean(mask == expected_mask) >= 0.999


def sliced_destinations(values: torch.Tensor, radius: float) -> torch.Tensor:
    """The former destination_stack: one slice per direction, stacked."""
    index = path_index(radius)
    rows, cols = index.source_window(*values.shape[-2:])
    height, width = rows.stop, cols.stop - cols.start
    return torch.stack(
        [values[..., dy : dy + height, cols.start + dx : cols.start + dx + width] for dy, dx in index.directions.tolist()],
        dim=-3,
    )


def sliced_path_max(boundary: torch.Tensor, radius: float) -> torch.Tensor:
    """The former autograd path maximum over the source window: one slice per path point, stacked per group."""
    index = path_index(radius)
    rows, cols = index.source_window(*boundary.shape[-2:])
    height, width = rows.stop - rows.start, cols.stop - cols.start
    maxima = []
    for group in index.groups:
        points = [
            boundary[:, rows.start + dy : rows.start + dy + height, cols.start + dx : cols.start + dx + width]
            for path in group.offsets.tolist()
            for dy, dx in path
        ]
        gathered = torch.stack(points, dim=1).view(boundary.shape[0], group.count, group.length, height, width)
        maxima.append(gathered.max(dim=2).values)
    return torch.cat(maxima, dim=1)


def stacked_displacement_sums(
    displacement: torch.Tensor,
    index: PathIndex,
    fg_pos: torch.Tensor,
    bg_pos: torch.Tensor,
    destinations: Callable[[torch.Tensor, PathIndex], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The former displacement sums of IRNet's loss, ``(Σ fg_pos·|D(s) − D(t) − δ|, Σ bg_pos·|D(s) − D(t)|)``,
    on the ``(B, 2, D, hs, ws)`` stack of every direction's destinations that ``destinations(displacement,
    index)`` builds (``destination_stack``, or the older slices of :func:`sliced_destinations`)."""
    rows, cols = index.source_window(displacement.shape[2], displacement.shape[3])
    pair = displacement[:, :, rows, cols].unsqueeze(2) - destinations(displacement, index)
    target = torch.tensor(index.directions.T.copy(), dtype=displacement.dtype).view(1, 2, -1, 1, 1)
    fg_sum = (torch.abs(pair - target) * fg_pos.unsqueeze(1)).sum()
    bg_sum = (torch.abs(pair) * bg_pos.unsqueeze(1)).sum()
    return fg_sum, bg_sum


def autograd_grouped_path_max(boundary: torch.Tensor, index: PathIndex) -> torch.Tensor:
    """The path maximum over the source window as the library computed it before its hand-written gradient:
    the distinct points' windows gathered once, each length-group picked from them and reduced by ``max(dim)``
    under autograd (whose backward fills the group's whole gathered tensor with zeros and scatters into it)."""
    from irn_core.relations.path_index import shifted_windows

    rows, cols = index.source_window(*boundary.shape[-2:])
    height, width = rows.stop - rows.start, cols.stop - cols.start
    points = np.concatenate([group.offsets.reshape(-1, 2) for group in index.groups])
    distinct, inverse = np.unique(points, axis=0, return_inverse=True)
    inverse = torch.from_numpy(inverse.reshape(-1))
    windows = shifted_windows(boundary, distinct, top=rows.start, left=cols.start, height=height, width=width)
    windows = windows.transpose(0, 1).contiguous()
    maxima, start = [], 0
    for group in index.groups:
        selection = inverse[start : start + group.count * group.length]
        start += group.count * group.length
        gathered = windows.index_select(0, selection).view(group.count, group.length, *windows.shape[1:])
        maxima.append(torch.max(gathered, dim=1).values)
    return torch.cat(maxima, dim=0).transpose(0, 1).contiguous()
