"""The demo's CPU speed-ups, each timed against the code it replaced in the same process.

* ``irnet_step``: one IRNet training step at the demo's settings (batch 16, crop 256, radius 10,
  EfficientNet-Lite0 with random weights): forward, the affinity and displacement losses, backward.
  Baseline: the former path-point and destination stacks (one slice per point, stacked; restated in
  ``tests/relations/relations_oracles.py``), patched into the loss for the baseline's repetitions.
* ``deeplab_step``: one DeepLab v2 training step at the demo's settings (batch 8, crop 224, output stride
  16, stages 1-3 frozen, 1 thread as the demo runs it). Baseline: Lite0's "SAME" convolutions padding a
  copy of their input with ``F.pad`` also where the padding is symmetric (the convolution's own padding
  now); prints whether logits and gradients are bit-identical.
* ``step_import``: starting a step that needs no ResNet or Mask R-CNN (``import irn_core.steps.cam``) in
  a fresh interpreter. Baseline: the same with ``import torchvision`` first, as the backbones module did.

Repetitions alternate baseline and new so that the load of a shared machine falls on both alike; each
line prints the medians and their ratio (absolute times are noise on a shared machine). Run::

    python benchmarks/demo_speed.py                # 2 threads, 5 repetitions
    python benchmarks/demo_speed.py --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "relations"))  # the former stacks, kept as test oracles

from relations_oracles import sliced_destinations, sliced_path_max  # noqa: E402

from irn_core.deeplab.train import DeepLabTrainSettings, build_deeplab  # noqa: E402
from irn_core.engine.distributed import DistributedContext  # noqa: E402
from irn_core.irnet.train import _loss_step  # noqa: E402
from irn_core.models.backbones import SamePaddingConv2d, build_backbone  # noqa: E402
from irn_core.models.irnet import IRNet  # noqa: E402
from irn_core.relations import losses  # noqa: E402
from irn_core.relations.path_index import PathIndex  # noqa: E402


@contextlib.contextmanager
def former_stacks() -> Iterator[None]:
    """Run the IRNet loss with the slice stacks it used before :func:`shifted_windows`."""

    def affinity(boundary: torch.Tensor, index: PathIndex, *, region: str) -> torch.Tensor:
        assert region == "source_window"
        return 1.0 - sliced_path_max(boundary, index.radius)

    def destinations(values: torch.Tensor, index: PathIndex) -> torch.Tensor:
        return sliced_destinations(values, index.radius)

    saved = losses.boundary_to_affinity, losses.destination_stack
    losses.boundary_to_affinity, losses.destination_stack = affinity, destinations
    try:
        yield
    finally:
        losses.boundary_to_affinity, losses.destination_stack = saved


def _padded_copy_forward(self: SamePaddingConv2d, x: torch.Tensor) -> torch.Tensor:
    """SamePaddingConv2d.forward before: always F.pad, then an unpadded convolution."""
    padding = []
    for axis in (3, 2):
        size, stride = x.shape[axis], self.stride[axis - 2]
        kernel = (self.kernel_size[axis - 2] - 1) * self.dilation[axis - 2] + 1
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        padding.extend((total // 2, total - total // 2))
    if any(padding):
        x = F.pad(x, padding)
    return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


@contextlib.contextmanager
def padded_copies() -> Iterator[None]:
    saved = SamePaddingConv2d.forward
    SamePaddingConv2d.forward = _padded_copy_forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        SamePaddingConv2d.forward = saved  # type: ignore[method-assign]


def deeplab_step(batch_size: int = 8, crop_size: int = 224) -> Callable[[], tuple[float, list[torch.Tensor]]]:
    """A timed DeepLab training step (forward, summed logits, backward); returns (seconds, [logits, grads])."""
    torch.manual_seed(0)
    settings = DeepLabTrainSettings(backbone="efficientnet_lite0", weights="none", output_stride=16,
                                    frozen_stages=3, input_scales=())
    model = build_deeplab(settings, 5, pretrained=False).train()
    images = torch.randn(batch_size, 3, crop_size, crop_size, generator=torch.Generator().manual_seed(0))

    def run() -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        logits = model(images)
        logits.square().mean().backward()
        seconds = time.perf_counter() - started
        return seconds, [logits.detach()] + [p.grad for p in model.parameters() if p.grad is not None]

    return run


def irnet_step(batch_size: int = 16, crop_size: int = 256, radius: float = 10) -> Callable[[], float]:
    """A timed IRNet training step (forward, losses, backward) on fixed random inputs."""
    torch.manual_seed(0)
    model = IRNet(build_backbone("efficientnet_lite0", weights=None, frozen_batchnorm=True)).train()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, crop_size, crop_size, generator=generator)
    labels = torch.randint(0, 3, (batch_size, crop_size // 4, crop_size // 4), generator=generator).to(torch.uint8)
    labels[:, : crop_size // 16] = 255
    loss_step = _loss_step(radius, DistributedContext(), 0.1)

    def run() -> float:
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        loss_step(model, {"image": images, "label": labels})["total"].backward()
        return time.perf_counter() - started

    return run


def step_import(preload_torchvision: bool) -> Callable[[], float]:
    """Seconds to import the CAM step module in a fresh interpreter (optionally torchvision first)."""
    code = ("import torchvision; " if preload_torchvision else "") + "import irn_core.steps.cam"

    def run() -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        return time.perf_counter() - started

    return run


def compare(name: str, baseline: Callable[[], float], new: Callable[[], float], repeats: int) -> None:
    """Alternate the two, print the medians and baseline / new."""
    baseline_times, new_times = [], []
    for _ in range(repeats):
        baseline_times.append(baseline())
        new_times.append(new())
    old, fresh = statistics.median(baseline_times), statistics.median(new_times)
    print(f"{name:12s} baseline {old:7.3f} s  new {fresh:7.3f} s  ratio {old / fresh:5.2f}x  ({repeats} repeats)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the demo's train_irnet: 2)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    step = irnet_step()
    step()  # warm-up of both forms
    with former_stacks():
        step()

    def baseline_step() -> float:
        with former_stacks():
            return step()

    compare("irnet_step", baseline_step, step, arguments.repeats)
    deeplab = deeplab_step()
    _, new_outputs = deeplab()
    with padded_copies():
        _, old_outputs = deeplab()
    identical = all(torch.equal(new, old) for new, old in zip(new_outputs, old_outputs, strict=True))
    print(f"deeplab_step logits and gradients bit-identical to the padded copies: {identical}")

    def baseline_deeplab() -> float:
        with padded_copies():
            return deeplab()[0]

    torch.set_num_threads(1)
    compare("deeplab_step", baseline_deeplab, lambda: deeplab()[0], arguments.repeats)
    torch.set_num_threads(arguments.threads)
    compare("step_import", step_import(True), step_import(False), arguments.repeats)


if __name__ == "__main__":
    main()
