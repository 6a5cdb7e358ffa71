"""The demo's CPU speed-ups, each timed against the code it replaced in the same process.

* ``irnet_step``: one IRNet training step at the demo's settings (batch 16, crop 256, radius 10,
  EfficientNet-Lite0 with random weights): forward, the affinity and displacement losses, backward.
  Baseline: the former path-point and destination stacks (one slice per point, stacked; restated in
  ``tests/relations/relations_oracles.py``), patched into the loss for the baseline's repetitions.
* ``irnet_loss``: the affinity and displacement losses alone (forward and backward) on fixed network
  outputs of the same batch: the part of the step that changed.
* ``deeplab_step``: one DeepLab v2 training step at the demo's settings (batch 8, crop 224, output stride
  16, stages 1-3 frozen, 1 thread as the demo runs it). Baseline: Lite0's "SAME" convolutions padding a
  copy of their input with ``F.pad`` also where the padding is symmetric (the convolution's own padding
  now), and the ASPP's rate-18 and rate-24 branches run as full dilated 3x3 convolutions on the 14x14
  features (their outer taps read only padding; 1x1 now). Prints whether logits and gradients are
  bit-identical with the padding change alone, and their largest difference with both.
* ``maskrcnn_step`` (2 threads) and ``make_cam`` (one 280x320 image, 4 scales + flip, 1 thread): the same
  padding comparison on a Mask R-CNN training step at the demo's sizes (4 images, 2 instances each) and on
  the multi-scale CAMs of one image.
* ``same_conv``: each stride-1 depthwise convolution of Lite0 at the Mask R-CNN sizes (4 images of
  256x320, 2 threads, no autograd) with the padding inside the convolution against ``F.pad`` first.
* ``irnet_drift`` (``--drift``): what the reordered gradient sums do to training. IRNet (batch 4, crop 128)
  trained 30 SGD steps on fixed random batches with the former stacks and with the new gather, and, for
  scale, with the former stacks on 1 thread and on 2 (another summation order of the same kind); prints
  the largest parameter difference relative to the largest parameter change of training.
* ``step_import``: starting a step that needs no ResNet or Mask R-CNN (``import irn_core.steps.cam``) in
  a fresh interpreter. Baseline: the same with ``import torchvision`` first, as the backbones module did.

Repetitions alternate baseline and new so that the load of a shared machine falls on both alike; each
line prints the medians of CPU time (the steadier measure there) and of wall time, and their ratios
(absolute times are noise on a shared machine). Run::

    python benchmarks/demo_speed.py                # 2 threads, 5 repetitions
    python benchmarks/demo_speed.py --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import math
import resource
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

from relations_oracles import sliced_destinations, sliced_path_max, stacked_displacement_sums  # noqa: E402

from irn_core.cam.infer import multiscale_cams  # noqa: E402
from irn_core.deeplab.train import DeepLabTrainSettings, build_deeplab  # noqa: E402
from irn_core.engine.distributed import DistributedContext  # noqa: E402
from irn_core.irnet.train import _loss_step  # noqa: E402
from irn_core.models.backbones import SamePaddingConv2d, build_backbone  # noqa: E402
from irn_core.models import deeplab as deeplab_model  # noqa: E402
from irn_core.models.cam import CAMNet  # noqa: E402
from irn_core.models.irnet import IRNet  # noqa: E402
from irn_core.models.maskrcnn import build_mask_rcnn  # noqa: E402
from irn_core.relations import losses  # noqa: E402
from irn_core.relations.path_index import PathIndex, path_index  # noqa: E402


@contextlib.contextmanager
def former_stacks() -> Iterator[None]:
    """Run the IRNet loss with the slice stacks it used before :func:`shifted_windows`."""

    def affinity(boundary: torch.Tensor, index: PathIndex, *, region: str) -> torch.Tensor:
        assert region == "source_window"
        return 1.0 - sliced_path_max(boundary, index.radius)

    def destinations(values: torch.Tensor, index: PathIndex) -> torch.Tensor:
        return sliced_destinations(values, index.radius)

    def displacement_sums(displacement: torch.Tensor, index: PathIndex, fg_pos: torch.Tensor,
                          bg_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return stacked_displacement_sums(displacement, index, fg_pos, bg_pos, destinations)

    saved = losses.boundary_to_affinity, losses._displacement_sums
    losses.boundary_to_affinity, losses._displacement_sums = affinity, displacement_sums
    try:
        yield
    finally:
        losses.boundary_to_affinity, losses._displacement_sums = saved


def _padded_copy_convolve(
    self: SamePaddingConv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """SamePaddingConv2d's convolution before: always F.pad, then an unpadded convolution."""
    padding = []
    for axis in (3, 2):
        size, stride = x.shape[axis], self.stride[axis - 2]
        kernel = (self.kernel_size[axis - 2] - 1) * self.dilation[axis - 2] + 1
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        padding.extend((total // 2, total - total // 2))
    if any(padding):
        x = F.pad(x, padding)
    return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


@contextlib.contextmanager
def padded_copies() -> Iterator[None]:
    saved = SamePaddingConv2d.convolve
    SamePaddingConv2d.convolve = _padded_copy_convolve  # type: ignore[method-assign]
    try:
        yield
    finally:
        SamePaddingConv2d.convolve = saved  # type: ignore[method-assign]


@contextlib.contextmanager
def full_aspp() -> Iterator[None]:
    """Every ASPP branch as its full dilated convolution, as before the padding-only taps were left out."""
    saved = deeplab_model._dilated_branch
    deeplab_model._dilated_branch = lambda branch, x: branch(x)
    try:
        yield
    finally:
        deeplab_model._dilated_branch = saved


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


def maskrcnn_step() -> Callable[[], float]:
    """A timed Mask R-CNN training step at the demo's model and image sizes (sampling seeded per step)."""
    torch.manual_seed(0)
    model = build_mask_rcnn(
        backbone="efficientnet_lite0_fpn", num_classes=4, weights="none", frozen_stages=4, fpn_channels=64,
        fpn_norm="group_norm", box_head_channels=256, mask_head_channels=64, min_size=256, max_size=320,
        rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=1000, roi_batch_size_per_image=64,
    ).train()
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 256, 320, generator=generator) for _ in range(4)]
    boxes = torch.tensor([[20.0, 30.0, 150.0, 200.0], [140.0, 60.0, 300.0, 240.0]])
    masks = torch.zeros(2, 256, 320, dtype=torch.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist(), strict=True):
        mask[y1:y2, x1:x2] = 1
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks} for _ in images]

    def run() -> float:
        torch.manual_seed(1)
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        sum(model(images, targets).values()).backward()
        return time.perf_counter() - started

    return run


