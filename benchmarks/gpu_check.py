"""The one-go device check: CUDA tests, the random walk on the device, and every stage's throughput.

Run on a GPU machine (sized to fit in 8 min on one H100/H200: an estimate, it has not run on a GPU yet)::

    python benchmarks/gpu_check.py                      # writes benchmarks/gpu_reports/<date>-<device>.{json,md}
    python benchmarks/gpu_check.py --out DIR            # or into DIR
    python benchmarks/gpu_check.py --device cpu --tiny  # the same checks at a tiny size on CPU (~30 s)

What it does, in one process (the tests in a subprocess):

1. the suite's CUDA tests (``pytest -m cuda``), pass / fail / skip counts;
2. ``irn_core.random_walk.propagate`` on the device against the CPU and against the dense reference
   formulation ``propagate_dense`` (on the device, float32, where its memory fits) at VOC map sizes
   94x125 and 125x125, on the maps of ``benchmarks/relations.py``: time, peak device memory, largest
   difference relative to the largest output;
3. per stage (CAM training and multi-scale + flip inference, IRNet training and inference, pseudo labels,
   DeepLab v2 training and 8-way ensemble inference with its CRF, Mask R-CNN training and inference) the
   images per second at the settings of ``config/voc12.yaml`` (ResNet-50, crop 512, the recipes' batch
   sizes) with random backbone weights (``weights: none``: ImageNet weights cannot be fetched everywhere,
   and the speed does not depend on them), through the library's own training functions
   (``train_cam``, ``train_irnet``, ``train_deeplab``, ``train_mask_rcnn``: their data loaders,
   augmentation, losses and optimisers) and inference functions, on synthetic VOC-sized images (375-500 px,
   ``irn_core.data.synthetic``). Warm-up steps / images are left out of the rate. Peak memory is
   ``torch.cuda.max_memory_allocated`` of the stage (not measured on CPU). Every stage runs under each
   precision of ``--precisions`` (float32 and mixed bfloat16 by default).

The ratio printed for a precision is its throughput over float32's, measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:  # run as a script from anywhere: this checkout's irn_core
    sys.path.insert(0, str(REPOSITORY))
from relations import dense_estimate_mib, scene  # noqa: E402  (benchmarks/relations.py, beside this file)

from irn_core.atomic import write_text_atomic  # noqa: E402
from irn_core.cam.infer import multiscale_cams, select_classes  # noqa: E402
from irn_core.cam.train import train_cam  # noqa: E402
from irn_core.config import RunConfig, load_config  # noqa: E402
from irn_core.data.synthetic import SyntheticConfig, SyntheticSample, render_image  # noqa: E402
from irn_core.deeplab.infer import predict_labels  # noqa: E402
from irn_core.deeplab.train import train_deeplab  # noqa: E402
from irn_core.engine.runtime import autocast, configure_runtime  # noqa: E402
from irn_core.engine.training import TrainingRecord  # noqa: E402
from irn_core.irnet.infer import boundary_and_displacement  # noqa: E402
from irn_core.irnet.train import train_irnet  # noqa: E402
from irn_core.maskrcnn.infer import predict_instances  # noqa: E402
from irn_core.maskrcnn.train import GroundTruthInstances, MaskRCNNTrainingDataset, train_mask_rcnn  # noqa: E402
from irn_core.pseudo_labels import semantic_and_instance_labels  # noqa: E402
from irn_core.random_walk import propagate, propagate_dense  # noqa: E402
from irn_core.relations.affinity import boundary_to_affinity  # noqa: E402
from irn_core.relations.path_index import path_index  # noqa: E402
from irn_core.steps.cam import cam_base_scale, cam_train_settings  # noqa: E402
from irn_core.steps.deeplab import crf_settings, deeplab_train_settings  # noqa: E402
from irn_core.steps.irnet import build_irnet, irnet_train_settings  # noqa: E402
from irn_core.steps.maskrcnn import build_maskrcnn_from_config, maskrcnn_train_settings  # noqa: E402

logger = logging.getLogger("gpu_check")

STAGES: tuple[str, ...] = (
    "cam_train", "cam_infer", "irnet_train", "irnet_infer", "pseudo_labels",
    "deeplab_train", "deeplab_infer", "maskrcnn_train", "maskrcnn_infer",
)
VOC_CLASSES = 20
WALK_SIZES = "94x125,125x125"
WALK_CHANNELS = 3

RANDOM_WEIGHTS = {
    "cam": {"backbone": {"weights": "none"}},
    "irnet": {"backbone": {"weights": "none"}, "backbone_init": "weights"},
    "deeplab": {"backbone": {"weights": "none"}},
    "maskrcnn": {"weights": "none"},
}
TINY = {
    "cam": {"backbone": {"name": "resnet18"}, "train": {"batch_size": 2, "crop_size": 64, "resize_long": [64, 96],
                                                       "num_workers": 0}, "infer": {"scales": [1.0, 0.5]}},
    "irnet": {"backbone": {"name": "resnet18"}, "train": {"batch_size": 2, "crop_size": 80, "num_workers": 0},
              "infer": {"pad_to": 96}},
    "deeplab": {"backbone": {"name": "resnet18"}, "train": {"batch_size": 2, "crop_size": 65, "num_workers": 0},
                "infer": {"scales": [0.5, 1.0], "crf": {"iterations": 2}}},
    "maskrcnn": {"backbone": "resnet18_fpn", "min_size": 64, "max_size": 96,
                 "model": {"fpn_channels": 32, "box_head_channels": 64, "mask_head_channels": 16,
                           "rpn": {"pre_nms_top_n_train": 100, "post_nms_top_n_train": 100, "batch_size_per_image": 32},
                           "roi": {"batch_size_per_image": 32}},
                 "train": {"batch_size": 2, "num_workers": 0},
                 "infer": {"rpn_pre_nms_top_n": 100, "rpn_post_nms_top_n": 100, "detections_per_image": 10}},
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of a check: the images, the steps / images timed per stage, the walk's map sizes."""

    image_size_range: tuple[int, int]
    pool: int
    warmup_steps: int
    train_steps: dict[str, int]
    warmup_images: int
    infer_images: int
    infer_seconds: float
    walk_sizes: tuple[tuple[int, int], ...]


