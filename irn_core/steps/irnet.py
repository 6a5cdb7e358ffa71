"""Entry points of the confident-region labels and of IRNet: labels, training, per-shard inference."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from irn_core.config import RunConfig
from irn_core.diagnostics import (
    boundary_statistics,
    boundary_warnings,
    displacement_progress,
    displacement_statistics,
    displacement_warnings,
    ir_label_statistics,
    ir_label_warnings,
    mean_statistics,
    training_warnings,
)
from irn_core.data.registry import SegmentationDataset
from irn_core.engine.checkpoint import load_checkpoint, save_checkpoint
from irn_core.engine.runtime import autocast, to_memory_format
from irn_core.engine.training import TrainingRecord
from irn_core.errors import DatasetError, IrnError
from irn_core.ir_labels import confident_region_labels
from irn_core.irnet.infer import boundary_and_displacement
from irn_core.irnet.train import IRNetTrainSettings, measure_displacement_mean, train_irnet
from irn_core.models.backbones import build_backbone
from irn_core.models.irnet import IRNet
from irn_core.progress import track
from irn_core.relations.affinity import boundary_to_affinity
from irn_core.relations.path_index import path_index
from irn_core.steps.common import (
    open_run_dataset,
    prepare_runtime,
    readable_ids,
    shard_plan,
    skip_or_raise,
    split_ids,
    stage_metadata,
    training_process,
)
from irn_core.steps.reporting import report, write_loss_curves
from irn_core.store import ShardedStore, ShardReader, ShardWriter

logger = logging.getLogger(__name__)


def run_ir_labels(config: RunConfig, shard_index: int, cam_path: Path, output: Path) -> None:
    """Confident-region labels (``ir_label_s1``, uint8 {0, k+1, 255}) of the shard's training images."""
    prepare_runtime(config)
    dataset = open_run_dataset(config)
    image_ids = shard_plan(config).product_ids(shard_index, "ir_labels")
    settings = config.ir_labels
    crf = settings.crf.model_dump()  # iterations, gt_prob, gaussian_*, bilateral_*
    stage_hash, stage_config = stage_metadata(config, "ir_labels")
    per_image: list[dict[str, float]] = []
    with ShardReader(cam_path, product="cam") as cams, ShardWriter(
        output, product="ir_labels", config_hash=stage_hash, shard_index=shard_index, config=stage_config
    ) as writer:
        for image_id in track(
            image_ids, description=f"ir labels shard {shard_index}", logger=logger, every=config.compute.progress_every
        ):
            if image_id in cams.skipped:
                writer.skip(image_id, f"skipped in {cam_path}: {cams.skipped[image_id]}")
                continue
            try:
                image = dataset.image(image_id)
            except DatasetError as error:
                skip_or_raise(config, image_id, error, writer.skipped_ids)
                continue
            stored = cams.read(image_id, ["cam_s1", "class_ids"])
            if len(stored["class_ids"]) == 0:
                # no foreground class: every pixel is confidently background
                labels = np.zeros(image.shape[:2], np.uint8)
            else:
                labels = confident_region_labels(
                    image,
                    stored["cam_s1"].astype(np.float32),
                    stored["class_ids"],
                    fg_threshold=settings.fg_threshold,
                    bg_threshold=settings.bg_threshold,
                    fg_threshold_rule=settings.fg_threshold_rule,
                    image_id=image_id,
                    **crf,
                )
            writer.add(image_id, {"ir_label_s1": labels}, {"height": image.shape[0], "width": image.shape[1]})
            per_image.append(ir_label_statistics(labels, _ground_truth(dataset, image_id)))
    statistics = mean_statistics(per_image)
    report(f"ir_labels shard {shard_index}", output, statistics, ir_label_warnings(statistics))


def _ground_truth(dataset: SegmentationDataset, image_id: str) -> np.ndarray | None:
    """The image's semantic ground truth where the dataset has one, else None (diagnostics only)."""
    try:
        return dataset.semantic_mask(image_id)
    except (IrnError, OSError):  # e.g. a VOC id outside the segmentation lists: no mask file
        return None