def make_cam() -> Callable[[], float]:
    """Timed multi-scale + flip CAMs of one 280x320 image."""
    torch.manual_seed(0)
    model = CAMNet(build_backbone("efficientnet_lite0", weights=None, frozen_batchnorm=True), 4).eval()
    image = torch.randint(0, 256, (280, 320, 3), generator=torch.Generator().manual_seed(0)).to(torch.uint8).numpy()

    def run() -> float:
        started = time.perf_counter()
        multiscale_cams(model, image)
        return time.perf_counter() - started

    return run


LITE0_DEPTHWISE_AT_MASKRCNN_SIZES = (
    (32, 3, 128, 160), (96, 3, 128, 160), (144, 3, 64, 80), (144, 5, 64, 80), (240, 5, 32, 40),
    (480, 3, 16, 20), (672, 5, 16, 20), (1152, 5, 8, 10), (1152, 3, 8, 10),
)
"""(channels, kernel, height, width) of Lite0's stride-1 depthwise convolutions on a 256x320 image."""


def same_conv(repeats: int) -> None:
    """Print, per convolution shape, the CPU time with F.pad first and with the padding inside, and the ratio."""
    totals = [0.0, 0.0]
    for channels, kernel, height, width in LITE0_DEPTHWISE_AT_MASKRCNN_SIZES:
        x = torch.randn(4, channels, height, width)
        weight = torch.randn(channels, 1, kernel, kernel)
        pad = kernel // 2
        forms = (
            lambda: F.conv2d(F.pad(x, (pad, pad, pad, pad)), weight, None, 1, 0, 1, channels),
            lambda: F.conv2d(x, weight, None, 1, pad, 1, channels),
        )
        times: list[list[float]] = [[], []]
        with torch.no_grad():
            for _ in range(repeats + 1):  # the first round warms up
                for form, measured in zip(forms, times, strict=True):
                    started = time.process_time()
                    form()
                    measured.append(time.process_time() - started)
        padded, inside = (statistics.median(measured[1:]) for measured in times)
        totals[0] += padded
        totals[1] += inside
        print(f"same_conv     {channels:4d} ch {kernel}x{kernel} on {height}x{width}: F.pad first {padded * 1e3:6.1f} ms, "
              f"inside {inside * 1e3:6.1f} ms, ratio {padded / inside:5.2f}x")
    print(f"same_conv     summed over the shapes: ratio {totals[0] / totals[1]:5.2f}x")


def with_padded_copies(run: Callable[[], float]) -> Callable[[], float]:
    def baseline() -> float:
        with padded_copies():
            return run()

    return baseline


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