FULL_PLAN = Plan(
    image_size_range=(375, 500), pool=16, warmup_steps=3,
    train_steps={"cam_train": 15, "irnet_train": 8, "deeplab_train": 8, "maskrcnn_train": 15},
    warmup_images=2, infer_images=30, infer_seconds=12.0,
    walk_sizes=((94, 125), (125, 125)),
)
TINY_PLAN = Plan(
    image_size_range=(64, 96), pool=4, warmup_steps=1,
    train_steps={"cam_train": 2, "irnet_train": 2, "deeplab_train": 2, "maskrcnn_train": 2},
    warmup_images=1, infer_images=2, infer_seconds=5.0,
    walk_sizes=((16, 20),),
)


# ------------------------------------------------------------------------------------------ the images
class SyntheticPool:
    """A :class:`~irn_core.data.registry.SegmentationDataset` of ``count`` ids cycling over a few rendered
    synthetic images (ids ``"000000"`` ...; image i is sample i mod len(samples)), with ``class_names``
    the 20 VOC classes' count so that the networks have VOC's heads."""

    def __init__(self, samples: Sequence[SyntheticSample], count: int, num_classes: int = VOC_CLASSES) -> None:
        self.samples = list(samples)
        self.count = count
        self.class_names = [f"class_{index}" for index in range(num_classes)]

    def _sample(self, image_id: str) -> SyntheticSample:
        return self.samples[int(image_id) % len(self.samples)]

    def ids(self, split: str) -> list[str]:
        return [f"{index:06d}" for index in range(self.count)]

    def image(self, image_id: str) -> np.ndarray:
        return self._sample(image_id).image

    def image_size(self, image_id: str) -> tuple[int, int]:
        return self._sample(image_id).image.shape[:2]

    def class_labels(self, image_id: str) -> np.ndarray:
        return np.asarray(self._sample(image_id).class_indices, np.int64)

    def semantic_mask(self, image_id: str) -> np.ndarray:
        return self._sample(image_id).class_mask

    def instance_masks(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        sample = self._sample(image_id)
        masks = np.stack([sample.instance_mask == item.instance_id for item in sample.objects])
        return masks, np.asarray([item.class_index for item in sample.objects], np.int64)


def synthetic_pool(plan: Plan, count: int) -> SyntheticPool:
    config = SyntheticConfig(num_train=plan.pool, num_val=0, image_size_range=plan.image_size_range)
    return SyntheticPool([render_image(config, index) for index in range(plan.pool)], count)


# ------------------------------------------------------------------------------------------ measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    """Peak allocated device memory since :func:`reset_peak` (None on CPU: not measured there)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def training_rate(record: TrainingRecord, batch_size: int, warmup_steps: int) -> dict[str, float]:
    """Images per second over the steps after ``warmup_steps`` (from the record's step end times)."""
    ends = record.step_ends
    if len(ends) <= warmup_steps:
        raise RuntimeError(f"{len(ends)} steps recorded, not more than the {warmup_steps} warm-up steps")
    seconds = ends[-1] - ends[warmup_steps - 1] if warmup_steps else ends[-1]
    steps = len(ends) - warmup_steps
    return {"images_per_second": steps * batch_size / seconds, "timed_steps": steps, "timed_seconds": seconds,
            "seconds_per_step": seconds / steps}


def inference_rate(
    run_one: Callable[[str], object], image_ids: Sequence[str], plan: Plan, device: torch.device
) -> dict[str, float]:
    """Images per second of ``run_one`` after ``plan.warmup_images`` images, over at most
    ``plan.infer_images`` images or ``plan.infer_seconds`` seconds."""
    for image_id in image_ids[: plan.warmup_images]:
        run_one(image_id)
    synchronize(device)
    started = time.perf_counter()
    count = 0
    for image_id in image_ids[plan.warmup_images: plan.warmup_images + plan.infer_images]:
        run_one(image_id)
        count += 1
        if time.perf_counter() - started > plan.infer_seconds:
            break
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"images_per_second": count / seconds, "timed_images": count, "timed_seconds": seconds}


