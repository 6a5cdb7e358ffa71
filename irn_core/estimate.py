"""Time and disk model of a run: per stage the images, the jobs, the projected time on one and on N
GPUs (or CPUs), and the disk each HDF5 product needs (``irn estimate``).

Images and jobs come from the shard plan the workflow would cut (:func:`irn_core.steps.common.extend_plan`
over the config's splits): with the data present, from its id lists; for ``voc12`` without the data,
from the known split sizes (train_aug 10,582 ⊇ train 1,464; val 1,449, disjoint from both).

Time = images processed / throughput. A training stage processes ``steps × batch_size`` images (its
schedule, :func:`irn_core.engine.training.schedule_length`); an inference stage each of its images
once. Throughputs (images/s per stage) come from a ``benchmarks/gpu_check.py`` report, from the
Snakemake benchmark files of a finished run (``--from-run``: that run's own settings and machine), or
from :data:`DEMO_CPU_THROUGHPUT` (the demo's figures in the README). Per-shard jobs are spread over
N devices longest first (each job on one device); a training job runs on ``compute.training_gpus``
devices (linear scaling assumed). Stages run one after the other, except the downstream models,
which are independent of each other (their trainings, then their inferences, share the N devices).

Disk (:func:`product_disk_bytes`): the uncompressed payload of every dataset of a product, from the
shapes the steps write (see the README's output table). The store compresses with gzip (level 4,
shuffle filter), so files are smaller, by a factor that depends on the content: label maps and
masks shrink many times, CAMs and maps much less; :func:`measured_compression` measures it on a
finished run's files.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irn_core.config import RunConfig, load_config
from irn_core.errors import ConfigError, DatasetError, InputError
from irn_core.relations.path_index import path_index
from irn_core.steps.common import ShardPlan, extend_plan, role_ids, role_splits

logger = logging.getLogger(__name__)

VOC_SPLIT_SIZES: dict[str, int] = {"train": 1464, "val": 1449, "trainval": 2913, "train_aug": 10582}
"""Image counts of the VOC 2012 (+ SBD) splits, used when the data are absent."""

VOC_TYPICAL_IMAGE_SIZE: tuple[int, int] = (375, 500)
"""(height, width) of the most common VOC image (the long side of every VOC image is at most 500)."""

VOC_MEAN_CLASSES = 1.5
"""Classes per VOC image (about 1.5 on the segmentation sets)."""

VOC_MEAN_INSTANCES = 2.38
"""Instances per VOC image: 6,929 objects in the 2,913 images of VOC 2012's segmentation trainval."""

DEMO_CPU_THROUGHPUT: dict[str, float] = {
    "cam_train": 80 * 16 / 85,       # 80 steps of 16 crops (8 epochs of 160 images) in 85 s
    "cam_infer": 160 / (92 + 87),    # two shards of 80 images, 92 s and 87 s
    "ir_labels": 160 / (22 + 23),
    "irnet_train": 80 * 16 / 154,    # 80 steps of 16 crops in 154 s
    "irnet_infer": 160 / (25 + 24),
    "pseudo_labels": 160 / (17 + 18),
    "deeplab_train": 130 * 8 / 118,  # 130 steps of 8 crops in 118 s (pseudo labels; 111 s on ground truth)
    "deeplab_infer": 40 / 54,        # 40 val images, 8-way ensemble + CRF, 54 s (51 s)
    "maskrcnn_train": 360 * 4 / 242,  # 360 steps of 4 images in 242 s
    "maskrcnn_infer": 40 / 9,
}
"""Images per second of each stage in the README's 16 min 54 s `make demo` (Snakemake's benchmark
files; 2 AMD EPYC cores with AVX-512, one thread per job of a pair). These are the demo's settings:
EfficientNet-Lite0, 256-320 px images, 224-256 px crops; the paper's ResNet-50 at 512 px crops is
many times slower per image on a CPU, so CPU projections from these figures are lower bounds."""


@dataclass(frozen=True)
class Stage:
    """A rule of the workflow as the model sees it."""

    name: str
    throughput_key: str
    """Stage name in a gpu_check report and in :data:`DEMO_CPU_THROUGHPUT`."""
    product: str | None = None
    """Per-shard product whose shards are the jobs (None: one training job)."""
    phase: str = ""
    """Stages of one phase are independent and share the devices (default: the stage alone)."""


