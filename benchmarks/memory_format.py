"""Speed of ``compute.channels_last: true`` against the default (contiguous) memory format, on CPU.

With a finished run (its config, trained networks and stored products), every network stage is timed in
both memory formats in this process, alternating which goes first, with the same threads:

* training: ``train_cam``, ``train_irnet`` and ``train_deeplab`` (pseudo labels) for ``--train-steps``
  steps each, ``--repeats`` times per format; the figure is the loop's images per second as the checkpoint records it
  (model building and the displacement-mean pass left out);
* inference: the CAMs (``make_cam``), IRNet's maps (``irnet_infer``) and DeepLab v2's ensemble
  (``deeplab_infer``, without its CRF) of the first ``--images`` inference / validation photos, per image
  in both formats, with the largest difference between the two outputs (the arithmetic is float32 either
  way; only the order of the sums changes).

It prints each stage's ratio channels-last / contiguous time. Run::

    python benchmarks/memory_format.py --run results/photos [--train-steps 12] [--images 8] [--threads 2]

A stage whose checkpoint or pseudo labels the run lacks is left out and named.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irn_core.cam.infer import multiscale_cams
from irn_core.config import RunConfig, load_config
from irn_core.deeplab.infer import ensemble_probabilities
from irn_core.engine.checkpoint import load_checkpoint
from irn_core.irnet.infer import boundary_and_displacement
from irn_core.steps.cam import cam_base_scale, load_cam_network, run_train_cam
from irn_core.steps.common import open_run_dataset, shard_plan, split_ids
from irn_core.steps.deeplab import load_deeplab, run_train_deeplab
from irn_core.steps.irnet import load_irnet, run_train_irnet

FORMATS = (False, True)
"""compute.channels_last: contiguous, channels-last."""
CPU = torch.device("cpu")
logger = logging.getLogger("memory_format")


def _with_compute(config: RunConfig, **fields: object) -> RunConfig:
    """``config`` with these ``compute`` fields replaced."""
    return config.model_copy(update={"compute": config.compute.model_copy(update=fields)})


def _with_format(config: RunConfig, channels_last: bool) -> RunConfig:
    return _with_compute(config, channels_last=channels_last)


def _trainers(run: Path) -> dict[str, tuple[str, Callable[[RunConfig, Path, int], None]]]:
    """stage -> (checkpoint kind, train(config, output, steps)) for the stages the run can train."""
    ir_labels = sorted((run / "ir_labels").glob("shard-*.h5"))
    semantic = sorted((run / "semantic").glob("shard-*.h5"))
    trainers: dict[str, tuple[str, Callable[[RunConfig, Path, int], None]]] = {
        "train_cam": ("cam", lambda config, output, steps: run_train_cam(config, output, max_steps=steps)),
    }
    if not ir_labels:
        logger.warning("train_irnet left out: no %s", run / "ir_labels" / "shard-*.h5")
    else:
        trainers["train_irnet"] = (
            "irnet",
            lambda config, output, steps: run_train_irnet(
                config, ir_labels, output, cam_checkpoint=run / "models" / "cam.pt", max_steps=steps
            ),
        )
    if not semantic:
        logger.warning("train_deeplab left out: no %s", run / "semantic" / "shard-*.h5")
    else:
        trainers["train_deeplab"] = (
            "deeplab",
            lambda config, output, steps: run_train_deeplab(config, "pseudo", semantic, output, max_steps=steps),
        )
    return trainers


def training_speeds(config: RunConfig, run: Path, steps: int, repeats: int) -> dict[str, dict[bool, list[float]]]:
    """stage -> format -> images/s of each repeat (the checkpoint's record)."""
    speeds: dict[str, dict[bool, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for stage, (kind, train) in _trainers(run).items():
            speeds[stage] = {channels_last: [] for channels_last in FORMATS}
            for repeat in range(repeats):
                for channels_last in FORMATS if repeat % 2 == 0 else FORMATS[::-1]:
                    output = Path(folder) / f"{stage}.pt"
                    train(_with_format(config, channels_last), output, steps)
                    record = load_checkpoint(output, kind=kind)["record"]
                    speeds[stage][channels_last].append(float(record["images_per_second"]))
                    logger.info("%s channels_last=%s: %.2f images/s", stage, channels_last,
                                 speeds[stage][channels_last][-1])
    return speeds


def _inference_functions(config: RunConfig, run: Path) -> dict[str, tuple[dict[bool, Any], Callable[..., Any]]]:
    """stage -> ({format: model}, predict(model, image) -> tensor) for the run's trained networks."""
    cam_infer, pad_to, deeplab_infer = config.cam.infer, config.irnet.infer.pad_to, config.deeplab.infer

    def cams(model: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
        base = cam_base_scale(config, image.shape[0], image.shape[1])
        return multiscale_cams(model, image, scales=cam_infer.scales, flip=cam_infer.flip, base_scale=base)[1]

    def relations(model: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
        boundary, displacement = boundary_and_displacement(model, image, pad_to=pad_to)
        return torch.cat([boundary.float().reshape(-1), displacement.float().reshape(-1)])

    def probabilities(model: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
        return ensemble_probabilities(model, image, scales=deeplab_infer.scales, flip=deeplab_infer.flip)

    stages: dict[str, tuple[str, Callable[[RunConfig, Path], Any], Callable[..., Any]]] = {
        "make_cam": ("cam.pt", lambda stage_config, path: load_cam_network(stage_config, path, CPU), cams),
        "irnet_infer": ("irnet.pt", lambda stage_config, path: load_irnet(stage_config, path, CPU), relations),
        "deeplab_infer": (
            "deeplab_pseudo.pt", lambda stage_config, path: load_deeplab(stage_config, path, CPU)[0], probabilities,
        ),
    }
    functions: dict[str, tuple[dict[bool, Any], Callable[..., Any]]] = {}
    for stage, (name, load, predict) in stages.items():
        path = run / "models" / name
        if not path.exists():
            logger.warning("%s left out: no %s", stage, path)
            continue
        functions[stage] = ({fmt: load(_with_format(config, fmt), path) for fmt in FORMATS}, predict)
    return functions


def inference_speeds(config: RunConfig, run: Path, images: int) -> dict[str, dict[str, float]]:
    """stage -> {'contiguous s', 'channels_last s', 'largest difference'} over the first ``images`` photos."""
    dataset = open_run_dataset(config)
    plan = shard_plan(config)
    val_split = config.dataset.val_split
    infer_ids = plan.all_ids("infer")[:images]
    photo_ids = {
        "make_cam": infer_ids,
        "irnet_infer": infer_ids,
        "deeplab_infer": split_ids(config, val_split)[:images] if val_split else infer_ids,
    }
    results: dict[str, dict[str, float]] = {}
    for stage, (models, predict) in _inference_functions(config, run).items():
        seconds = {fmt: 0.0 for fmt in FORMATS}
        largest = 0.0
        for count, image_id in enumerate(photo_ids[stage]):
            image = dataset.image(image_id)
            outputs = {}
            for fmt in FORMATS if count % 2 == 0 else FORMATS[::-1]:
                started = time.perf_counter()
                outputs[fmt] = predict(models[fmt], image).float()
                seconds[fmt] += time.perf_counter() - started
            largest = max(largest, float((outputs[True] - outputs[False]).abs().max()))
        results[stage] = {"contiguous s": seconds[False], "channels_last s": seconds[True],
                          "largest difference": largest}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder (results/<name>)")
    parser.add_argument("--train-steps", type=int, default=12, help="steps per training measurement (0: none)")
    parser.add_argument("--repeats", type=int, default=2, help="training measurements per format")
    parser.add_argument("--images", type=int, default=8, help="photos per inference measurement (0: none)")
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    config = _with_compute(load_config(options.run / "config.yaml"), threads=options.threads)
    torch.set_num_threads(options.threads)
    print(f"run {options.run}; {options.threads} threads; CPU kernels {torch.backends.cpu.get_cpu_capability()}")
    if options.train_steps > 0:
        speeds = training_speeds(config, options.run, options.train_steps, options.repeats)
        print("\n| training | contiguous images/s | channels-last images/s | time ratio channels-last / contiguous |")
        print("|---|---|---|---|")
        for stage, by_format in speeds.items():
            contiguous, last = float(np.median(by_format[False])), float(np.median(by_format[True]))
            print(f"| {stage} | {contiguous:.2f} | {last:.2f} | {contiguous / last:.2f} |")
    if options.images > 0:
        results = inference_speeds(config, options.run, options.images)
        print("\n| inference | contiguous s | channels-last s | time ratio | largest difference |")
        print("|---|---|---|---|---|")
        for stage, result in results.items():
            ratio = result["channels_last s"] / max(result["contiguous s"], 1e-9)
            print(f"| {stage} | {result['contiguous s']:.1f} | {result['channels_last s']:.1f} | {ratio:.2f} | "
                  f"{result['largest difference']:.2e} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
