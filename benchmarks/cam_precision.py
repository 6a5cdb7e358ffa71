"""Effect of storing CAMs as float16 (``cam.infer.float16``) on what is computed from them.

For a finished run, the CAMs of its inference images are recomputed in float32 with the run's
CAM network (exactly as ``make_cam`` computes them before storing), and everything that reads CAMs
is computed twice — from the float32 CAMs and from the same CAMs rounded to float16, as the store
keeps them under ``preset: fixed`` — with the run's own IRNet outputs (boundary, displacement):

* confident-region labels (CAM thresholds 0.30 / 0.05 + dense CRF) of the training images;
* semantic and instance pseudo labels (random walk, centroids) of the inference images.

It prints the pixel agreement of each pair and the metrics of both against the ground truth.
IRNet is not retrained: the comparison isolates the stages that read the CAMs. Run::

    python benchmarks/cam_precision.py --run results/demo [--limit 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from irn_core import evaluation
from irn_core.cam.infer import multiscale_cams, select_classes
from irn_core.config import load_config
from irn_core.ir_labels import confident_region_labels
from irn_core.pseudo_labels import semantic_and_instance_labels
from irn_core.steps.cam import cam_base_scale, load_cam_network
from irn_core.steps.common import open_run_dataset, shard_plan
from irn_core.store import ShardedStore


def _rounded(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float16).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder (results/<name>)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N inference images")
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    config = load_config(options.run / "config.yaml")
    dataset = open_run_dataset(config)
    plan = shard_plan(config)
    infer_ids = plan.all_ids("infer")[: options.limit]
    train_ids = set(plan.train_ids)
    model = load_cam_network(config, options.run / "models" / "cam.pt", torch.device("cpu"))
    irnet = ShardedStore(sorted((options.run / "irnet").glob("shard-*.h5")), product="irnet")
    stored_cams = ShardedStore(sorted((options.run / "cam").glob("shard-*.h5")), product="cam")
    walk, instances, crf = config.random_walk, config.instances, config.ir_labels
    num_classes = len(dataset.class_names) + 1
    confusion = {"float32": np.zeros((num_classes, num_classes), np.int64), "float16": None}
    confusion["float16"] = confusion["float32"].copy()
    accumulators = {
        name: evaluation.InstanceAPAccumulator(len(dataset.class_names), (0.5,)) for name in ("float32", "float16")
    }
    agree = {"ir_labels": [0, 0], "semantic": [0, 0]}
    differing_images = {"ir_labels": 0, "semantic": 0, "instances": 0}
    stored_equal = 0
    started = time.perf_counter()
    for count, image_id in enumerate(infer_ids, 1):
        image = dataset.image(image_id)
        class_ids = dataset.class_labels(image_id)
        if len(class_ids) == 0:
            continue
        cam_s4, high_res = multiscale_cams(
            model, image, scales=config.cam.infer.scales, flip=config.cam.infer.flip,
            base_scale=cam_base_scale(config, image.shape[0], image.shape[1]),
        )
        cam_s4, high_res = (maps.numpy() for maps in select_classes(cam_s4, high_res, class_ids))
        stored = stored_cams.read(image_id, ["cam_s4"])["cam_s4"]
        stored_equal += int(np.array_equal(stored.astype(np.float32), _rounded(cam_s4) if stored.dtype == np.float16
                                           else cam_s4))
        relation = irnet.read(image_id, ["boundary_s4", "displacement_s4"])
        versions = {"float32": (cam_s4, high_res), "float16": (_rounded(cam_s4), _rounded(high_res))}
        labels = {}
        for name, (seeds, full) in versions.items():
            semantic, found = semantic_and_instance_labels(
                seeds, class_ids, relation["boundary_s4"], relation["displacement_s4"], image.shape[:2],
                beta=walk.beta, exp_times=walk.exp_times, radius=walk.radius, bg_threshold=walk.semantic_bg_threshold,
                instance_bg_threshold=walk.instance_bg_threshold, centroid_iterations=instances.centroid_iterations,
                cluster_threshold=instances.cluster_threshold, min_fragment=instances.min_fragment,
            )
            ir = None
            if image_id in train_ids:
                ir = confident_region_labels(image, full, class_ids, fg_threshold=crf.fg_threshold,
                                             bg_threshold=crf.bg_threshold, **crf.crf.model_dump())
            labels[name] = (semantic, found, ir)
            confusion[name] += evaluation.confusion_matrix(semantic, dataset.semantic_mask(image_id), num_classes)
            gt_masks, gt_class_ids = dataset.instance_masks(image_id)
            accumulators[name].add(found.masks, found.class_ids, found.scores, gt_masks, gt_class_ids)
        (semantic32, found32, ir32), (semantic16, found16, ir16) = labels["float32"], labels["float16"]
        agree["semantic"][0] += int(np.sum(semantic32 == semantic16))
        agree["semantic"][1] += semantic32.size
        differing_images["semantic"] += int(not np.array_equal(semantic32, semantic16))
        same_instances = len(found32) == len(found16) and np.array_equal(found32.masks, found16.masks)
        differing_images["instances"] += int(not same_instances)
        if ir32 is not None:
            agree["ir_labels"][0] += int(np.sum(ir32 == ir16))
            agree["ir_labels"][1] += ir32.size
            differing_images["ir_labels"] += int(not np.array_equal(ir32, ir16))
        if count % 10 == 0:
            print(f"{count}/{len(infer_ids)} images, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(f"run {options.run}: {len(infer_ids)} inference images; stored CAMs equal to the recomputed ones "
          f"(after the store's rounding) for {stored_equal} of them")
    print("\n| computed from CAMs | pixel agreement float16 vs float32 | images that differ |")
    print("|---|---|---|")
    for name in ("ir_labels", "semantic"):
        same, total = agree[name]
        print(f"| {name} | {100 * same / max(total, 1):.4f}% | {differing_images[name]} |")
    print(f"| instances (masks) | — | {differing_images['instances']} |")
    print("\n| CAM storage | semantic mIoU | instance mAP@0.5 |")
    print("|---|---|---|")
    for name in ("float32", "float16"):
        miou = evaluation.mean_iou(confusion[name])[1]
        map50 = accumulators[name].result()[0.5][1]
        print(f"| {name} | {100 * miou:.3f} | {100 * map50:.3f} |")


if __name__ == "__main__":
    main()