# ------------------------------------------------------------------------------------------ the stages
def with_steps(settings: Any, steps: int) -> Any:
    """The stage's training settings, stopped after ``steps`` optimizer steps (the full schedule's rate)."""
    return dataclasses.replace(settings, max_steps=steps, log_every=max(steps, 1))


def stage_measure(
    name: str, function: Callable[[], tuple[dict[str, float], Any]], device: torch.device, precision: str
) -> tuple[dict[str, Any], Any]:
    """Run one stage's measurement; the row of the report and what the stage returns. The precision is
    the config's ``compute.precision`` (the training functions read it from their settings; the
    inference closures run under :func:`~irn_core.engine.runtime.autocast`, as the workflow's steps)."""
    reset_peak(device)
    started = time.perf_counter()
    try:
        rate, result = function()
    except Exception as error:  # one failing stage must not cost the device time of the others
        logger.exception("%s %s failed", name, precision)
        return {"images_per_second": None, "error": f"{type(error).__name__}: {error}"[:1000],
                "peak_memory_mib": peak_mib(device), "wall_seconds": time.perf_counter() - started}, None
    row = {**rate, "peak_memory_mib": peak_mib(device), "wall_seconds": time.perf_counter() - started}
    logger.info("%s %s: %.2f images/s, peak %s MiB", name, precision, row["images_per_second"],
                "n/a" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:.0f}")
    return row, result