def irnet_train_settings(config: RunConfig) -> IRNetTrainSettings:
    train = config.irnet.train
    optimizer = train.optimizer
    return IRNetTrainSettings(
        batch_size=train.batch_size,
        epochs=train.epochs,
        steps=train.steps,
        min_steps=train.min_steps,
        crop_size=train.crop_size,
        scale_range=train.scale_range,
        radius=train.radius,
        learning_rate=optimizer.learning_rate,
        head_lr_multiplier=optimizer.head_lr_multiplier,
        weight_decay=optimizer.weight_decay,
        momentum=config.momentum(optimizer),
        poly_power=optimizer.poly_power,
        num_workers=train.num_workers,
        seed=config.seed,
        displacement_mean_batches=train.displacement_mean_batches,
        displacement_bg_weight=config.displacement_bg_weight(),
        precision=config.compute.precision,
        channels_last=config.compute.channels_last,
    )


def build_irnet(config: RunConfig, *, cam_checkpoint: Path | None, pretrained: bool) -> IRNet:
    """IRNet with a fresh backbone (``backbone.weights``) or the CAM network's trained backbone."""
    backbone_config = config.irnet.backbone
    use_cam = config.irnet.backbone_init == "cam"
    weights = backbone_config.weights if pretrained and not use_cam else "none"
    backbone = build_backbone(backbone_config.name, weights=weights, frozen_batchnorm=backbone_config.frozen_batchnorm)
    if use_cam and pretrained:
        if cam_checkpoint is None:
            raise ValueError("irnet.backbone_init 'cam' needs the CAM checkpoint")
        if config.cam.backbone.name != backbone_config.name:
            raise ValueError(
                f"irnet.backbone_init 'cam' needs the same backbone, got cam {config.cam.backbone.name!r} "
                f"and irnet {backbone_config.name!r}"
            )
        state = load_checkpoint(cam_checkpoint, kind="cam")["model"]
        prefix = "backbone."
        backbone.load_state_dict({key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)})
    return IRNet(backbone)


def run_train_irnet(
    config: RunConfig,
    ir_label_paths: Sequence[Path],
    output: Path,
    *,
    cam_checkpoint: Path | None = None,
    max_steps: int | None = None,
) -> None:
    """Train IRNet's heads on the confident-region labels, measure the displacement mean, save ``output``."""
    with training_process(config) as (context, device):
        dataset = open_run_dataset(config)
        image_ids = split_ids(config, config.dataset.train_split)
        torch.manual_seed(config.seed)
        model = build_irnet(config, cam_checkpoint=cam_checkpoint, pretrained=True).to(device)
        settings = irnet_train_settings(config)
        train = config.irnet.train
        if max_steps is not None:
            settings = IRNetTrainSettings(**{**asdict(settings), "max_steps": max_steps})
        with ShardedStore(ir_label_paths, product="ir_labels") as store:
            skipped = {image_id: store.skipped[image_id] for image_id in image_ids if image_id in store.skipped}
            image_ids = [image_id for image_id in image_ids if image_id not in skipped]
            missing = [image_id for image_id in image_ids if image_id not in store]
            if missing:
                raise ValueError(f"confident-region labels missing for {len(missing)} training ids, e.g. {missing[:3]}")

            def labels(image_id: str) -> np.ndarray:
                return store.read(image_id, ["ir_label_s1"])["ir_label_s1"]

            logger.info("training IRNet on %d images (%s)", len(image_ids), config.dataset.train_split)
            record = train_irnet(model, dataset, image_ids, labels, settings, device=device, context=context)
        if context.is_main:
            mean_split = (
                config.dataset.train_split if train.displacement_mean_ids == "train" else config.dataset.infer_split
            )
            mean_ids, mean_skipped = readable_ids(config, dataset, split_ids(config, mean_split), labels=False)
            skipped.update(mean_skipped)
            fields: list[np.ndarray] = []

            def collect(displacement: torch.Tensor) -> None:
                if len(fields) < DISPLACEMENT_STATISTICS_BATCHES:
                    fields.append(displacement.float().cpu().numpy())

            with autocast(config.compute.precision, device):
                mean = measure_displacement_mean(
                    model,
                    dataset,
                    mean_ids,
                    crop_size=settings.crop_size,
                    batch_size=settings.batch_size,
                    device=device,
                    max_batches=settings.displacement_mean_batches,
                    num_workers=settings.num_workers,
                    on_batch=collect,
                )
            model.mean_shift.running_mean.copy_(mean)
            logger.info("displacement mean (y, x) = (%.4f, %.4f)", float(mean[0]), float(mean[1]))
            diagnostics = _training_diagnostics(output, record, np.concatenate(fields))
            stage_hash, stage_config = stage_metadata(config, "train_irn")
            save_checkpoint(
                output,
                model_state=model.state_dict(),
                kind="irnet",
                config={**stage_config, "stage_hash": stage_hash},
                record={
                    **asdict(record), "world_size": context.world_size, "displacement_mean": mean.tolist(),
                    "diagnostics": diagnostics, "skipped": skipped,
                },
            )
            logger.info("saved %s (%d steps, %.1f images/s)", output, record.steps, record.images_per_second)


