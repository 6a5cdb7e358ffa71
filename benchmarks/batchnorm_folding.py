"""Speed of EfficientNet-Lite with its fixed BatchNorms folded into the convolutions, on CPU.

The backbones of the CAM network, IRNet, DeepLab v2 and Mask R-CNN use fixed BatchNorm (running
statistics, :class:`~irn_core.models.backbones.FixedBatchNorm2d`), which
:func:`~irn_core.models.backbones.convolution_and_norm` folds into the preceding convolution's weight and
bias. The baseline, in the same process and with the same weights and threads, is the same network with
``nn.BatchNorm2d`` in eval mode, which computes the same values unfolded (a normalisation pass after every
convolution). Both run ReLU6 and the residual sums in place. Timed, alternating which goes first:

* ``frozen``: the forward pass without gradients (the CAM network's training with every stage frozen, the
  CAMs, IRNet's frozen backbone, the frozen stages of DeepLab v2 and Mask R-CNN);
* ``trained``: forward and backward with every parameter trained (DeepLab v2's and Mask R-CNN's trained
  stages).

It prints the median time of each and the ratio folded / unfolded, and the largest relative difference of
the outputs. Run::

    python benchmarks/batchnorm_folding.py [--backbone efficientnet_lite0] [--batch 16] [--size 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch

from irn_core.models.backbones import Backbone, build_backbone

logger = logging.getLogger("batchnorm_folding")


def _forward(network: Backbone, image: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            network(image)

    return run


def _forward_backward(network: Backbone, image: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        network.zero_grad(set_to_none=True)
        sum(features.mean() for features in network(image)).backward()

    return run


def _median_seconds(function: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(arguments.threads)

    folded = build_backbone(arguments.backbone, weights="imagenet", frozen_batchnorm=True)
    unfolded = build_backbone(arguments.backbone, weights="imagenet", frozen_batchnorm=False)
    unfolded.load_state_dict(folded.state_dict())
    networks = {"folded": folded, "unfolded": unfolded}
    for network in networks.values():
        network.eval()
        network.to(memory_format=torch.channels_last)
    image = torch.randn(arguments.batch, 3, arguments.size, arguments.size, generator=torch.Generator().manual_seed(0))
    image = image.contiguous(memory_format=torch.channels_last)

    with torch.no_grad():
        outputs = {name: network(image) for name, network in networks.items()}
    difference = max(
        float((a - b).abs().max() / b.abs().max()) for a, b in zip(outputs["folded"], outputs["unfolded"], strict=True)
    )
    logger.info(
        "%s, batch %d of %dx%d, %d threads; largest relative difference of the stage outputs %.1e",
        arguments.backbone, arguments.batch, arguments.size, arguments.size, arguments.threads, difference,
    )
    for mode, make in (("frozen", _forward), ("trained", _forward_backward)):
        if mode == "trained":
            for network in networks.values():
                for parameter in network.parameters():
                    parameter.requires_grad_(True)
        medians: dict[str, list[float]] = {"folded": [], "unfolded": []}
        for order in (("folded", "unfolded"), ("unfolded", "folded")):
            for name in order:
                function = make(networks[name], image)
                function()  # warm-up
                medians[name].append(_median_seconds(function, arguments.repeats))
        folded_time = statistics.mean(medians["folded"])
        unfolded_time = statistics.mean(medians["unfolded"])
        logger.info(
            "%-8s folded %.3f s, unfolded %.3f s: ratio %.2f", mode, folded_time, unfolded_time, folded_time / unfolded_time
        )


if __name__ == "__main__":
    main()