def largest_batch(config: RunConfig) -> int:
    return max(config.cam.train.batch_size, config.irnet.train.batch_size,
               config.deeplab.train.batch_size, config.maskrcnn.train.batch_size)


def measure_stages(config: RunConfig, plan: Plan, device: torch.device, dataset: SyntheticPool) -> dict[str, dict]:
    """Every stage of :data:`STAGES` at ``config``'s settings (``compute.precision`` included) on the
    images of ``dataset`` (at least one of the largest batches)."""
    warmup = plan.warmup_steps
    precision = config.compute.precision
    image_ids = dataset.ids("train")
    rows: dict[str, dict] = {}

    cam_settings = with_steps(cam_train_settings(config), warmup + plan.train_steps["cam_train"])

    def cam_training() -> tuple[dict[str, float], Any]:
        model, record = train_cam(dataset, image_ids, cam_settings, device=device)
        return training_rate(record, cam_settings.batch_size, warmup), model

    rows["cam_train"], cam_model = stage_measure("cam_train", cam_training, device, precision)

    def cam_one(image_id: str) -> object:
        image = dataset.image(image_id)
        with autocast(precision, device):
            cam_s4, high_res = multiscale_cams(
                cam_model, image, scales=config.cam.infer.scales, flip=config.cam.infer.flip,
                base_scale=cam_base_scale(config, image.shape[0], image.shape[1]),
            )
        cam_s4, high_res = cam_s4.float(), high_res.float()
        cam_s4, high_res = select_classes(cam_s4, high_res, torch.as_tensor(dataset.class_labels(image_id)))
        return cam_s4.float().cpu().numpy(), high_res.float().cpu().numpy()

    rows["cam_infer"], _ = stage_measure(
        "cam_infer", lambda: (inference_rate(cam_one, image_ids, plan, device), None), device, precision
    )
    del cam_model

    irnet_settings = with_steps(irnet_train_settings(config), warmup + plan.train_steps["irnet_train"])
    irnet_model = build_irnet(config, cam_checkpoint=None, pretrained=True).to(device)

    def irnet_training() -> tuple[dict[str, float], Any]:
        record = train_irnet(irnet_model, dataset, image_ids, dataset.semantic_mask, irnet_settings, device=device)
        return training_rate(record, irnet_settings.batch_size, warmup), None

    rows["irnet_train"], _ = stage_measure("irnet_train", irnet_training, device, precision)
    index = path_index(config.random_walk.radius)

    def irnet_one(image_id: str) -> object:
        with autocast(precision, device):
            boundary, displacement = boundary_and_displacement(
                irnet_model, dataset.image(image_id), pad_to=config.irnet.infer.pad_to
            )
        affinity = boundary_to_affinity(boundary.float()[None], index)[0]
        return boundary.float().cpu().numpy(), displacement.float().cpu().numpy(), affinity.cpu().numpy()

    rows["irnet_infer"], _ = stage_measure(
        "irnet_infer", lambda: (inference_rate(irnet_one, image_ids, plan, device), None), device, precision
    )
    del irnet_model
    rows["pseudo_labels"], _ = stage_measure(
        "pseudo_labels", lambda: (pseudo_label_rate(config, dataset, image_ids, plan, device), None), device, precision
    )

    deeplab_settings = with_steps(deeplab_train_settings(config), warmup + plan.train_steps["deeplab_train"])

    def deeplab_training() -> tuple[dict[str, float], Any]:
        model, record = train_deeplab(dataset, image_ids, dataset.semantic_mask, deeplab_settings, device=device)
        return training_rate(record, deeplab_settings.batch_size, warmup), model

    rows["deeplab_train"], deeplab_model = stage_measure("deeplab_train", deeplab_training, device, precision)
    crf = crf_settings(config)

    def deeplab_one(image_id: str) -> object:
        with autocast(precision, device):
            return predict_labels(deeplab_model, dataset.image(image_id), scales=config.deeplab.infer.scales,
                                  flip=config.deeplab.infer.flip, crf=crf, image_id=image_id)

    rows["deeplab_infer"], _ = stage_measure(
        "deeplab_infer", lambda: (inference_rate(deeplab_one, image_ids, plan, device), None), device, precision
    )
    del deeplab_model

    maskrcnn_settings = with_steps(maskrcnn_train_settings(config), warmup + plan.train_steps["maskrcnn_train"])
    maskrcnn_model = build_maskrcnn_from_config(config, len(dataset.class_names)).to(device)

    def maskrcnn_training() -> tuple[dict[str, float], Any]:
        training_set = MaskRCNNTrainingDataset(
            dataset, image_ids, GroundTruthInstances(dataset), num_classes=len(dataset.class_names),
            seed=config.seed, flip=maskrcnn_settings.flip,
        )
        record = train_mask_rcnn(maskrcnn_model, training_set, maskrcnn_settings, device=device)
        return training_rate(record, maskrcnn_settings.batch_size, warmup), None

    rows["maskrcnn_train"], _ = stage_measure("maskrcnn_train", maskrcnn_training, device, precision)
    maskrcnn_model.eval()

    def maskrcnn_one(image_id: str) -> object:
        with autocast(precision, device):
            return predict_instances(maskrcnn_model, dataset.image(image_id),
                                     mask_threshold=config.maskrcnn.infer.mask_threshold)

    rows["maskrcnn_infer"], _ = stage_measure(
        "maskrcnn_infer", lambda: (inference_rate(maskrcnn_one, image_ids, plan, device), None), device, precision
    )
    return rows