PIPELINE: tuple[Stage, ...] = (
    Stage("train_cam", "cam_train"),
    Stage("make_cam", "cam_infer", product="cam"),
    Stage("ir_labels", "ir_labels", product="ir_labels"),
    Stage("train_irnet", "irnet_train"),
    Stage("irnet_infer", "irnet_infer", product="irnet"),
    Stage("pseudo_labels", "pseudo_labels", product="semantic"),
)
DOWNSTREAM: tuple[Stage, ...] = (
    Stage("train_deeplab_pseudo", "deeplab_train", phase="downstream training"),
    Stage("train_deeplab_ground_truth", "deeplab_train", phase="downstream training"),
    Stage("train_maskrcnn", "maskrcnn_train", phase="downstream training"),
    Stage("deeplab_infer_pseudo", "deeplab_infer", product="val", phase="downstream inference"),
    Stage("deeplab_infer_ground_truth", "deeplab_infer", product="val", phase="downstream inference"),
    Stage("maskrcnn_infer", "maskrcnn_infer", product="val", phase="downstream inference"),
)

# ---------------------------------------------------------------------------------------------- images


def voc_placeholder_ids(split: str) -> list[str]:
    """Stand-in ids of a VOC split with the real splits' sizes and overlaps (train_aug = train + 9,118
    SBD images; trainval = train + val)."""
    if split not in VOC_SPLIT_SIZES:
        raise ConfigError(f"voc12 split {split!r} has no known size without the data (known: {sorted(VOC_SPLIT_SIZES)})")
    train = [f"train_{index:05d}" for index in range(VOC_SPLIT_SIZES["train"])]
    val = [f"val_{index:05d}" for index in range(VOC_SPLIT_SIZES["val"])]
    extra = [f"sbd_{index:05d}" for index in range(VOC_SPLIT_SIZES["train_aug"] - len(train))]
    return {"train": train, "val": val, "trainval": train + val, "train_aug": train + extra}[split]


def estimate_role_ids(config: RunConfig) -> tuple[dict[str, list[str]], str]:
    """The ids of every role and where they came from (the data's split lists, or VOC's known sizes)."""
    try:
        return role_ids(config), "the dataset's split lists"
    except (DatasetError, InputError, FileNotFoundError) as error:
        if config.dataset.kind != "voc12":
            raise ConfigError(
                f"cannot count the images of dataset kind {config.dataset.kind!r} without its data: {error}"
            ) from None
    ids = {role: voc_placeholder_ids(split) if split else [] for role, split in role_splits(config).items()}
    return ids, "VOC 2012's known split sizes (data absent)"


def estimate_plan(config: RunConfig) -> tuple[ShardPlan, str]:
    """The shard plan a fresh run of ``config`` would cut, and where its ids came from."""
    ids, source = estimate_role_ids(config)
    return extend_plan(None, ids, config.shard_size), source


def shard_sizes(plan: ShardPlan, product: str) -> list[int]:
    """Images of each job of a per-shard ``product`` (``val``: the downstream predictions)."""
    if product == "val":
        return [len(plan.ids(index, "val")) for index in range(len(plan)) if plan.ids(index, "val")]
    return [len(plan.product_ids(index, product)) for index in plan.product_shards(product)]


def training_images(config: RunConfig, stage: Stage, plan: ShardPlan) -> tuple[int, int]:
    """(training images, images processed = steps × batch) of a training stage."""
    from irn_core.engine.training import schedule_length

    if stage.name == "train_cam":
        section, images = config.cam.train, len(plan.train_ids)
    elif stage.name == "train_irnet":
        section, images = config.irnet.train, len(plan.train_ids)
    elif stage.name.startswith("train_deeplab"):
        section, images = config.deeplab.train, len(plan.downstream_ids)
    else:
        section, images = config.maskrcnn.train, len(plan.downstream_ids)
    steps = schedule_length(images, section.batch_size, epochs=section.epochs, steps=section.steps,
                            min_steps=section.min_steps)
    return images, steps * section.batch_size


