"""Effect and speed of ``compute.precision: bfloat16`` on the products of a finished run.

With a finished run's trained CAM network and IRNet, the CAMs and IRNet's maps (boundary,
displacement) of the run's inference images are computed twice in this process — in float32 (as
``make_cam`` / ``irnet_infer`` compute them by default) and under bfloat16 autocast (as they do under
``compute.precision: bfloat16``), both cast to float32 and rounded as the run's store keeps them
(float16 CAMs where ``cam.infer.float16``) — and everything computed from them is computed from both:

* CAM mIoU (background score ``cam.eval_threshold``) against the ground truth;
* confident-region labels (CAM thresholds + dense CRF) of the training images among them;
* semantic and instance pseudo labels (random walk, centroids) from the CAMs and IRNet's maps of the
  same precision.

It prints the pixel agreement of each pair, the images that differ, the metrics of both against the
ground truth, and the time of the CAM and IRNet inference under bfloat16 over float32 (alternating
per image, same process, same threads). The networks are not retrained. Run::

    python benchmarks/precision.py --run results/demo [--max-images 40] [--threads 2]

A run folder without ``models/irnet.pt`` (IRNet not trained yet) gets the CAM comparisons only (CAM
mIoU, confident-region labels, CAM time); without stored shards the check that the float32
recomputation equals the stored products is left out.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irn_core import evaluation
from irn_core.cam.infer import multiscale_cams, select_classes
from irn_core.config import RunConfig, load_config
from irn_core.engine.runtime import autocast
from irn_core.ir_labels import confident_region_labels
from irn_core.irnet.infer import boundary_and_displacement
from irn_core.pseudo_labels import semantic_and_instance_labels
from irn_core.steps.cam import cam_base_scale, load_cam_network
from irn_core.steps.common import open_run_dataset, shard_plan
from irn_core.steps.evaluate import cam_labels
from irn_core.steps.irnet import load_irnet
from irn_core.store import ShardedStore

PRECISIONS = ("float32", "bfloat16")
CPU = torch.device("cpu")


def _timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def _cams(config: RunConfig, model: torch.nn.Module, image: np.ndarray, class_ids: np.ndarray,
          precision: str) -> tuple[np.ndarray, np.ndarray]:
    """(cam_s4, cam_s1) of the image's classes as ``make_cam`` stores them under ``precision``."""
    with autocast(precision, CPU):
        cam_s4, high_res = multiscale_cams(
            model, image, scales=config.cam.infer.scales, flip=config.cam.infer.flip,
            base_scale=cam_base_scale(config, image.shape[0], image.shape[1]),
        )
    cam_s4, high_res = select_classes(cam_s4.float(), high_res.float(), class_ids)
    stored_dtype = np.float16 if config.cam_float16 else np.float32
    return tuple(maps.numpy().astype(stored_dtype).astype(np.float32) for maps in (cam_s4, high_res))