def pseudo_label_rate(
    config: RunConfig, dataset: SyntheticPool, image_ids: Sequence[str], plan: Plan, device: torch.device
) -> dict[str, float]:
    """Semantic + instance pseudo labels (one walk) per image, on maps of ``benchmarks/relations.py``
    at each image's stride-4 size (two instances per class), scores and boundary on ``device``."""
    walk, instances = config.random_walk, config.instances
    inputs: dict[str, dict[str, np.ndarray]] = {}
    for image_id in image_ids[: plan.warmup_images + plan.infer_images]:
        height, width = dataset.image_size(image_id)
        classes = max(len(dataset.class_labels(image_id)), 1)
        inputs[image_id] = scene(math.ceil(height / 4), math.ceil(width / 4), classes, int(image_id))

    def one(image_id: str) -> object:
        maps = inputs[image_id]
        return semantic_and_instance_labels(
            torch.from_numpy(maps["cams"]).to(device), np.arange(len(maps["cams"])),
            torch.from_numpy(maps["boundary"]).to(device), maps["displacement"], dataset.image_size(image_id),
            beta=walk.beta, exp_times=walk.exp_times, radius=walk.radius, bg_threshold=walk.semantic_bg_threshold,
            instance_bg_threshold=walk.instance_bg_threshold, background=walk.background,
            threshold_rule=walk.threshold_rule,
            centroid_iterations=instances.centroid_iterations, cluster_threshold=instances.cluster_threshold,
            min_fragment=instances.min_fragment,
        )

    return inference_rate(one, list(inputs), plan, device)


# ------------------------------------------------------------------------------------------ the walk
def timed(function: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float, float | None]:
    """(result, seconds, peak device MiB) of one call, after one untimed call."""
    function()
    synchronize(device)
    reset_peak(device)
    started = time.perf_counter()
    result = function()
    synchronize(device)
    return result, time.perf_counter() - started, peak_mib(device)