# ---------------------------------------------------------------------------------------------- time


def spread(job_seconds: Sequence[float], devices: int) -> float:
    """Wall time of independent jobs on ``devices`` devices, longest job first to the least busy device."""
    if devices < 1:
        raise InputError(f"need at least one device, got {devices}")
    loads = [0.0] * min(devices, max(len(job_seconds), 1))
    for seconds in sorted(job_seconds, reverse=True):
        heapq.heapreplace(loads, loads[0] + seconds)
    return max(loads)


@dataclass
class StageEstimate:
    name: str
    images: int
    """Distinct images of the stage."""
    processed: int
    """Images processed: steps × batch size for training, ``images`` for inference."""
    jobs: int
    throughput: float | None
    throughput_source: str
    job_seconds: list[float] = field(default_factory=list)
    phase: str = ""

    @property
    def seconds(self) -> float | None:
        return sum(self.job_seconds) if self.throughput else None


@dataclass
class Estimate:
    config_name: str
    ids_source: str
    throughput_source: str
    stages: list[StageEstimate]
    disk_bytes: dict[str, int]
    disk_images: dict[str, int]
    disk_assumptions: dict[str, Any]
    compression: dict[str, float] = field(default_factory=dict)
    model_check: dict[str, dict[str, float]] = field(default_factory=dict)
    """:func:`disk_model_check` on the ``--from-run`` run (empty without one)."""
    notes: list[str] = field(default_factory=list)

    def stage_seconds(self, stage: StageEstimate, devices: int) -> float | None:
        if stage.throughput is None:
            return None
        return spread(stage.job_seconds, devices)

    def total_seconds(self, devices: int) -> float | None:
        """Stages one after the other; the stages of a phase share the devices."""
        phases: dict[str, list[float]] = {}
        total = 0.0
        for stage in self.stages:
            if stage.throughput is None:
                return None
            if stage.phase:
                phases.setdefault(stage.phase, []).extend(stage.job_seconds)
            else:
                total += spread(stage.job_seconds, devices)
        return total + sum(spread(jobs, devices) for jobs in phases.values())


def stages_of(config: RunConfig) -> list[Stage]:
    stages = list(PIPELINE)
    if config.dataset.downstream_split is not None:
        stages += [stage for stage in DOWNSTREAM
                   if (config.deeplab.enabled if "deeplab" in stage.name else config.maskrcnn.enabled)]
    return stages


def estimate_stages(
    config: RunConfig, plan: ShardPlan, throughputs: Mapping[str, tuple[float, str]]
) -> list[StageEstimate]:
    """Per stage its images, jobs and job times at ``throughputs`` (key -> (images/s, source))."""
    results = []
    training_devices = max(config.compute.training_gpus, 1)
    for stage in stages_of(config):
        throughput, source = throughputs.get(stage.throughput_key, (None, "not measured"))
        if stage.product is None:
            images, processed = training_images(config, stage, plan)
            sizes = [processed]
            divisor = training_devices
        else:
            sizes = shard_sizes(plan, stage.product)
            images = processed = sum(sizes)
            divisor = 1
        job_seconds = [size / throughput / divisor for size in sizes] if throughput else []
        results.append(StageEstimate(stage.name, images, processed, len(sizes), throughput, source, job_seconds,
                                     stage.phase))
    return results


# ---------------------------------------------------------------------------------------------- throughputs


def report_throughputs(report: Mapping[str, Any], precision: str) -> dict[str, tuple[float, str]]:
    """Images/s per stage from a ``benchmarks/gpu_check.py`` report (``precision``, else float32)."""
    stages = report.get("stages", {})
    chosen = precision if precision in stages else "float32"
    if chosen not in stages:
        raise InputError(f"the throughput report has no {precision!r} or float32 measurements")
    device = report.get("environment", {}).get("device_name", "?")
    source = f"{device}, {chosen}, {report.get('date', '?')}" + (" (tiny)" if report.get("tiny") else "")
    return {key: (float(row["images_per_second"]), source) for key, row in stages[chosen].items()}


def demo_throughputs() -> dict[str, tuple[float, str]]:
    return {key: (value, "README demo (CPU)") for key, value in DEMO_CPU_THROUGHPUT.items()}