def _relations(config: RunConfig, model: torch.nn.Module, image: np.ndarray,
               precision: str) -> tuple[np.ndarray, np.ndarray]:
    """(boundary_s4, displacement_s4) as ``irnet_infer`` stores them under ``precision``."""
    with autocast(precision, CPU):
        boundary, displacement = boundary_and_displacement(model, image, pad_to=config.irnet.infer.pad_to)
    return boundary.float().numpy(), displacement.float().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder (results/<name>)")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N inference images")
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    config = load_config(options.run / "config.yaml")
    dataset = open_run_dataset(config)
    plan = shard_plan(config)
    infer_ids = plan.all_ids("infer")[: options.max_images]
    train_ids = set(plan.train_ids)
    cam_model = load_cam_network(config, options.run / "models" / "cam.pt", CPU)
    irnet_file = options.run / "models" / "irnet.pt"
    irnet_model = load_irnet(config, irnet_file, CPU) if irnet_file.exists() else None
    cam_shards = sorted((options.run / "cam").glob("shard-*.h5"))
    irnet_shards = sorted((options.run / "irnet").glob("shard-*.h5"))
    stored_cams = ShardedStore(cam_shards, product="cam") if cam_shards else None
    stored_irnet = ShardedStore(irnet_shards, product="irnet") if irnet_shards and irnet_model else None
    walk, instances, crf = config.random_walk, config.instances, config.ir_labels
    num_classes = len(dataset.class_names) + 1
    cam_confusion = {name: np.zeros((num_classes, num_classes), np.int64) for name in PRECISIONS}
    semantic_confusion = {name: np.zeros((num_classes, num_classes), np.int64) for name in PRECISIONS}
    accumulators = {
        name: evaluation.InstanceAPAccumulator(len(dataset.class_names), (0.5,)) for name in PRECISIONS
    }
    agree = {"cam_labels": [0, 0], "ir_labels": [0, 0], "semantic": [0, 0]}
    differing = {"cam_labels": 0, "ir_labels": 0, "semantic": 0, "instances": 0}
    seconds = {(stage, name): 0.0 for stage in ("cam", "irnet") for name in PRECISIONS}
    largest = {"cam_s1": 0.0, "boundary_s4": 0.0, "displacement_s4": 0.0}
    stored_equal = {"cam": 0, "irnet": 0}
    compared = 0
    started = time.perf_counter()
    for count, image_id in enumerate(infer_ids, 1):
        image = dataset.image(image_id)
        class_ids = dataset.class_labels(image_id)
        if len(class_ids) == 0:
            continue
        compared += 1
        order = PRECISIONS if count % 2 else PRECISIONS[::-1]  # alternate which precision runs first
        cams, relations = {}, {}
        for name in order:
            cams[name], elapsed = _timed(lambda name=name: _cams(config, cam_model, image, class_ids, name))
            seconds["cam", name] += elapsed
            if irnet_model is not None:
                relations[name], elapsed = _timed(lambda name=name: _relations(config, irnet_model, image, name))
                seconds["irnet", name] += elapsed
        if stored_cams is not None:
            stored = stored_cams.read(image_id, ["cam_s4"])["cam_s4"].astype(np.float32)
            stored_equal["cam"] += int(np.array_equal(stored, cams["float32"][0]))
        if stored_irnet is not None:
            stored_relation = stored_irnet.read(image_id, ["boundary_s4"])["boundary_s4"].astype(np.float32)
            stored_equal["irnet"] += int(np.array_equal(stored_relation, relations["float32"][0]))
        largest["cam_s1"] = max(largest["cam_s1"], float(np.abs(cams["bfloat16"][1] - cams["float32"][1]).max()))
        for index, key in enumerate(("boundary_s4", "displacement_s4") if relations else ()):
            difference = np.abs(relations["bfloat16"][index] - relations["float32"][index]).max()
            largest[key] = max(largest[key], float(difference))
        truth = dataset.semantic_mask(image_id)
        gt_masks, gt_class_ids = dataset.instance_masks(image_id)
        products: dict[str, dict[str, Any]] = {}
        for name in PRECISIONS:
            cam_s4, cam_s1 = cams[name]
            from_cams = cam_labels(cam_s1, class_ids, config.cam.eval_threshold)
            cam_confusion[name] += evaluation.confusion_matrix(from_cams, truth, num_classes)
            semantic, found = None, None
            if relations:
                boundary, displacement = relations[name]
                semantic, found = semantic_and_instance_labels(
                    cam_s4, class_ids, boundary, displacement, image.shape[:2],
                    beta=walk.beta, exp_times=walk.exp_times, radius=walk.radius,
                    bg_threshold=walk.semantic_bg_threshold, instance_bg_threshold=walk.instance_bg_threshold,
                    background=walk.background, threshold_rule=walk.threshold_rule,
                    centroid_iterations=instances.centroid_iterations,
                    cluster_threshold=instances.cluster_threshold, min_fragment=instances.min_fragment,
                    image_id=image_id,
                )
                semantic_confusion[name] += evaluation.confusion_matrix(semantic, truth, num_classes)
                accumulators[name].add(found.masks, found.class_ids, found.scores, gt_masks, gt_class_ids)
            ir = None
            if image_id in train_ids:
                ir = confident_region_labels(image, cam_s1, class_ids, fg_threshold=crf.fg_threshold,
                                             bg_threshold=crf.bg_threshold, image_id=image_id,
                                             **crf.crf.model_dump())
            products[name] = {"cam_labels": from_cams, "semantic": semantic, "ir_labels": ir, "instances": found}
        for key in ("cam_labels", "semantic", "ir_labels"):
            first, second = products["float32"][key], products["bfloat16"][key]
            if first is None:
                continue
            agree[key][0] += int(np.sum(first == second))
            agree[key][1] += first.size
            differing[key] += int(not np.array_equal(first, second))
        found32, found16 = products["float32"]["instances"], products["bfloat16"]["instances"]
        if found32 is not None:
            same_instances = len(found32) == len(found16) and np.array_equal(found32.masks, found16.masks)
            differing["instances"] += int(not same_instances)
        if count % 10 == 0:
            print(f"{count}/{len(infer_ids)} images, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if irnet_model is None:
        print(f"no {irnet_file}: CAM comparisons only", file=sys.stderr)
    checked = stored_equal if stored_cams is not None and stored_irnet is not None else None
    _print_report(options, config, irnet_model is not None, compared, checked, largest, agree, differing,
                  cam_confusion, semantic_confusion, accumulators, seconds)


def _print_report(options: argparse.Namespace, config: RunConfig, with_irnet: bool, compared: int,
                  stored_equal: dict[str, int] | None, largest: dict[str, float], agree: dict[str, list[int]],
                  differing: dict[str, int],
                  cam_confusion: dict[str, np.ndarray], semantic_confusion: dict[str, np.ndarray],
                  accumulators: dict[str, evaluation.InstanceAPAccumulator],
                  seconds: dict[tuple[str, str], float]) -> None:
    print(f"run {options.run}: {compared} inference images with a class, {options.threads} threads, CPU "
          f"{torch.backends.cpu.get_cpu_capability()}; CAMs stored as {'float16' if config.cam_float16 else 'float32'}")
    if stored_equal is not None:
        print(f"the float32 recomputation equals the stored products for {stored_equal['cam']} (CAMs) and "
              f"{stored_equal['irnet']} (IRNet boundary) of them")
    print(f"largest difference bfloat16 - float32: cam_s1 {largest['cam_s1']:.4f} (maps in [0, 1))"
          + (f", boundary_s4 {largest['boundary_s4']:.4f}, displacement_s4 {largest['displacement_s4']:.4f}"
             if with_irnet else ""))
    print("\n| computed from | pixel agreement bfloat16 vs float32 | images that differ |")
    print("|---|---|---|")
    for name, label in (("cam_labels", "CAM labels (eval threshold)"), ("ir_labels", "confident-region labels"),
                        ("semantic", "semantic pseudo labels")):
        same, total = agree[name]
        if total:
            print(f"| {label} | {100 * same / total:.4f}% | {differing[name]} |")
    if with_irnet:
        print(f"| instance pseudo labels (masks) | — | {differing['instances']} |")
    print("\n| precision | CAM mIoU | semantic pseudo-label mIoU | instance mAP@0.5 |")
    print("|---|---|---|---|")
    for name in PRECISIONS:
        cam_miou = evaluation.mean_iou(cam_confusion[name])[1]
        semantic_miou = evaluation.mean_iou(semantic_confusion[name])[1]
        map50 = accumulators[name].result()[0.5][1]
        if not with_irnet:
            print(f"| {name} | {100 * cam_miou:.3f} | — (no IRNet) | — |")
            continue
        print(f"| {name} | {100 * cam_miou:.3f} | {100 * semantic_miou:.3f} | {100 * map50:.3f} |")
    print("\n| inference | float32 s | bfloat16 s | ratio bfloat16 / float32 |")
    print("|---|---|---|---|")
    for stage in ("cam", "irnet") if with_irnet else ("cam",):
        first, second = seconds[stage, "float32"], seconds[stage, "bfloat16"]
        print(f"| {stage} | {first:.1f} | {second:.1f} | {second / max(first, 1e-9):.2f} |")


if __name__ == "__main__":
    main()
