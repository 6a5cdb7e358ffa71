"""Where the semantic pseudo labels gain or lose against the CAMs they start from.

For a finished run (its stored CAMs, IRNet boundary maps and ground truth), the semantic labels of
every inference image are recomputed under variants that change one thing at a time between the
CAM evaluation (``cam_s1``, each class max-normalised, background constant ``cam.eval_threshold``)
and the reference's semantic pseudo labels (stride-4 CAMs walked over the boundary map, upsampled,
divided by one global max, background constant ``random_walk.bg_threshold``):

* ``cam_s1 bg=T``: the CAM evaluation's rule at other background constants;
* ``cam_s4 no walk``: the stride-4 CAMs upsampled and normalised as the walk's output (no walk);
* ``walk, boundary 0``: the walk with a boundary map of zeros (plain smoothing in the radius);
* ``walk`` (the reference's rule) and ``walk, per-class max`` (each class divided by its own max);
* ``walk bg=T``: the reference's rule at other background constants;
* ``walk, walked background``: the background constant walked as a seed map with the classes
  (``random_walk.background: walked``), compared with them without a constant after the walk.

The run's own rule (``random_walk.background``) is recomputed and compared with the stored labels.

It prints mIoU, background IoU and foreground precision / recall for each. Run::

    python benchmarks/real_photos/walk_analysis.py --run results/real [--limit 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from irn_core import evaluation
from irn_core.config import load_config
from irn_core.random_walk import propagate
from irn_core.steps.common import open_run_dataset, shard_plan
from irn_core.steps.evaluate import cam_labels
from irn_core.store import ShardedStore


def walk_scores(cam_s4: np.ndarray, boundary: np.ndarray, beta: float, exp_times: int, radius: float) -> torch.Tensor:
    """``(K, h, w)`` walked scores of the seeds ``cam_s4`` over ``boundary`` (the pipeline's operator)."""
    return propagate(torch.from_numpy(cam_s4.astype(np.float32)), torch.from_numpy(boundary.astype(np.float32)),
                     beta=beta, exp_times=exp_times, radius=radius).to(torch.float32)


def labels_from_scores(
    scores: torch.Tensor, class_ids: np.ndarray, image_size: tuple[int, int], bg_threshold: float, *,
    stride: int = 4, per_class: bool = False,
) -> np.ndarray:
    """Upsample ``(K, h, w)`` scores ×stride, normalise (one global max or per class), argmax with a background."""
    height, width = image_size
    if stride != 1:
        scores = F.interpolate(scores.unsqueeze(0), scale_factor=stride, mode="bilinear", align_corners=False)[0]
    scores = scores[:, :height, :width]
    if per_class:
        maxima = scores.flatten(1).max(dim=1).values.clamp_min(1e-12)
        scores = scores / maxima[:, None, None]
    else:
        scores = scores / scores.max().clamp_min(1e-12)
    padded = torch.cat([torch.full((1, height, width), bg_threshold), scores])
    keys = np.concatenate([[0], class_ids + 1]).astype(np.uint8)
    return keys[padded.argmax(dim=0).numpy()]


def walked_background_labels(
    cam_s4: np.ndarray, boundary: np.ndarray, class_ids: np.ndarray, image_size: tuple[int, int],
    bg_threshold: float, beta: float, exp_times: int, radius: float, *, stride: int = 4,
) -> np.ndarray:
    """Walk ``[bg_threshold · ones, cam_s4]`` together, upsample ×stride, argmax (background first on ties)."""
    seeds = np.concatenate([np.full((1, *cam_s4.shape[1:]), bg_threshold, np.float32), cam_s4])
    walked = walk_scores(seeds, boundary, beta, exp_times, radius)
    height, width = image_size
    scores = F.interpolate(walked.unsqueeze(0), scale_factor=stride, mode="bilinear", align_corners=False)[0]
    keys = np.concatenate([[0], class_ids + 1]).astype(np.uint8)
    return keys[scores[:, :height, :width].argmax(dim=0).numpy()]


def summarise(confusion: np.ndarray) -> dict[str, float]:
    """mIoU, background IoU, foreground precision and recall (any class vs background) from a confusion."""
    iou, miou = evaluation.mean_iou(confusion)
    foreground_true = confusion[1:, :].sum()
    foreground_predicted = confusion[:, 1:].sum()
    foreground_both = confusion[1:, 1:].sum()
    return {
        "miou": 100 * miou, "background_iou": 100 * float(iou[0]),
        "fg_precision": 100 * foreground_both / max(foreground_predicted, 1),
        "fg_recall": 100 * foreground_both / max(foreground_true, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder (results/<name>)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N inference images")
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    config = load_config(options.run / "config.yaml")
    dataset = open_run_dataset(config)
    infer_ids = shard_plan(config).all_ids("infer")[: options.limit]
    cams = ShardedStore(sorted((options.run / "cam").glob("shard-*.h5")), product="cam")
    irnet = ShardedStore(sorted((options.run / "irnet").glob("shard-*.h5")), product="irnet")
    semantic = ShardedStore(sorted((options.run / "semantic").glob("shard-*.h5")), product="semantic")
    walk = config.random_walk
    eval_threshold, walk_threshold = config.cam.eval_threshold, walk.semantic_bg_threshold
    num_classes = len(dataset.class_names) + 1
    variants: dict[str, np.ndarray] = {}
    stored_equal = 0

    def add(name: str, prediction: np.ndarray, truth: np.ndarray) -> None:
        confusion = evaluation.confusion_matrix(prediction[None], truth[None], num_classes)
        variants[name] = variants.get(name, 0) + confusion

    for image_id in tqdm(infer_ids, desc="images", file=sys.stderr):
        class_ids = np.asarray(dataset.class_labels(image_id))
        if len(class_ids) == 0:
            continue
        truth = dataset.semantic_mask(image_id)
        image_size = truth.shape
        stored = cams.read(image_id, ["cam_s4", "cam_s1", "class_ids"])
        cam_s4, cam_s1 = stored["cam_s4"].astype(np.float32), stored["cam_s1"].astype(np.float32)
        boundary = irnet.read(image_id, ["boundary_s4"])["boundary_s4"].astype(np.float32)
        boundary = boundary.reshape(boundary.shape[-2:])
        for threshold in sorted({eval_threshold, walk_threshold, 0.1, 0.2, 0.3, 0.35}):
            add(f"cam_s1 bg={threshold:g}", cam_labels(cam_s1, class_ids, threshold), truth)
        add(f"cam_s4 no walk bg={walk_threshold:g}",
            labels_from_scores(torch.from_numpy(cam_s4), class_ids, image_size, walk_threshold), truth)
        seeds = cam_s4 * (1 - boundary)[None]
        smoothed = walk_scores(cam_s4, np.zeros_like(boundary), walk.beta, walk.exp_times, walk.radius)
        add(f"walk, boundary 0, bg={walk_threshold:g}", labels_from_scores(smoothed, class_ids, image_size,
                                                                           walk_threshold), truth)
        walked = walk_scores(cam_s4, boundary, walk.beta, walk.exp_times, walk.radius)
        constant = labels_from_scores(walked, class_ids, image_size, walk_threshold)
        walked_background = walked_background_labels(
            cam_s4, boundary, class_ids, image_size, walk_threshold, walk.beta, walk.exp_times, walk.radius
        )
        pipeline = semantic.read(image_id, ["semantic_s1"])["semantic_s1"]
        own_rule = walked_background if walk.background == "walked" else constant
        stored_equal += int(np.array_equal(own_rule, pipeline))
        add(f"walk bg={walk_threshold:g} (reference rule)", constant, truth)
        add(f"walk, walked background {walk_threshold:g}", walked_background, truth)
        add(f"walk, per-class max, bg={walk_threshold:g}",
            labels_from_scores(walked, class_ids, image_size, walk_threshold, per_class=True), truth)
        add(f"seeds x (1 - boundary), no walk, bg={walk_threshold:g}",
            labels_from_scores(torch.from_numpy(seeds), class_ids, image_size, walk_threshold), truth)
        for threshold in (0.15, 0.35, 0.45):
            add(f"walk bg={threshold:g}", labels_from_scores(walked, class_ids, image_size, threshold), truth)
    print(f"{len(infer_ids)} images; labels recomputed with the run's rule (background: {walk.background}) equal "
          f"the stored pseudo labels on {stored_equal}")
    print("| variant | mIoU | background IoU | fg precision | fg recall |\n|---|---|---|---|---|")
    for name, confusion in variants.items():
        row = summarise(confusion)
        print(f"| {name} | {row['miou']:.1f} | {row['background_iou']:.1f} | {row['fg_precision']:.1f} "
              f"| {row['fg_recall']:.1f} |")


if __name__ == "__main__":
    main()