def benchmark_seconds(path: Path) -> float:
    """Wall seconds of a Snakemake benchmark file (first column ``s`` of its second line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 2 or not lines[0].startswith("s"):
        raise InputError(f"{path}: not a Snakemake benchmark file")
    return float(lines[1].split("\t")[0])


def run_throughputs(run_dir: Path) -> dict[str, tuple[float, str]]:
    """Images/s per stage measured by a finished run: its benchmark files, its config and shard plan."""
    config = load_config(run_dir / "config.yaml")
    plan_file = run_dir / "shards.json"
    if not plan_file.exists():
        raise InputError(f"{plan_file}: no shard plan; is {run_dir} a run folder?")
    plan = ShardPlan.from_json(plan_file.read_text(encoding="utf-8"), source=str(plan_file))
    benchmarks = run_dir / "benchmarks"
    totals: dict[str, list[float]] = {}
    for stage in stages_of(config):
        if stage.product is None:
            files = [benchmarks / f"{stage.name}.tsv"]
            processed = [training_images(config, stage, plan)[1]]
        else:
            shards = (list(range(len(plan))) if stage.product == "val" else plan.product_shards(stage.product))
            files, processed = [], []
            for index in shards:
                ids = plan.ids(index, "val") if stage.product == "val" else plan.product_ids(index, stage.product)
                if ids:
                    files.append(benchmarks / stage.name / f"{index:05d}.tsv")
                    processed.append(len(ids))
        present = [(path, count) for path, count in zip(files, processed, strict=True) if path.exists()]
        if not present:
            continue
        seconds = sum(benchmark_seconds(path) for path, _ in present)
        entry = totals.setdefault(stage.throughput_key, [0.0, 0.0])
        entry[0] += sum(count for _, count in present)
        entry[1] += seconds
    if not totals:
        raise InputError(f"{benchmarks}: no benchmark files of a finished run")
    return {key: (images / seconds, f"run {run_dir}") for key, (images, seconds) in totals.items() if seconds > 0}


# ---------------------------------------------------------------------------------------------- disk


def strided_side(side: float) -> float:
    """ceil(side / 4) of an image side; for a mean over images (not a whole number), side / 4 + 3/8,
    the mean of ceil(side / 4) over sides spread evenly over the four remainders modulo 4."""
    return math.ceil(side / 4) if float(side).is_integer() else side / 4 + 0.375


def product_disk_bytes(
    config: RunConfig,
    num_images: int | Mapping[str, int],
    mean_image_size: tuple[float, float],
    mean_classes: float,
    mean_instances: float,
    *,
    mean_detections: float | None = None,
) -> dict[str, int]:
    """Uncompressed bytes of every HDF5 product of a run (the arrays' payload, without HDF5's metadata).

    ``num_images``: images per product (a mapping product -> count, or one count for all);
    ``mean_image_size``: mean (H, W) in pixels; ``mean_classes``: classes per image (K);
    ``mean_instances``: instance pseudo labels per image (N); ``mean_detections``: Mask R-CNN detections
    per image (default: ``maskrcnn.infer.detections_per_image``, an upper bound).

    Per image, with h, w = ceil(H/4), ceil(W/4) (see :func:`strided_side` for mean sizes): ``cam`` = K·h·w + K·H·W floats (2 bytes each under
    ``cam.infer.float16``, else 4) + K int64 class ids; ``ir_labels``, ``semantic``, ``deeplab_pseudo``,
    ``deeplab_ground_truth`` = H·W uint8 (``semantic`` + H·W bool under ``random_walk.uncertain_band``); ``irnet`` = boundary h·w float32 + displacement 2·h·w float32
    + affinity D·h·w float16 (D = 34 directions at radius 5) + the (D, 2) int64 directions;
    ``instances`` = N·H·W bool (one byte each) + N int64 class ids + N float32 scores; ``maskrcnn``
    the same with the detections. The store gzip-compresses every dataset: files are smaller (see
    :func:`measured_compression`).
    """
    height, width = (float(value) for value in mean_image_size)
    if height <= 0 or width <= 0 or mean_classes < 0 or mean_instances < 0:
        raise InputError(f"need a positive image size and non-negative counts, got {mean_image_size}, "
                         f"{mean_classes}, {mean_instances}")
    pixels = height * width
    strided = strided_side(height) * strided_side(width)
    cam_float = 2 if config.cam_float16 else 4
    directions = len(path_index(config.random_walk.radius).directions)
    detections = config.maskrcnn.infer.detections_per_image if mean_detections is None else mean_detections
    per_image = {
        "cam": mean_classes * (strided + pixels) * cam_float + 8 * mean_classes,
        "ir_labels": pixels,
        "irnet": strided * (4 + 8 + 2 * directions) + directions * 2 * 8,
        "semantic": pixels * (1 if config.random_walk.uncertain_band is None else 2),
        "instances": mean_instances * (pixels + 8 + 4),
        "deeplab_pseudo": pixels,
        "deeplab_ground_truth": pixels,
        "maskrcnn": detections * (pixels + 8 + 4),
    }
    counts = num_images if isinstance(num_images, Mapping) else dict.fromkeys(per_image, num_images)
    return {product: int(round(per_image[product] * counts[product])) for product in per_image if product in counts}


def product_images(plan: ShardPlan, config: RunConfig) -> dict[str, int]:
    """How many images each product of a run of ``plan`` holds."""
    counts = {product: sum(shard_sizes(plan, product)) for product in ("cam", "ir_labels", "irnet", "semantic",
                                                                       "instances")}
    if config.dataset.downstream_split is not None:
        if config.deeplab.enabled:
            counts["deeplab_pseudo"] = counts["deeplab_ground_truth"] = len(plan.val_ids)
        if config.maskrcnn.enabled:
            counts["maskrcnn"] = len(plan.val_ids)
    return counts


PRODUCT_FOLDERS: tuple[str, ...] = ("cam", "ir_labels", "irnet", "semantic", "instances", "deeplab_pseudo",
                                    "deeplab_ground_truth", "maskrcnn")
"""The HDF5 products of a run, each a folder of shard files under ``results/<name>/``."""


@dataclass
class ProductFiles:
    """What a product's shard files of a finished run hold."""

    images: int
    payload: int
    """Uncompressed bytes of every dataset."""
    file_bytes: int
    """Bytes of the files on disk."""
    instances: int = 0
    """Masks in ``masks_s1`` (instances, detections) or classes in ``class_ids`` (CAMs)."""
    pixels: int = 0
    """Sum of H·W of the images."""
    heights: int = 0
    widths: int = 0


