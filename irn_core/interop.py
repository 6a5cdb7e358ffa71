"""The reference code's CAM files: ``<image id>.npy`` holding a pickled dict.

``keys``: (K,) 0-based class ids (a torch LongTensor in the reference); ``cam``: (K, ceil(H/4),
ceil(W/4)) stride-4 CAMs (a torch FloatTensor); ``high_res``: (K, H, W) float32 numpy array. Each
channel is divided by its own maximum. Reading needs ``allow_pickle`` (and torch to unpickle the
tensors), so read only files you trust — your own CAMs or those of a method you ran yourself.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from irn_core.atomic import atomic_path
from irn_core.errors import DatasetError


def _as_numpy(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def read_reference_cam(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a reference CAM file -> (class_ids (K,) int64, cam_s4 (K, h, w) float32, high_res (K, H, W) float32)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: CAM file is missing")
    try:
        content = np.load(path, allow_pickle=True).item()
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"{path}: not a readable reference CAM .npy dict: {error}") from error
    if not isinstance(content, dict) or not {"keys", "cam", "high_res"} <= set(content):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise DatasetError(f"{path}: expected a dict with keys 'keys', 'cam', 'high_res', found {found}")
    class_ids = _as_numpy(content["keys"]).astype(np.int64).reshape(-1)
    cam_s4 = _as_numpy(content["cam"]).astype(np.float32)
    high_res = _as_numpy(content["high_res"]).astype(np.float32)
    if cam_s4.ndim != 3 or high_res.ndim != 3 or len(cam_s4) != len(class_ids) or len(high_res) != len(class_ids):
        raise DatasetError(
            f"{path}: inconsistent shapes keys {class_ids.shape}, cam {cam_s4.shape}, high_res {high_res.shape}"
        )
    height, width = high_res.shape[1:]
    if cam_s4.shape[1:] != (math.ceil(height / 4), math.ceil(width / 4)):
        raise DatasetError(f"{path}: cam {cam_s4.shape[1:]} is not the stride-4 size of high_res {(height, width)}")
    return class_ids, cam_s4, high_res


def write_reference_cam(
    path: str | os.PathLike[str], class_ids: np.ndarray, cam_s4: np.ndarray, high_res: np.ndarray
) -> None:
    """Write a CAM file the reference code (and tools built on it) can load, atomically."""
    content = {
        "keys": torch.as_tensor(np.asarray(class_ids, dtype=np.int64)),
        "cam": torch.as_tensor(np.asarray(cam_s4, dtype=np.float32)),
        "high_res": np.asarray(high_res, dtype=np.float32),
    }
    with atomic_path(path, suffix=".npy") as temporary:
        np.save(temporary, content, allow_pickle=True)
