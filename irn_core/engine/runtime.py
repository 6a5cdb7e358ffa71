"""Device choice, thread count and seeding."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import sys
from typing import Literal

import numpy as np
import torch
from torch import nn

from irn_core.errors import ConfigError

logger = logging.getLogger(__name__)

Precision = Literal["float32", "bfloat16", "float16"]
"""``compute.precision``: the arithmetic of the networks' forward passes."""

AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}


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


MALLOPT_TRIM_THRESHOLD = -1
MALLOPT_MMAP_MAX = -4
"""glibc's ``mallopt`` parameters (``M_TRIM_THRESHOLD``, ``M_MMAP_MAX`` of ``<malloc.h>``)."""


def retain_freed_memory() -> bool:
    """Have glibc's malloc keep the memory PyTorch frees, for the rest of this process.

    By default glibc maps every block above its (adaptive, at most 32 MB) threshold with ``mmap`` and unmaps it
    on ``free``, and gives the top of its heap back past a threshold: a CPU training step that makes and
    drops many tensors of tens of MB then page-faults (and zeroes) every one of them afresh. With
    ``M_MMAP_MAX = 0`` every block comes from the heap and with the largest ``M_TRIM_THRESHOLD`` freed memory
    stays there for the next tensor. Values are unchanged; the process's memory stays at its peak.

    Returns:
        Whether both settings took (False off Linux, or with a C library without glibc's ``mallopt``).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(MALLOPT_MMAP_MAX, 0) == 1 and mallopt(MALLOPT_TRIM_THRESHOLD, 2**31 - 1) == 1


def configure_allocator(policy: str) -> None:
    """``compute.cpu_allocator``: ``retain`` calls :func:`retain_freed_memory`; ``system`` leaves malloc alone."""
    if policy == "system":
        return
    if policy != "retain":
        raise ConfigError(f"compute.cpu_allocator must be 'retain' or 'system', got {policy!r}")
    if not retain_freed_memory():
        logger.info("compute.cpu_allocator: retain has no effect here (no glibc mallopt); the system allocator's defaults stay")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global generator and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample's augmentation: a function of (seed, epoch, index) only,
    so results do not depend on worker count, process count or iteration order."""
    return np.random.default_rng([seed, epoch, index])


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: None for float32 (no autocast).

    float16 needs CUDA: CPU autocast computes in bfloat16 only, and silently changing the requested
    precision would make a run's figures depend on the machine, so float16 on CPU is a
    :class:`~irn_core.errors.ConfigError` (``compute.precision: bfloat16`` is the CPU choice).
    """
    if precision == "float32":
        return None
    if precision not in AUTOCAST_DTYPES:
        raise ConfigError(f"compute.precision {precision!r} is not one of float32, bfloat16, float16")
    if precision == "float16" and device.type != "cuda":
        raise ConfigError(
            f"compute.precision 'float16' needs a CUDA device, but this job runs on {device}; "
            "use compute.precision 'bfloat16' on CPU"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"compute.precision {precision!r}: autocast is supported on cpu and cuda, not {device.type}")
    return AUTOCAST_DTYPES[precision]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The mixed-precision context of ``compute.precision`` on ``device``.

    ``float32``: a ``nullcontext`` (today's arithmetic, bit for bit); ``bfloat16`` (CPU or CUDA) and
    ``float16`` (CUDA only, see :func:`autocast_dtype`): ``torch.autocast`` in that dtype, so that
    matrix products and convolutions run in half precision while reductions and losses that autocast
    lists stay float32. Outputs of a network under it may be half precision: cast them with
    ``.float()`` before a loss or before storing them.
    """
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def gradient_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler of a training run: enabled only for float16 on CUDA (float16 gradients
    underflow without it; bfloat16 has float32's exponent range and needs none). A disabled scaler's
    ``scale(loss)`` is ``loss`` and its ``step(optimizer)`` is ``optimizer.step()``, so float32 and
    bfloat16 training are unchanged by it."""
    autocast_dtype(precision, device)  # validates precision against the device
    enabled = precision == "float16" and device.type == "cuda"
    return torch.amp.GradScaler(device.type, enabled=enabled)


def to_memory_format(module: nn.Module, channels_last: bool) -> nn.Module:
    """``module`` in channels-last memory format when ``channels_last`` (``compute.channels_last``),
    else unchanged; in place, returns it."""
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return module


def tensor_to_device(tensor: torch.Tensor, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """``tensor`` on ``device`` (a non-blocking copy: asynchronous from pinned memory on CUDA); a
    4-D batch of images ``(N, C, H, W)`` in channels-last memory format when ``channels_last``."""
    tensor = tensor.to(device, non_blocking=True)
    if channels_last and tensor.dim() == 4:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor
