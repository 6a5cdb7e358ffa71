"""Model checkpoints: state dict plus the resolved config, code version and training record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from irn_core.atomic import atomic_path
from irn_core.errors import StoreError
from irn_core.version import code_version


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model_state: dict[str, torch.Tensor],
    kind: str,
    config: dict[str, Any],
    record: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically. ``kind`` is ``"cam"`` or ``"irnet"``."""
    from irn_core.records import machine_info, package_versions

    payload = {
        "kind": kind,
        "model": {name: tensor.detach().cpu() for name, tensor in model_state.items()},
        "config": config,
        "code_version": code_version(),
        "record": record or {},
        "machine": machine_info(),
        "packages": package_versions(),
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_checkpoint(path: str | os.PathLike[str], *, kind: str) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, checking its kind."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: checkpoint is missing")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupted files
        raise StoreError(f"{path}: unreadable checkpoint (truncated or corrupted?): {error}") from error
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise StoreError(f"{path}: expected a {kind!r} checkpoint, found {found!r}")
    return payload
