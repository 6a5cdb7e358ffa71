"""``compute.cpu_allocator``: glibc's defaults (``system``) against ``retain`` on the workflow's CPU steps.

With ``retain`` (:func:`irn_core.engine.runtime.retain_freed_memory`) glibc serves every block from its heap
and keeps freed memory; by default it maps each block above its threshold afresh and unmaps it on ``free``,
so that every large tensor of a step is page-faulted and zeroed anew. The setting lasts for a process, so
each measurement is a child interpreter that sets the policy, runs one workload ``--steps`` times after a
warm-up and prints the median seconds; the children alternate ``system`` and ``retain`` (``--rounds``
times) so that the load of a shared machine falls on both alike. Workloads (from
``benchmarks/demo_speed.py``, at ``config/photos.yaml``'s sizes, random weights):

* ``irnet_step``: IRNet training step, batch 16, crop 256, radius 10, 2 threads (train_irnet);
* ``deeplab_step``: DeepLab v2 training step, batch 8, crop 224, stages 1-3 frozen, 1 thread (train_deeplab);
* ``maskrcnn_step``: Mask R-CNN training step, 4 images of 256x320, 1 thread (train_maskrcnn);
* ``make_cam``: multi-scale + flip CAMs of one 280x320 image, 1 thread (make_cam).

Prints, per workload, the median seconds of each policy over the rounds and retain / system::

    python benchmarks/cpu_allocator.py [--rounds 2] [--steps 5] [--only irnet_step make_cam]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("cpu_allocator")

WORKLOAD_THREADS = {"irnet_step": 2, "deeplab_step": 1, "maskrcnn_step": 1, "make_cam": 1}
"""The thread count each workload's rule runs with in ``config/photos.yaml``."""


def child(workload: str, policy: str, steps: int) -> None:
    """Set the policy, build the workload, run it once to warm up and ``steps`` times; print the median."""
    from irn_core.engine.runtime import configure_allocator

    configure_allocator(policy)  # before the first tensor, as a workflow step does
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import demo_speed

    torch.set_num_threads(WORKLOAD_THREADS[workload])
    run = getattr(demo_speed, workload)()

    def seconds() -> float:
        result = run()
        return result[0] if isinstance(result, tuple) else result

    seconds()
    times = [seconds() for _ in range(steps)]
    sys.stdout.write(json.dumps({"median": statistics.median(times)}) + "\n")


def measure(workload: str, policy: str, steps: int) -> float:
    """Median seconds of one child interpreter."""
    completed = subprocess.run(
        [sys.executable, __file__, "--child", workload, policy, "--steps", str(steps)],
        capture_output=True, text=True, check=True,
    )
    return float(json.loads(completed.stdout.strip().splitlines()[-1])["median"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="system/retain child pairs per workload")
    parser.add_argument("--steps", type=int, default=5, help="timed repetitions in each child")
    parser.add_argument("--only", nargs="+", choices=sorted(WORKLOAD_THREADS), default=list(WORKLOAD_THREADS))
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "POLICY"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child[0], arguments.child[1], arguments.steps)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    for workload in arguments.only:
        medians: dict[str, list[float]] = {"system": [], "retain": []}
        for _ in range(arguments.rounds):
            for policy in ("system", "retain"):
                medians[policy].append(measure(workload, policy, arguments.steps))
        system, retain = statistics.median(medians["system"]), statistics.median(medians["retain"])
        logger.info(
            "%-14s %d thread(s): system %.3f s, retain %.3f s a step (medians of %d children x %d steps); "
            "retain / system %.2f (per round: %s)",
            workload, WORKLOAD_THREADS[workload], system, retain, arguments.rounds, arguments.steps, retain / system,
            ", ".join(f"{r / s:.2f}" for s, r in zip(medians["system"], medians["retain"], strict=True)),
        )
    logger.info("%.0f s in all", time.perf_counter() - started)


if __name__ == "__main__":
    main()