def walk_check(sizes: Sequence[tuple[int, int]], device: torch.device) -> list[dict[str, Any]]:
    """``propagate`` on ``device`` against the CPU and the dense reference (on ``device``, float32, when
    its estimated memory fits in the free device memory, or on CPU below 64x80) at each stride-4 size."""
    rows: list[dict[str, Any]] = []
    for height, width in sizes:
        try:
            rows.append(walk_row(height, width, device))
        except Exception as error:  # e.g. out of device memory: the report says so, the check goes on
            logger.exception("walk %dx%d failed", height, width)
            rows.append({"size": f"{height}x{width}", "error": f"{type(error).__name__}: {error}"[:1000]})
    return rows


def walk_row(height: int, width: int, device: torch.device) -> dict[str, Any]:
    """One map size of :func:`walk_check`."""
    cpu = torch.device("cpu")
    maps = scene(height, width, WALK_CHANNELS, seed=0)
    scores, boundary = torch.from_numpy(maps["cams"]), torch.from_numpy(maps["boundary"])
    on_cpu, cpu_seconds, _ = timed(lambda: propagate(scores, boundary), cpu)
    on_device, device_seconds, device_peak = timed(
        lambda: propagate(scores.to(device), boundary.to(device)), device
    )
    largest = float(on_cpu.abs().max())
    row: dict[str, Any] = {
        "size": f"{height}x{width}", "channels": WALK_CHANNELS,
        "cpu_seconds": cpu_seconds, "device_seconds": device_seconds, "device_peak_mib": device_peak,
        "device_vs_cpu_max_diff_rel": float((on_device.cpu() - on_cpu).abs().max()) / largest,
        "dense_estimate_mib": dense_estimate_mib(height, width),
    }
    free_mib = torch.cuda.mem_get_info(device)[0] / 2**20 if device.type == "cuda" else None
    dense_fits = (free_mib is not None and row["dense_estimate_mib"] < 0.8 * free_mib) or (
        free_mib is None and height * width <= 64 * 80
    )
    if dense_fits:
        dense, dense_seconds, dense_peak = timed(
            lambda: propagate_dense(scores.to(device), boundary.to(device), flush_denormal=device.type == "cpu"),
            device,
        )
        row.update(dense_seconds=dense_seconds, dense_peak_mib=dense_peak,
                   device_vs_dense_max_diff_rel=float((on_device.cpu() - dense.cpu()).abs().max()) / largest,
                   dense_over_sparse_time=dense_seconds / device_seconds)
    else:
        row["dense_note"] = (
            f"skipped: needs about {row['dense_estimate_mib']:.0f} MiB"
            + (f", {free_mib:.0f} MiB free" if free_mib is not None else " (dense on CPU only up to 64x80 here)")
        )
    logger.info("walk %s: %s", row["size"], {key: value for key, value in row.items() if key != "size"})
    return row


# ------------------------------------------------------------------------------------------ the tests
def cuda_test_files() -> list[str]:
    """Test files that hold a ``@pytest.mark.cuda`` test (collecting only them keeps the run short)."""
    return sorted(
        str(path.relative_to(REPOSITORY)) for path in (REPOSITORY / "tests").rglob("test_*.py")
        if "pytest.mark.cuda" in path.read_text(encoding="utf-8")
    )


def run_cuda_tests(directory: Path) -> dict[str, Any]:
    """``pytest -m cuda`` over :func:`cuda_test_files`; counts from its JUnit XML."""
    files = cuda_test_files()
    junit = directory / "cuda-tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", *files]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.exists():
        suite = ElementTree.parse(junit).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        counts = {key: int(suite.get(key, 0)) for key in counts}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"command": "python -m pytest -m cuda " + " ".join(files), "files": files, "returncode": completed.returncode,
            "passed": passed, "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"],
            "seconds": time.perf_counter() - started, "output_tail": completed.stdout[-2000:]}


# ------------------------------------------------------------------------------------------ the report
def nested_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update``'s values, nested mappings updated key by key (neither is changed)."""
    result = dict(base)
    for key, value in update.items():
        both = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = nested_update(result[key], value) if both else value
    return result


