"""Device choice, thread count and seeding."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

logger = logging.getLogger(__name__)


def resolve_device(requested: str = "auto", *, local_rank: int | None = None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    Under torchrun (``local_rank`` given) each process takes its own GPU.
    """
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for device 'cuda' but torch sees no CUDA device")
    if torch.cuda.is_available():
        index = local_rank if local_rank is not None else 0
        return torch.device("cuda", index)
    return torch.device("cpu")


def configure_runtime(*, threads: int, deterministic: bool) -> None:
    """Set the CPU thread count and (optionally) deterministic algorithms."""
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global generator and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample's augmentation: a function of (seed, epoch, index) only,
    so results do not depend on worker count, process count or iteration order."""
    return np.random.default_rng([seed, epoch, index])