def measure_product_files(paths: Sequence[Path]) -> ProductFiles:
    """Images, uncompressed payload and file bytes of a product's shard files, and the counts the
    disk model takes (classes or instances per image, image sizes)."""
    from irn_core.store import ShardReader

    measured = ProductFiles(0, 0, 0)
    for path in paths:
        measured.file_bytes += os.path.getsize(path)
        with ShardReader(path) as reader:
            for image_id in reader:
                arrays = reader.read(image_id)
                attributes = reader.attributes(image_id)
                measured.images += 1
                measured.payload += sum(int(array.nbytes) for array in arrays.values())
                counted = arrays.get("masks_s1", arrays.get("class_ids"))
                measured.instances += 0 if counted is None else len(counted)
                height, width = int(attributes["height"]), int(attributes["width"])
                measured.heights += height
                measured.widths += width
                measured.pixels += height * width
    return measured


def measure_run_products(run_dir: Path) -> dict[str, ProductFiles]:
    """:func:`measure_product_files` of every product folder of a run that has shard files."""
    return {product: measure_product_files(sorted((run_dir / product).glob("shard-*.h5")))
            for product in PRODUCT_FOLDERS if any((run_dir / product).glob("shard-*.h5"))}


def measured_compression(run_dir: Path) -> dict[str, float]:
    """File bytes over uncompressed payload, per product of a finished run."""
    return {product: files.file_bytes / files.payload
            for product, files in measure_run_products(run_dir).items() if files.payload}


