"""A small fabricated run folder for the report and status tests: a real (tiny) synthetic dataset,
and every product written with ShardWriter from its ground truth, perturbed per image so that the
images rank differently. Also the downstream products other branches write (DeepLab and Mask
R-CNN predictions, in their announced layouts), metric files and Snakemake benchmark files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from irn_core import evaluation
from irn_core.steps.evaluate import CAM_THRESHOLD_CURVE, CamThresholdCurve
from irn_core.config import RunConfig, load_config, stage_config, stage_hash
from irn_core.data.synthetic import SyntheticConfig, generate
from irn_core.steps.common import ShardPlan, open_run_dataset, shard_plan
from irn_core.store import ShardWriter, shard_file_name

SYNTHETIC = {"seed": 3, "num_train": 6, "num_val": 3, "image_size_range": [64, 80], "objects_per_image": [1, 3]}


@dataclass
class FabricatedRun:
    workdir: Path
    config_path: Path
    config: RunConfig
    plan: ShardPlan

    @property
    def run_dir(self) -> Path:
        return self.workdir / self.config.run_dir


def config_data(workdir: Path) -> dict:
    return {
        "name": "fab",
        "seed": 0,
        "output_dir": str(workdir / "results"),
        "shard_size": 4,
        "dataset": {
            "kind": "synthetic",
            "root": str(workdir / "data"),
            "train_split": "train",
            "infer_split": "train",
            "downstream_split": "train",
            "val_split": "val",
            "synthetic": SYNTHETIC,
        },
        "report": {"random_images": 2},
        "compute": {"device": "cpu", "threads": 1, "progress_every": 2},
    }


def _writer(run: FabricatedRun, directory: str, product: str, shard: int, stage: str) -> ShardWriter:
    return ShardWriter(
        run.run_dir / directory / shard_file_name(shard),
        product=product,
        config_hash=stage_hash(run.config, stage),
        shard_index=shard,
        config=stage_config(run.config, stage),
    )


def _displacement_towards_centres(masks: np.ndarray, size_s4: tuple[int, int]) -> np.ndarray:
    """(2, h, w): every pixel of instance m points at m's centre (stride-4 pixels), background 0."""
    field = np.zeros((2, *size_s4), np.float32)
    y, x = np.mgrid[0 : size_s4[0], 0 : size_s4[1]].astype(np.float32)
    for mask in masks:
        small = mask[::4, ::4][: size_s4[0], : size_s4[1]]
        if not small.any():
            continue
        centre_y, centre_x = y[small].mean(), x[small].mean()
        field[0][small] = centre_y - y[small]
        field[1][small] = centre_x - x[small]
    return field


def _perturbed(semantic: np.ndarray, index: int) -> np.ndarray:
    """The ground truth with a band of image ``index``'s top rows set to background (up to 3/8 of
    the image, more for higher indices), void set to background: the images' mIoUs differ."""
    labels = np.where(semantic == 255, 0, semantic).astype(np.uint8)
    rows = labels.shape[0] * (index % 4) // 8
    labels[:rows] = 0
    return labels


