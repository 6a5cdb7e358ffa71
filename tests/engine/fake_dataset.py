"""A tiny in-memory dataset implementing the SegmentationDataset protocol (for training tests)."""

from __future__ import annotations

import numpy as np


class TinyDataset:
    """``count`` random RGB images of 40x48 with 3 classes; class k draws a bright square in channel k."""

    def __init__(self, count: int = 8, seed: int = 0) -> None:
        self.class_names = ["red", "green", "blue"]
        rng = np.random.default_rng(seed)
        self._ids = [f"img{index:03d}" for index in range(count)]
        self._images = {}
        self._labels = {}
        self._masks = {}
        for index, image_id in enumerate(self._ids):
            image = rng.integers(0, 80, (40, 48, 3)).astype(np.uint8)
            mask = np.zeros((40, 48), np.uint8)
            classes = sorted({index % 3, (index * 7 + 1) % 3})
            for class_id in classes:
                y, x = rng.integers(0, 24), rng.integers(0, 30)
                image[y : y + 14, x : x + 16, class_id] = 250
                mask[y : y + 14, x : x + 16] = class_id + 1
            self._images[image_id] = image
            self._labels[image_id] = np.asarray(classes, np.int64)
            self._masks[image_id] = mask

    def ids(self, split: str) -> list[str]:
        return list(self._ids)

    def image(self, image_id: str) -> np.ndarray:
        return self._images[image_id].copy()

    def image_size(self, image_id: str) -> tuple[int, int]:
        return self._images[image_id].shape[:2]

    def class_labels(self, image_id: str) -> np.ndarray:
        return self._labels[image_id].copy()

    def semantic_mask(self, image_id: str) -> np.ndarray:
        return self._masks[image_id].copy()

    def ir_label(self, image_id: str) -> np.ndarray:
        """A confident-region-like label map: the mask with a ring of 255 around objects."""
        mask = self._masks[image_id].copy()
        edge = np.zeros_like(mask, dtype=bool)
        edge[1:] |= mask[1:] != mask[:-1]
        edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
        mask[edge] = 255
        return mask

    def instance_masks(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self._masks[image_id]
        classes = self._labels[image_id]
        return np.stack([mask == c + 1 for c in classes]), classes.copy()