def disk_model_check(config: RunConfig, measured: Mapping[str, ProductFiles]) -> dict[str, dict[str, float]]:
    """:func:`product_disk_bytes` at a run's own counts and means, against its files: per product the
    predicted bytes, the actual payload and file bytes. The model takes means, so it differs from the
    payload where images of different sizes hold different numbers of classes or instances."""
    if not measured:
        return {}
    cam = measured.get("cam") or next(iter(measured.values()))
    size = (cam.heights / cam.images, cam.widths / cam.images)
    mean = {product: files.instances / files.images for product, files in measured.items() if files.images}
    predicted = product_disk_bytes(
        config, {product: files.images for product, files in measured.items()}, size, mean.get("cam", 0.0),
        mean.get("instances", 0.0), mean_detections=mean.get("maskrcnn", 0.0),
    )
    return {product: {"predicted": predicted[product], "payload": files.payload, "file_bytes": files.file_bytes}
            for product, files in measured.items()}


# ---------------------------------------------------------------------------------------------- together


def dataset_means(config: RunConfig, ids_source: str, plan: ShardPlan, sample: int = 200) -> dict[str, Any]:
    """Mean image size, classes and instances: measured on up to ``sample`` images when the data are
    present, else VOC's typical figures."""
    if ids_source.startswith("VOC"):
        return {"mean_image_size": VOC_TYPICAL_IMAGE_SIZE, "mean_classes": VOC_MEAN_CLASSES,
                "mean_instances": VOC_MEAN_INSTANCES, "source": "VOC figures (typical 375x500 image, "
                f"{VOC_MEAN_CLASSES} classes and {VOC_MEAN_INSTANCES} instances per image)"}
    ids = sorted(plan.infer_ids | plan.train_ids)
    chosen = ids[:: max(len(ids) // sample, 1)][:sample]
    if config.dataset.kind == "synthetic" and config.dataset.synthetic is not None:
        from irn_core.data import synthetic

        rendered = [synthetic.render_image(config.dataset.synthetic, synthetic.index_of(image_id))
                    for image_id in chosen[:40]]
        sizes = [sample_.image.shape[:2] for sample_ in rendered]
        classes = [len(sample_.class_indices) for sample_ in rendered]
        instances = [len(sample_.objects) for sample_ in rendered]
        source = f"{len(rendered)} synthetic images rendered from the config"
    else:
        from irn_core.steps.common import open_run_dataset

        dataset = open_run_dataset(config)
        sizes = [dataset.image_size(image_id) for image_id in chosen]
        classes = [len(dataset.class_labels(image_id)) for image_id in chosen]
        instances = [len(dataset.instance_masks(image_id)[1]) for image_id in chosen]
        source = f"measured on {len(chosen)} images of the dataset (ground-truth instances)"
    count = len(sizes)
    return {"mean_image_size": (sum(size[0] for size in sizes) / count, sum(size[1] for size in sizes) / count),
            "mean_classes": sum(classes) / count, "mean_instances": sum(instances) / count, "source": source}


def estimate(
    config: RunConfig,
    *,
    throughput_report: Mapping[str, Any] | None = None,
    from_run: Path | None = None,
) -> Estimate:
    """The time and disk estimate of ``config``: throughputs from a gpu_check report, else from a
    finished run's benchmark files, else the demo's CPU figures."""
    plan, ids_source = estimate_plan(config)
    if throughput_report is not None:
        throughputs = report_throughputs(throughput_report, config.compute.precision)
        # stages the device check does not measure (the CRF of the confident-region labels runs on CPU)
        for key, value in (run_throughputs(from_run) if from_run else demo_throughputs()).items():
            throughputs.setdefault(key, value)
        source = next(iter(throughputs.values()))[1]
    elif from_run is not None:
        throughputs, source = run_throughputs(from_run), f"the benchmark files of {from_run} (CPU)"
        for key, value in demo_throughputs().items():
            throughputs.setdefault(key, value)
    else:
        throughputs, source = demo_throughputs(), "the README demo's CPU job times (built-in defaults)"
    means = dataset_means(config, ids_source, plan)
    counts = product_images(plan, config)
    disk = product_disk_bytes(config, counts, means["mean_image_size"], means["mean_classes"],
                              means["mean_instances"])
    assumptions = {**means, "mean_detections": config.maskrcnn.infer.detections_per_image}
    result = Estimate(config.name, ids_source, source, estimate_stages(config, plan, throughputs), disk, counts,
                      assumptions)
    if any(stage.throughput_source == "README demo (CPU)" for stage in result.stages):
        result.notes.append(
            "README demo (CPU): images/s of the demo's jobs on 2 CPU cores at the demo's settings (EfficientNet-Lite0, "
            "256-320 px images); at other settings (the paper's ResNet-50, 512 px crops) a CPU is many times slower "
            "per image, so these times are lower bounds. benchmarks/gpu_check.py measures a device at the "
            "config/voc12.yaml settings (--throughput REPORT.json)."
        )
    if throughput_report is not None and throughput_report.get("tiny"):
        result.notes.append("the throughput report is a --tiny check (small images and networks), not these settings")
    if from_run is not None:
        measured = measure_run_products(from_run)
        result.compression = {product: files.file_bytes / files.payload
                              for product, files in measured.items() if files.payload}
        result.model_check = disk_model_check(load_config(from_run / "config.yaml"), measured)
    return result


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def size_text(count: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} B"


def format_estimate(result: Estimate, devices: int) -> str:
    """The tables ``irn estimate`` prints."""
    lines = [f"run {result.config_name!r}: images from {result.ids_source}; throughputs from {result.throughput_source}",
             "", f"| stage | images | processed | jobs | images/s | 1 device | {devices} devices (SLURM) | source |",
             "|---|---|---|---|---|---|---|---|"]
    for stage in result.stages:
        rate = f"{stage.throughput:.2f}" if stage.throughput else "—"
        lines.append(f"| {stage.name} | {stage.images:,} | {stage.processed:,} | {stage.jobs} | {rate} | "
                     f"{duration(result.stage_seconds(stage, 1))} | {duration(result.stage_seconds(stage, devices))} | "
                     f"{stage.throughput_source} |")
    lines.append(f"| total | | | {sum(stage.jobs for stage in result.stages)} | | "
                 f"{duration(result.total_seconds(1))} | {duration(result.total_seconds(devices))} | |")
    lines += [""] + [f"Note: {note}" for note in result.notes] if result.notes else []
    lines.append("Per-shard jobs spread over the devices longest first; a training job uses compute.training_gpus "
                 "devices; the downstream models train (then infer) side by side; evaluation and report jobs "
                 "are not counted.")
    means = result.disk_assumptions
    height, width = means["mean_image_size"]
    lines += ["", f"Disk per HDF5 product, uncompressed payload ({means['source']}; mean image {height:.0f}x{width:.0f}; "
              f"Mask R-CNN: at most {means['mean_detections']} detections per image). The store gzip-compresses "
              "every dataset, so the files are smaller"
              + (" (compressed column: the ratio measured on the run given with --from-run)." if result.compression
                 else "; --from-run RUN measures the ratio on a finished run."),
              "", "| product | images | uncompressed" + (" | compressed (ratio) |" if result.compression else " |"),
              "|---|---|---|" + ("---|" if result.compression else "")]
    for product, count in result.disk_bytes.items():
        row = f"| {product} | {result.disk_images[product]:,} | {size_text(count)} |"
        if result.compression:
            ratio = result.compression.get(product)
            row += f" {size_text(count * ratio)} ({ratio:.3f}) |" if ratio else " — |"
        lines.append(row)
    total = sum(result.disk_bytes.values())
    lines.append(f"| total | | {size_text(total)} |" + (
        f" {size_text(sum(count * result.compression.get(product, 1.0) for product, count in result.disk_bytes.items()))} |"
        if result.compression else ""))
    if result.model_check:
        lines += ["", "The disk model against the --from-run run's files (at that run's own image counts and mean "
                  "sizes, classes, instances and detections):", "",
                  "| product | predicted | payload | predicted / payload | files | files / payload |",
                  "|---|---|---|---|---|---|"]
        for product, row in result.model_check.items():
            lines.append(f"| {product} | {size_text(row['predicted'])} | {size_text(row['payload'])} | "
                         f"{row['predicted'] / row['payload']:.3f} | {size_text(row['file_bytes'])} | "
                         f"{row['file_bytes'] / row['payload']:.3f} |")
    return "\n".join(lines)