def fabricate(workdir: Path) -> FabricatedRun:
    data = config_data(workdir)
    generate(SyntheticConfig(**SYNTHETIC), workdir / "data", progress=False)
    config_path = workdir / "fab.yaml"
    config_path.write_text(yaml.safe_dump(data))
    config = load_config(config_path)
    run = FabricatedRun(workdir, config_path, config, shard_plan(config))
    dataset = open_run_dataset(config)
    class_names = list(dataset.class_names)
    rng = np.random.default_rng(0)
    for shard in range(len(run.plan)):
        ids = {product: run.plan.product_ids(shard, product) for product in ("cam", "irnet", "maskrcnn")}
        if ids["cam"]:
            with _writer(run, "cam", "cam", shard, "make_cam") as writer:
                for image_id in ids["cam"]:
                    semantic = dataset.semantic_mask(image_id)
                    class_ids = dataset.class_labels(image_id)
                    cam_s1 = np.stack([(semantic == k + 1).astype(np.float32) * 0.9 for k in class_ids]).reshape(
                        len(class_ids), *semantic.shape
                    )
                    cam_s4 = cam_s1[:, ::4, ::4]
                    writer.add(image_id, {"cam_s4": cam_s4, "cam_s1": cam_s1, "class_ids": class_ids},
                               {"height": semantic.shape[0], "width": semantic.shape[1]})
        if ids["irnet"]:
            with (
                _writer(run, "irnet", "irnet", shard, "irn_infer") as irnet,
                _writer(run, "semantic", "semantic", shard, "pseudo_labels") as semantic_writer,
                _writer(run, "instances", "instances", shard, "pseudo_labels") as instance_writer,
            ):
                for image_id in ids["irnet"]:
                    index = int(image_id.split("_")[1])
                    semantic = dataset.semantic_mask(image_id)
                    masks, class_ids = dataset.instance_masks(image_id)
                    size_s4 = (-(-semantic.shape[0] // 4), -(-semantic.shape[1] // 4))
                    edges = np.zeros(size_s4, np.float32)
                    small = semantic[::4, ::4]
                    edges[:-1][small[:-1] != small[1:]] = 1.0
                    irnet.add(image_id, {"boundary_s4": edges,
                                         "displacement_s4": _displacement_towards_centres(masks, size_s4)})
                    semantic_writer.add(image_id, {"semantic_s1": _perturbed(semantic, index)})
                    scores = rng.uniform(0.2, 1.0, len(class_ids)).astype(np.float32)
                    instance_writer.add(image_id, {"masks_s1": masks, "class_ids": class_ids.astype(np.int64),
                                                   "scores": scores})
        if ids["maskrcnn"]:
            with (
                _writer(run, "deeplab_pseudo", "deeplab", shard, "evaluate") as pseudo,
                _writer(run, "deeplab_ground_truth", "deeplab", shard, "evaluate") as truth,
                _writer(run, "maskrcnn", "maskrcnn", shard, "evaluate") as maskrcnn,
            ):
                for image_id in ids["maskrcnn"]:
                    index = int(image_id.split("_")[1])
                    semantic = dataset.semantic_mask(image_id)
                    masks, class_ids = dataset.instance_masks(image_id)
                    pseudo.add(image_id, {"semantic_s1": _perturbed(semantic, index)})
                    truth.add(image_id, {"semantic_s1": np.where(semantic == 255, 0, semantic).astype(np.uint8)})
                    # every ground-truth instance detected (score 0.9), plus one low-score false detection
                    false_mask = np.zeros_like(masks[:1])
                    false_mask[0, :8, :8] = True
                    maskrcnn.add(
                        image_id,
                        {
                            "masks_s1": np.concatenate([masks, false_mask]),
                            "class_ids": np.concatenate([class_ids, [0]]).astype(np.int64),
                            "scores": np.concatenate([np.full(len(class_ids), 0.9), [0.1]]).astype(np.float32),
                        },
                    )
    _write_evaluation(run, class_names)
    _write_benchmarks(run)
    return run


def _write_evaluation(run: FabricatedRun, class_names: list[str]) -> None:
    folder = run.run_dir / "evaluation"
    folder.mkdir(parents=True, exist_ok=True)
    iou = np.linspace(0.9, 0.5, len(class_names) + 1)
    evaluation.write_table(evaluation.semantic_table(iou, class_names), folder / "semantic")
    evaluation.write_table(evaluation.semantic_table(iou - 0.2, class_names), folder / "cam")
    results = {threshold: (np.linspace(0.8, 0.4, len(class_names)) - threshold / 4, 0.5 - threshold / 4)
               for threshold in run.config.evaluation.iou_thresholds}
    evaluation.write_table(evaluation.instance_table(results, class_names), folder / "instances")
    curve = CamThresholdCurve(CAM_THRESHOLD_CURVE, 2)
    curve.add(np.array([[[0.08, 0.22, 0.33, 0.58]]], np.float32), np.array([0]), np.array([[0, 0, 1, 1]], np.uint8))
    evaluation.write_table(curve.table(), folder / "cam_thresholds")
    metrics = {
        "cam": {"mIoU": 0.5, "images": 6, **curve.metrics()},
        "semantic": {"mIoU": 0.7, "images": 6},
        "instances": {"mAP@0.25": 0.6, "mAP@0.5": 0.45, "mAP@0.7": 0.3, "mAP@0.75": 0.25, "mAP_vol": 0.4},
        "deeplab_pseudo": {"mIoU": 0.66},
    }
    for stage, values in metrics.items():
        (folder / f"{stage}.json").write_text(json.dumps(values))
    (folder / "summary.md").write_text("# summary\n")


BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _write_benchmarks(run: FabricatedRun) -> None:
    folder = run.run_dir / "benchmarks"
    (folder / "make_cam").mkdir(parents=True, exist_ok=True)
    (folder / "train_cam.tsv").write_text(
        BENCHMARK_HEADER + "102.5\t0:01:42\t1500.2\t3000\t1400\t1450\t1\t2\t180\t190.1\n"
    )
    for shard, (seconds, rss) in enumerate(((40.0, 800.0), (50.0, 900.5))):
        (folder / "make_cam" / f"{shard:05d}.tsv").write_text(
            BENCHMARK_HEADER + f"{seconds}\t0:00:40\t{rss}\t2000\t700\t750\t1\t2\t150\t60\n"
        )
