"""Input checks shared by the relation, random-walk and pseudo-label functions (private)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from irn_core.errors import InputError


def where(function: str, image_id: str | None) -> str:
    """Message prefix naming the function and, when known, the image id."""
    return f"{function} (image {image_id})" if image_id else function


def as_tensor(value: object, name: str, context: str, *, device: torch.device | None = None) -> torch.Tensor:
    """A torch tensor view of a numpy array or tensor (moved to ``device`` when given)."""
    if isinstance(value, np.ndarray):
        if value.dtype == np.bool_:
            value = value.astype(np.uint8)
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    elif isinstance(value, torch.Tensor):
        tensor = value
    else:
        raise InputError(f"{context}: {name} must be a numpy array or torch tensor, got {type(value).__name__}")
    if device is not None and tensor.device != device:
        tensor = tensor.to(device)
    return tensor


def as_float_tensor(value: object, name: str, context: str, *, device: torch.device | None = None) -> torch.Tensor:
    """Like :func:`as_tensor`, converting integer/bool input to float32 and checking finiteness."""
    tensor = as_tensor(value, name, context, device=device)
    if tensor.dtype == torch.bool or not (tensor.is_floating_point()):
        if tensor.is_complex():
            raise InputError(f"{context}: {name} must be real, got {tensor.dtype}")
        tensor = tensor.to(torch.float32)
    if tensor.numel() and not bool(torch.isfinite(tensor).all()):
        raise InputError(f"{context}: {name} contains NaN or inf")
    return tensor


def check_probability(tensor: torch.Tensor, name: str, context: str) -> None:
    """Raise unless every value lies in [0, 1]."""
    if tensor.numel() and (bool((tensor < 0).any()) or bool((tensor > 1).any())):
        low, high = float(tensor.min()), float(tensor.max())
        raise InputError(f"{context}: {name} must be a probability in [0, 1], got values in [{low}, {high}]")


def boundary_map(boundary: torch.Tensor, height: int, width: int, context: str) -> torch.Tensor:
    """A (h, w) or (1, h, w) boundary map as (h, w), checked against the scores' size."""
    if boundary.dim() == 3 and boundary.shape[0] == 1:
        boundary = boundary[0]
    if boundary.dim() != 2:
        raise InputError(f"{context}: boundary must be (h, w) or (1, h, w), got shape {tuple(boundary.shape)}")
    if tuple(boundary.shape) != (height, width):
        raise InputError(
            f"{context}: boundary is {tuple(boundary.shape)} but the scores are {height}x{width} (shape mismatch)"
        )
    return boundary


def class_id_array(class_ids: object, count: int, context: str) -> np.ndarray:
    """0-based class ids as int64 (K,), checked: non-empty, one per map, in 0..253."""
    if isinstance(class_ids, torch.Tensor):
        class_ids = class_ids.detach().cpu().numpy()
    array = np.asarray(class_ids)
    if array.ndim != 1:
        raise InputError(f"{context}: class_ids must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"{context}: empty class list (an image needs at least one present class)")
    if not (np.issubdtype(array.dtype, np.integer) or (array.dtype.kind == "f" and np.all(array == np.round(array)))):
        raise InputError(f"{context}: class_ids must be integers, got {array.dtype}")
    array = array.astype(np.int64)
    if array.size != count:
        raise InputError(f"{context}: {array.size} class ids for {count} CAM channels (shape mismatch)")
    if array.min() < 0 or array.max() > 253:
        raise InputError(f"{context}: class ids must be 0-based in 0..253, got {array.tolist()}")
    return array


def image_size_pair(image_size: Sequence[int], context: str) -> tuple[int, int]:
    """(H, W) as positive ints."""
    try:
        height, width = (int(value) for value in image_size)
    except (TypeError, ValueError) as error:
        raise InputError(f"{context}: image_size must be (H, W), got {image_size!r}") from error
    if height <= 0 or width <= 0:
        raise InputError(f"{context}: image_size must be positive, got {(height, width)}")
    return height, width
