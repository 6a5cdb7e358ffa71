"""IRNet's training loss: the library's per-direction displacement terms against the stacked form.

The displacement terms of :func:`irn_core.relations.losses.affinity_displacement_loss` sum
``|D(s) − D(t) − δ|`` and ``|D(s) − D(t)|`` over every pair of the source window. Before, they were
computed on the ``(B, 2, D, hs, ws)`` stack of every direction's destinations (restated below as
``stacked``, :func:`relations_oracles.stacked_displacement_sums`); now one direction at a time on views of the map. This script times both, forward and
backward, on IRNet's training size (batch 16, crop 256 -> 64x64 at stride 4, radius 10) in the same
process, alternating, and prints the ratio and the largest difference of the values and gradients.
It then times the path maximum of the affinity terms with the library's hand-written gradient against
autograd through ``max(dim)`` (restated as :func:`relations_oracles.autograd_grouped_path_max`), and the
whole loss (affinity terms included) as the library computes it.

    python benchmarks/irnet_loss.py [--threads 2] [--repeats 5] [--batch 16] [--size 64]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "relations"))  # the former forms

from relations_oracles import autograd_grouped_path_max, stacked_displacement_sums  # noqa: E402

from irn_core.relations.affinity import boundary_to_path_max  # noqa: E402
from irn_core.relations.losses import _displacement_sums, affinity_displacement_loss  # noqa: E402
from irn_core.relations.pair_labels import destination_stack, pair_labels  # noqa: E402
from irn_core.relations.path_index import path_index  # noqa: E402

logger = logging.getLogger("irnet_loss")


def timed(function, displacement: torch.Tensor) -> tuple[float, tuple[float, float], torch.Tensor]:
    """Seconds for forward + backward of ``fg + bg``; the two sums; the gradient."""
    displacement.grad = None
    start = time.perf_counter()
    fg_sum, bg_sum = function()
    (fg_sum + bg_sum).backward()
    seconds = time.perf_counter() - start
    return seconds, (float(fg_sum.detach()), float(bg_sum.detach())), displacement.grad.clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="stride-4 map side (crop / 4)")
    parser.add_argument("--radius", type=float, default=10)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(arguments.threads)
    generator = torch.Generator().manual_seed(0)
    index = path_index(arguments.radius)
    shape = (arguments.batch, arguments.size, arguments.size)
    labels = torch.randint(0, 3, shape, generator=generator).to(torch.uint8)
    labels[:, : arguments.size // 6] = 255
    masks = pair_labels(labels, index)
    fg_pos, bg_pos = masks.fg_pos.float(), masks.bg_pos.float()
    displacement = (4 * torch.randn((arguments.batch, 2, arguments.size, arguments.size), generator=generator))
    displacement.requires_grad_(True)
    logits = torch.randn((arguments.batch, 1, arguments.size, arguments.size), generator=generator, requires_grad=True)

    forms = {
        "stacked": lambda: stacked_displacement_sums(displacement, index, fg_pos, bg_pos, destination_stack),
        "per_direction": lambda: _displacement_sums(displacement, index, fg_pos, bg_pos),
    }
    times: dict[str, list[float]] = {name: [] for name in forms}
    results = {}
    for repeat in range(arguments.repeats + 1):  # the first round warms up
        for name, function in forms.items():
            seconds, sums, gradient = timed(function, displacement)
            if repeat:
                times[name].append(seconds)
            results[name] = (sums, gradient)
    (stacked_sums, stacked_gradient), (direction_sums, direction_gradient) = results.values()
    value_difference = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(stacked_sums, direction_sums))
    gradient_difference = float((stacked_gradient - direction_gradient).abs().max())
    median = {name: statistics.median(values) for name, values in times.items()}
    logger.info("batch %d, %dx%d map, radius %g (%d directions), %d threads, median of %d",
                arguments.batch, arguments.size, arguments.size, arguments.radius, len(index.directions),
                arguments.threads, arguments.repeats)
    for name, seconds in median.items():
        logger.info("  displacement terms, %-13s forward + backward %.3f s", name, seconds)
    logger.info("  ratio per_direction / stacked: %.2f", median["per_direction"] / median["stacked"])
    logger.info("  largest relative difference of the sums %.1e, largest gradient difference %.1e",
                value_difference, gradient_difference)

    path_max_forms = {
        "autograd": lambda boundary: autograd_grouped_path_max(boundary, index),
        "library": lambda boundary: boundary_to_path_max(boundary, index, region="source_window"),
    }
    boundary = torch.sigmoid(logits.detach()[:, 0])
    rows, cols = index.source_window(*boundary.shape[1:])
    upstream = torch.rand(boundary.shape[0], len(index.directions), rows.stop - rows.start, cols.stop - cols.start,
                          generator=generator)
    path_times: dict[str, list[float]] = {name: [] for name in path_max_forms}
    path_gradients = {}
    for repeat in range(arguments.repeats + 1):
        for name, function in path_max_forms.items():
            leaf = boundary.clone().requires_grad_(True)
            start = time.perf_counter()
            (function(leaf) * upstream).sum().backward()
            if repeat:
                path_times[name].append(time.perf_counter() - start)
            path_gradients[name] = leaf.grad
    path_median = {name: statistics.median(values) for name, values in path_times.items()}
    logger.info("  path maximum, autograd through max(dim) %.3f s, hand-written gradient %.3f s, forward + "
                "backward; ratio %.2f; largest gradient difference %.1e", path_median["autograd"],
                path_median["library"], path_median["library"] / path_median["autograd"],
                float((path_gradients["autograd"] - path_gradients["library"]).abs().max()))

    whole = []
    for _ in range(arguments.repeats):
        displacement.grad = logits.grad = None
        start = time.perf_counter()
        losses = affinity_displacement_loss(logits, displacement, labels, index, constant_reference=True)
        losses["total"].backward()
        whole.append(time.perf_counter() - start)
    logger.info("  the whole loss (affinity terms, pair labels, displacement terms), forward + backward %.3f s",
                statistics.median(whole))


if __name__ == "__main__":
    main()
