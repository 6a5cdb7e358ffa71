"""Data-parallel training (torchrun, gloo on CPU) gives the same update as one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(kind: str, processes: int, output: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(processes),
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), kind, str(output),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)


def _finish(launch: subprocess.Popen[str], output: Path) -> dict[str, torch.Tensor]:
    log, _ = launch.communicate(timeout=300)
    assert launch.returncode == 0, log[-6000:]
    return torch.load(output, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cam", "irnet", "deeplab", "maskrcnn"])
def test_two_processes_give_the_one_process_update(tmp_path: Path, kind: str) -> None:
    # both launches at once (one thread per process): most of each is starting Python
    launches = {processes: _start(kind, processes, tmp_path / f"{processes}.pt") for processes in (1, 2)}
    try:
        single = _finish(launches[1], tmp_path / "1.pt")
        double = _finish(launches[2], tmp_path / "2.pt")
    finally:
        for launch in launches.values():
            if launch.poll() is None:
                launch.kill()
    changed = 0
    assert len(single["recorded_losses"]) > 0  # the logged global-batch losses are compared below too
    for name, value in single.items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(double[name], value, rtol=1e-4, atol=1e-5, msg=name)
    # the update must be real: compare against an untrained model's classifier / heads
    from irn_core.models.backbones import build_backbone

    torch.manual_seed({"cam": 3, "irnet": 0, "deeplab": 7, "maskrcnn": 0}[kind])
    if kind == "deeplab":
        from irn_core.models.deeplab import DeepLabV2

        fresh = DeepLabV2(build_backbone("resnet18", weights="none", output_stride=8), 4).state_dict()
    elif kind == "maskrcnn":
        sys.path.insert(0, str(WORKER.parent))
        from ddp_worker import tiny_maskrcnn

        fresh = tiny_maskrcnn().state_dict()
    elif kind == "cam":
        from irn_core.models.cam import CAMNet

        fresh = CAMNet(build_backbone("resnet18", weights="none"), 3, frozen_stages=0).state_dict()
    else:
        from irn_core.models.irnet import IRNet

        fresh = IRNet(build_backbone("resnet18", weights="none")).state_dict()
    for name, value in fresh.items():
        if value.dtype.is_floating_point and not torch.equal(value, single[name]):
            changed += 1
    assert changed > 5