DISPLACEMENT_STATISTICS_BATCHES = 4
"""Batches of the displacement-mean pass whose fields are kept for the statistics after training."""


def _training_diagnostics(output: Path, record: TrainingRecord, fields: np.ndarray) -> dict[str, object]:
    """Loss curves beside the checkpoint, collapse warnings, statistics of the field after training
    (``fields``: (B, 2, h, w) displacements of the mean pass, before the mean is subtracted)."""
    write_loss_curves(output, record.loss_terms, record.learning_rates)
    field = displacement_statistics(fields)
    statistics: dict[str, object] = {f"displacement_{key}": value for key, value in field.items()}
    progress = displacement_progress(record.loss_terms)
    if progress is not None:
        statistics["displacement_fg_over_constant"] = progress
    for term, values in record.loss_terms.items():
        window = max(1, len(values) // 10)
        statistics[f"{term}_first"] = float(np.mean(values[:window]))
        statistics[f"{term}_last"] = float(np.mean(values[-window:]))
    warnings = training_warnings(record.loss_terms, name="train_irnet")
    if not any("displacement" in warning for warning in warnings):
        warnings += displacement_warnings(field, name="train_irnet")
    return report("train_irnet", output, statistics, warnings)


def load_irnet(config: RunConfig, checkpoint: Path, device: torch.device) -> IRNet:
    payload = load_checkpoint(checkpoint, kind="irnet")
    model = build_irnet(config, cam_checkpoint=None, pretrained=False)
    model.load_state_dict(payload["model"])
    return to_memory_format(model.to(device), config.compute.channels_last).eval()


def run_irnet_infer(config: RunConfig, shard_index: int, checkpoint: Path, output: Path) -> None:
    """Boundary map, displacement field and radius-r affinities of the shard's inference images."""
    device = prepare_runtime(config)
    dataset = open_run_dataset(config)
    image_ids = shard_plan(config).product_ids(shard_index, "irnet")
    model = load_irnet(config, checkpoint, device)
    radius = config.random_walk.radius
    index = path_index(radius)
    affinity_name = f"affinity_s4_r{radius:g}"
    stage_hash, stage_config = stage_metadata(config, "irn_infer")
    per_image: list[dict[str, float]] = []
    with ShardWriter(
        output, product="irnet", config_hash=stage_hash, shard_index=shard_index, config=stage_config,
        float16=(affinity_name,),
    ) as writer:
        for image_id in track(
            image_ids, description=f"irnet shard {shard_index}", logger=logger, every=config.compute.progress_every
        ):
            try:
                image = dataset.image(image_id)
            except DatasetError as error:
                skip_or_raise(config, image_id, error, writer.skipped_ids)
                continue
            with autocast(config.compute.precision, device):
                boundary, displacement = boundary_and_displacement(model, image, pad_to=config.irnet.infer.pad_to)
            boundary, displacement = boundary.float(), displacement.float()  # float32 whatever compute.precision
            affinity = boundary_to_affinity(boundary[None], index)[0]
            writer.add(
                image_id,
                {
                    "boundary_s4": boundary.cpu().numpy(),
                    "displacement_s4": displacement.cpu().numpy(),
                    affinity_name: affinity.cpu().numpy(),
                    "affinity_directions": index.directions,
                },
                {"height": image.shape[0], "width": image.shape[1], "radius": radius},
            )
            per_image.append({
                **{f"boundary_{key}": value for key, value in boundary_statistics(boundary).items()},
                **{f"displacement_{key}": value for key, value in displacement_statistics(displacement).items()},
            })
    statistics = mean_statistics(per_image)
    boundary = {key[len("boundary_"):]: value for key, value in statistics.items() if key.startswith("boundary_")}
    field = {key[len("displacement_"):]: value for key, value in statistics.items() if key.startswith("displacement_")}
    warnings = boundary_warnings(boundary, name=f"irnet_infer shard {shard_index}")
    warnings += displacement_warnings(field, name=f"irnet_infer shard {shard_index}")
    report(f"irnet_infer shard {shard_index}", output, statistics, warnings)