def irnet_loss(batch_size: int = 16, size: int = 64, radius: float = 10) -> Callable[[], float]:
    """Timed affinity + displacement losses, forward and backward, on fixed random network outputs."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch_size, 1, size, size, generator=generator)
    displacement = torch.randn(batch_size, 2, size, size, generator=generator)
    labels = torch.randint(0, 3, (batch_size, size, size), generator=generator).to(torch.uint8)
    index = path_index(radius)

    def run() -> float:
        boundary, field = logits.clone().requires_grad_(True), displacement.clone().requires_grad_(True)
        started = time.perf_counter()
        losses.affinity_displacement_loss(boundary, field, labels, index)["total"].backward()
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


def _trained_heads(former: bool, threads: int, steps: int = 30) -> list[torch.Tensor]:
    """IRNet's parameters after ``steps`` SGD steps (lr 0.01, momentum 0.9) on fixed random batches."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = IRNet(build_backbone("efficientnet_lite0", weights=None, frozen_batchnorm=True)).train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01, momentum=0.9)
    loss_step = _loss_step(10, DistributedContext(), 0.1)
    generator = torch.Generator().manual_seed(1)
    start = [parameter.detach().clone() for parameter in trainable]
    for _ in range(steps):
        images = torch.randn(4, 3, 128, 128, generator=generator)
        labels = torch.randint(0, 3, (4, 32, 32), generator=generator).to(torch.uint8)
        with former_stacks() if former else contextlib.nullcontext():
            loss = loss_step(model, {"image": images, "label": labels})["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [parameter.detach() - initial for parameter, initial in zip(trainable, start, strict=True)]


def drift(threads: int) -> None:
    """Print how far the new gather and a thread-count change move 30 training steps' parameters."""
    baseline = _trained_heads(True, threads)
    scale = max(float(change.abs().max()) for change in baseline)

    def distance(other: list[torch.Tensor]) -> float:
        return max(float((a - b).abs().max()) for a, b in zip(baseline, other, strict=True)) / scale

    print(f"irnet_drift  new gather vs former stacks ({threads} threads): {distance(_trained_heads(False, threads)):.2e}"
          f" of the largest change; former stacks on {3 - threads} vs {threads} threads: "
          f"{distance(_trained_heads(True, 3 - threads)):.2e}")
    torch.set_num_threads(threads)


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def compare(name: str, baseline: Callable[[], float], new: Callable[[], float], repeats: int) -> None:
    """Alternate the two; print the medians of wall and CPU time and baseline / new of each. The CPU time
    (of the process's threads, or of the child interpreter) is the steadier measure on a machine whose
    cores other jobs also use: waiting for a core does not count in it."""
    walls: dict[str, list[float]] = {"baseline": [], "new": []}
    cpus: dict[str, list[float]] = {"baseline": [], "new": []}
    for _ in range(repeats):
        for key, run in (("baseline", baseline), ("new", new)):
            started = _cpu_seconds()
            walls[key].append(run())
            cpus[key].append(_cpu_seconds() - started)
    wall_old, wall_new = statistics.median(walls["baseline"]), statistics.median(walls["new"])
    cpu_old, cpu_new = statistics.median(cpus["baseline"]), statistics.median(cpus["new"])
    each = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(cpus["baseline"], cpus["new"], strict=True))
    print(f"{name:13s} CPU baseline {cpu_old:7.3f} s new {cpu_new:7.3f} s ratio {cpu_old / cpu_new:5.2f}x | wall "
          f"{wall_old:7.3f} s / {wall_new:7.3f} s ratio {wall_old / wall_new:5.2f}x ({repeats} repeats; CPU "
          f"baseline/new s: {each})")


MEASUREMENTS = ("irnet_step", "irnet_loss", "deeplab_step", "make_cam", "maskrcnn_step", "same_conv", "step_import")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, choices=(1, 2),
                        help="torch threads of the jobs the demo runs on two (train_irnet, train_maskrcnn)")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, default=MEASUREMENTS)
    parser.add_argument("--drift", action="store_true", help="only the irnet_drift measurement")
    arguments = parser.parse_args()
    if arguments.drift:
        drift(arguments.threads)
        return
    for name in arguments.only:
        torch.set_num_threads(1 if name in ("deeplab_step", "make_cam") else arguments.threads)
        if name in ("irnet_step", "irnet_loss"):
            step = irnet_step() if name == "irnet_step" else irnet_loss()
            step()  # warm-up of both forms
            with former_stacks():
                step()

            def baseline_step() -> float:
                with former_stacks():
                    return step()

            compare(name, baseline_step, step, arguments.repeats)
        elif name == "deeplab_step":
            deeplab = deeplab_step()
            _, new_outputs = deeplab()
            with padded_copies(), full_aspp():
                _, old_outputs = deeplab()
            with full_aspp():
                _, full_aspp_outputs = deeplab()
            identical = all(torch.equal(a, b) for a, b in zip(full_aspp_outputs, old_outputs, strict=True))
            difference = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(new_outputs, old_outputs, strict=True))
            print(f"deeplab_step padding change alone bit-identical: {identical}; both changes: largest difference "
                  f"{difference:.1e} of the largest value (logits, gradients)")

            def baseline_deeplab() -> float:
                with padded_copies(), full_aspp():
                    return deeplab()[0]

            compare(name, baseline_deeplab, lambda: deeplab()[0], arguments.repeats)
        elif name == "make_cam":
            cams = make_cam()
            compare(name, with_padded_copies(cams), cams, arguments.repeats)
        elif name == "same_conv":
            same_conv(max(arguments.repeats, 5))
        elif name == "maskrcnn_step":
            maskrcnn = maskrcnn_step()
            maskrcnn()
            compare(name, with_padded_copies(maskrcnn), maskrcnn, arguments.repeats)
        else:
            compare(name, step_import(True), step_import(False), arguments.repeats)


if __name__ == "__main__":
    main()