def check_config(
    config_path: Path, tiny: bool, device: torch.device, precision: str = "float32", channels_last: bool = False
) -> RunConfig:
    """``config_path`` with random backbone weights (and the tiny sizes), on ``device``, in ``precision``."""
    overrides = nested_update(RANDOM_WEIGHTS, TINY) if tiny else dict(RANDOM_WEIGHTS)
    overrides["compute"] = {"device": device.type, "precision": precision, "channels_last": channels_last}
    return load_config([config_path], overrides)


def environment(device: torch.device) -> dict[str, Any]:
    described: dict[str, Any] = {
        "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "host_cpu": platform.processor(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        described.update(device_name=properties.name, device_memory_mib=properties.total_memory / 2**20,
                         capability=f"{properties.major}.{properties.minor}")
    else:
        described["device_name"] = "cpu"
    return described


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"# Device check {report['date']} on {env['device_name']}", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, config `{report['config']}`"
             + (" (tiny)" if report["tiny"] else "") + f", total {report['total_seconds']:.0f} s"
             + ("." if report.get("complete") else " (INCOMPLETE: the check was cut short or is still running)."), ""]
    tests = report["cuda_tests"]
    lines += [f"CUDA tests (`{tests['command']}`): {tests['passed']} passed, {tests['failed']} failed, "
              f"{tests['skipped']} skipped.", "", "## Random walk", "",
              "| map | CPU | device | device peak | max diff vs CPU | dense (device) | dense peak | max diff vs dense |",
              "|---|---|---|---|---|---|---|---|"]
    for row in report["walk"]:
        if "error" in row:
            lines.append(f"| {row['size']} | failed: {row['error'][:120]} | | | | | | |")
            continue
        peak = "—" if row["device_peak_mib"] is None else f"{row['device_peak_mib']:.0f} MiB"
        if "dense_seconds" in row:
            dense_peak = "—" if row["dense_peak_mib"] is None else f"{row['dense_peak_mib']:.0f} MiB"
            dense = (f"{row['dense_seconds'] * 1e3:.0f} ms", dense_peak, f"{row['device_vs_dense_max_diff_rel']:.1e}")
        else:
            dense = (row["dense_note"], "—", "—")
        lines.append(f"| {row['size']} | {row['cpu_seconds'] * 1e3:.0f} ms | {row['device_seconds'] * 1e3:.0f} ms | "
                     f"{peak} | {row['device_vs_cpu_max_diff_rel']:.1e} | {' | '.join(dense)} |")
    precisions = list(report.get("stages", {}))
    lines += ["", "## Stages (images/s; peak memory)", "",
              "| stage | " + " | ".join(precisions) + " |", "|---|" + "---|" * len(precisions)]
    for stage in STAGES:
        cells = []
        for precision in precisions:
            row = report["stages"][precision].get(stage)
            if row is None or row["images_per_second"] is None:
                cells.append("not run" if row is None else f"failed: {row['error'][:80]}")
                continue
            peak = "" if row["peak_memory_mib"] is None else f"; {row['peak_memory_mib']:.0f} MiB"
            ratio = report["stages"].get("float32", {}).get(stage, {}).get("images_per_second")
            relative = f" ({row['images_per_second'] / ratio:.2f}×)" if ratio and precision != "float32" else ""
            cells.append(f"{row['images_per_second']:.2f}{relative}{peak}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    if report.get("skipped_precisions"):
        lines += ["", f"Not measured (the --budget would have been passed): {', '.join(report['skipped_precisions'])}."]
    lines += ["", "Random backbone weights; synthetic VOC-sized images; warm-up steps and images left out; "
              "(×) = throughput over float32's in this run."]
    return "\n".join(lines) + "\n"


def default_out() -> Path:
    return REPOSITORY / "benchmarks" / "gpu_reports"


def report_stem(date: str, device_name: str) -> str:
    return f"{date}-{re.sub(r'[^A-Za-z0-9]+', '-', device_name).strip('-').lower()}"


def run_check(options: argparse.Namespace, save: Callable[[dict[str, Any], float], dict[str, Any]]) -> dict[str, Any]:
    """Every check of the module docstring; ``save(report, started)`` after each part."""
    started = time.perf_counter()
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    plan = TINY_PLAN if options.tiny else FULL_PLAN
    precisions = [value.strip() for value in options.precisions.split(",") if value.strip()]
    if "float32" not in precisions:
        precisions.insert(0, "float32")
    configs = {precision: check_config(options.config, options.tiny, device, precision, options.channels_last)
               for precision in precisions}
    compute = configs["float32"].compute
    # as every job of the workflow (prepare_runtime): compute.threads, deterministic algorithms as configured
    configure_runtime(threads=options.threads or (1 if device.type == "cpu" else compute.threads),
                      deterministic=compute.deterministic)
    torch.manual_seed(0)
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "config": str(options.config), "tiny": options.tiny, "environment": environment(device),
        "plan": dataclasses.asdict(plan), "precisions": precisions, "channels_last": options.channels_last,
        "deterministic": compute.deterministic, "complete": False,
    }
    with tempfile.TemporaryDirectory() as temporary:
        report["cuda_tests"] = run_cuda_tests(Path(temporary)) if not options.skip_tests else {
            "command": "skipped (--skip-tests)", "files": [], "returncode": None, "passed": 0, "failed": 0,
            "skipped": 0, "seconds": 0.0, "output_tail": ""}
    report["walk"] = walk_check(plan.walk_sizes, device)
    report["stages"] = {}
    last_round = 0.0
    save(report, started)
    # 8 batches an epoch, so that the data loader's restart at each epoch weighs little on the rate
    dataset = synthetic_pool(plan, count=8 * largest_batch(configs["float32"]))
    report["skipped_precisions"] = []
    for precision, config in configs.items():
        round_started = time.perf_counter()
        if report["stages"] and round_started - started + last_round > options.budget:
            logger.warning("%s skipped: another round (%.0f s) would pass the %.0f s budget", precision, last_round,
                           options.budget)
            report["skipped_precisions"].append(precision)
            continue
        report["stages"][precision] = measure_stages(config, plan, device, dataset)
        last_round = time.perf_counter() - round_started
        save(report, started)
    report["complete"] = True
    return save(report, started)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny images, ResNet-18, a few steps (the CPU test)")
    parser.add_argument("--config", type=Path, default=REPOSITORY / "config" / "voc12.yaml")
    parser.add_argument("--precisions", default="float32,bfloat16",
                        help="comma-separated precisions to measure every stage under (float32 always first)")
    parser.add_argument("--channels-last", action="store_true",
                        help="compute.channels_last for every stage (convolutional networks in channels-last format)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch (default: 1 with --device cpu, as the workflow's paired CPU jobs; "
                        "compute.threads of the config otherwise)")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds: a precision whose round (timed like the previous one) would end later is "
                        "skipped and listed in the report (default 480, the 8 minutes of a lent GPU)")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the suite's CUDA tests")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default benchmarks/gpu_reports)")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("irn_core").setLevel(logging.WARNING)
    out = options.out or default_out()
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    def save(report: dict[str, Any], started: float) -> dict[str, Any]:
        """Write the report as it stands (a run cut short by the device's time limit keeps its part)."""
        report["total_seconds"] = time.perf_counter() - started
        name = report["environment"]["device_name"] + ("-tiny" if options.tiny else "")
        stem = out / report_stem(report["date"], name)
        write_text_atomic(stem.with_suffix(".json"), json.dumps(report, indent=1))
        write_text_atomic(stem.with_suffix(".md"), markdown(report))
        paths[:] = [stem]
        return report

    report = run_check(options, save)
    print(markdown(report))
    print(f"report: {paths[0]}.json and .md")

if __name__ == "__main__":
    main()
