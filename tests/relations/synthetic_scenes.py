"""Small synthetic scenes (CAMs, boundary, displacement) for the pseudo-label tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Scene:
    cams: np.ndarray  # (K, h, w) float32
    class_ids: np.ndarray  # (K,)
    boundary: np.ndarray  # (h, w) float32
    displacement: np.ndarray  # (2, h, w) float32
    image_size: tuple[int, int]


def touching_discs(height: int = 24, width: int = 40, radius: float = 9.0, class_id: int = 5) -> Scene:
    """Two same-class discs centred (12, 11) and (12, 28) that touch, with a boundary line between
    them and around them. The displacement points every disc pixel at its own disc's centre
    (background: 0)."""
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    centres = [(12.0, 11.0), (12.0, 28.0)]
    distance = [np.hypot(grid_y - cy, grid_x - cx) for cy, cx in centres]
    inside = [d <= radius for d in distance]
    left = inside[0] & (grid_x < 20)
    right = inside[1] & (grid_x > 20)
    cam = np.zeros((1, height, width), dtype=np.float32)
    cam[0][left] = 1.0 - 0.5 * distance[0][left] / radius
    cam[0][right] = 1.0 - 0.5 * distance[1][right] / radius
    boundary = np.full((height, width), 0.02, dtype=np.float32)
    union = inside[0] | inside[1]
    rim = ~union & ((distance[0] < radius + 1.5) | (distance[1] < radius + 1.5))
    boundary[rim] = 1.0  # around the discs
    boundary[:, 20] = np.where(union[:, 20] | rim[:, 20], 1.0, 0.02)  # the line between the discs
    displacement = np.zeros((2, height, width), dtype=np.float32)
    for mask, (cy, cx) in ((left, centres[0]), (right, centres[1])):
        displacement[0][mask] = (cy - grid_y)[mask]
        displacement[1][mask] = (cx - grid_x)[mask]
    return Scene(cam, np.array([class_id]), boundary, displacement, (height * 4 - 2, width * 4 - 3))


def random_scene(generator: np.random.Generator, height: int, width: int, classes: int) -> Scene:
    """Blob CAMs, a blurred random boundary and a displacement field towards a few centres."""
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    cams = np.zeros((classes, height, width), dtype=np.float32)
    displacement = np.zeros((2, height, width), dtype=np.float32)
    boundary = np.zeros((height, width), dtype=np.float32)
    for channel in range(classes):
        for _ in range(2):
            cy, cx = generator.uniform(0, height), generator.uniform(0, width)
            size = generator.uniform(2.5, 5)
            distance = np.hypot(grid_y - cy, grid_x - cx)
            cams[channel] = np.maximum(cams[channel], np.clip(1.0 - distance / (2 * size), 0, None))
            near = distance < 2 * size
            displacement[0][near] = (cy - grid_y)[near]
            displacement[1][near] = (cx - grid_x)[near]
            boundary = np.maximum(boundary, np.exp(-((distance - 2 * size) ** 2) / 2))
    cams /= cams.reshape(classes, -1).max(axis=1)[:, None, None] + 1e-5
    displacement += generator.normal(scale=0.3, size=displacement.shape).astype(np.float32)
    boundary = np.clip(boundary + generator.uniform(0, 0.1, size=boundary.shape), 0, 1).astype(np.float32)
    class_ids = np.sort(generator.choice(20, size=classes, replace=False))
    image_size = (height * 4 - int(generator.integers(0, 4)), width * 4 - int(generator.integers(0, 4)))
    return Scene(cams, class_ids, boundary, displacement.astype(np.float32), image_size)
