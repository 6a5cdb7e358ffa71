"""Entry points of the CAM stages: training, per-shard inference, import of external CAMs."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from irn_core.cam.infer import multiscale_cams, select_classes, train_range_base_scale
from irn_core.cam.train import CAMTrainSettings, build_cam_network, train_cam
from irn_core.config import RunConfig
from irn_core.diagnostics import (
    cam_statistics,
    cam_warnings,
    inference_scale_statistics,
    mean_statistics,
    training_warnings,
)
from irn_core.engine.checkpoint import load_checkpoint, save_checkpoint
from irn_core.engine.runtime import autocast, to_memory_format
from irn_core.errors import DatasetError
from irn_core.interop import read_reference_cam
from irn_core.models.cam import CAMNet
from irn_core.progress import track
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
from irn_core.store import ShardWriter

logger = logging.getLogger(__name__)

CAM_DATASETS = ("cam_s4", "cam_s1", "class_ids")


def cam_train_settings(config: RunConfig) -> CAMTrainSettings:
    cam = config.cam
    optimizer = cam.train.optimizer
    return CAMTrainSettings(
        backbone=cam.backbone.name,
        weights=cam.backbone.weights,
        frozen_batchnorm=cam.backbone.frozen_batchnorm,
        frozen_stages=cam.train.frozen_stages,
        batch_size=cam.train.batch_size,
        epochs=cam.train.epochs,
        steps=cam.train.steps,
        min_steps=cam.train.min_steps,
        crop_size=cam.train.crop_size,
        resize_long=cam.train.resize_long,
        learning_rate=optimizer.learning_rate,
        head_lr_multiplier=optimizer.head_lr_multiplier,
        weight_decay=optimizer.weight_decay,
        momentum=config.momentum(optimizer),
        poly_power=optimizer.poly_power,
        num_workers=cam.train.num_workers,
        seed=config.seed,
        precision=config.compute.precision,
        channels_last=config.compute.channels_last,
    )


def run_train_cam(config: RunConfig, output: Path, *, max_steps: int | None = None) -> None:
    """Train the CAM network on the training split and save ``output`` (rank 0 only under torchrun)."""
    with training_process(config) as (context, device):
        dataset = open_run_dataset(config)
        image_ids, skipped = readable_ids(
            config, dataset, split_ids(config, config.dataset.train_split), labels=True
        )
        settings = cam_train_settings(config)
        if max_steps is not None:
            settings = CAMTrainSettings(**{**asdict(settings), "max_steps": max_steps})
        logger.info("training the CAM network on %d images (%s)", len(image_ids), config.dataset.train_split)
        model, record = train_cam(dataset, image_ids, settings, device=device, context=context)
        if context.is_main:
            write_loss_curves(output, record.loss_terms, record.learning_rates)
            losses = record.loss_terms.get("total", [])
            window = max(1, len(losses) // 10)
            statistics: dict[str, float] = {"steps": float(record.steps)}
            if losses:
                statistics["loss_first"] = float(np.mean(losses[:window]))
                statistics["loss_last"] = float(np.mean(losses[-window:]))
            diagnostics = report(
                "train_cam", output, statistics, training_warnings(record.loss_terms, name="train_cam", skip=())
            )
            stage_hash, stage_config = stage_metadata(config, "train_cam")
            save_checkpoint(
                output,
                model_state=model.state_dict(),
                kind="cam",
                config={**stage_config, "stage_hash": stage_hash, "class_names": list(dataset.class_names)},
                record={
                    **asdict(record), "world_size": context.world_size, "diagnostics": diagnostics, "skipped": skipped,
                },
            )
            logger.info("saved %s (%d steps, %.1f images/s)", output, record.steps, record.images_per_second)


def load_cam_network(config: RunConfig, checkpoint: Path, device: torch.device) -> CAMNet:
    payload = load_checkpoint(checkpoint, kind="cam")
    settings = cam_train_settings(config)
    model = build_cam_network(
        CAMTrainSettings(**{**asdict(settings), "weights": "none"}), len(payload["config"]["class_names"])
    )
    model.load_state_dict(payload["model"])
    return to_memory_format(model.to(device), config.compute.channels_last).eval()


def cam_base_scale(config: RunConfig, height: int, width: int) -> float:
    """The factor the CAM scales are relative to, under ``cam.infer.base_size`` (1.0: the image as stored)."""
    if config.cam.infer.base_size == "original":
        return 1.0
    return train_range_base_scale(height, width, config.cam.train.resize_long)


def run_make_cam(config: RunConfig, shard_index: int, checkpoint: Path, output: Path) -> None:
    """Multi-scale + flip CAMs of every image of a shard: ``cam_s4``, ``cam_s1`` (full resolution),
    ``class_ids`` — only the image's classes, each channel divided by its maximum (reference)."""
    device = prepare_runtime(config)
    dataset = open_run_dataset(config)
    image_ids = shard_plan(config).product_ids(shard_index, "cam")
    model = load_cam_network(config, checkpoint, device)
    stage_hash, stage_config = stage_metadata(config, "make_cam")
    float16 = CAM_DATASETS[:2] if config.cam_float16 else ()
    per_image: list[dict[str, float]] = []
    with ShardWriter(
        output, product="cam", config_hash=stage_hash, shard_index=shard_index, config=stage_config, float16=float16
    ) as writer:
        for image_id in track(
            image_ids, description=f"cam shard {shard_index}", logger=logger, every=config.compute.progress_every
        ):
            try:
                image = dataset.image(image_id)
                class_ids = dataset.class_labels(image_id)
            except DatasetError as error:
                skip_or_raise(config, image_id, error, writer.skipped_ids)
                continue
            base_scale = cam_base_scale(config, image.shape[0], image.shape[1])
            with autocast(config.compute.precision, device):
                cam_s4, high_res = multiscale_cams(
                    model, image, scales=config.cam.infer.scales, flip=config.cam.infer.flip, base_scale=base_scale
                )
            cam_s4, high_res = cam_s4.float(), high_res.float()  # float32 whatever compute.precision
            cam_s4, high_res = select_classes(cam_s4, high_res, torch.as_tensor(class_ids, dtype=torch.int64))
            writer.add(
                image_id,
                {"cam_s4": cam_s4.cpu().numpy(), "cam_s1": high_res.cpu().numpy(), "class_ids": class_ids},
                {"height": image.shape[0], "width": image.shape[1]},
            )
            thresholds = {"eval_threshold": config.cam.eval_threshold, "fg_threshold": config.ir_labels.fg_threshold}
            per_image.append({
                **cam_statistics(high_res, **thresholds),
                **inference_scale_statistics(image.shape[:2], config.cam.train.resize_long, base_scale),
            })
    statistics = mean_statistics(per_image)
    stage = f"make_cam shard {shard_index}"
    report(stage, output, statistics, cam_warnings(statistics, name=stage))


def run_import_cams(config: RunConfig, shard_index: int, npy_dir: Path, output: Path) -> None:
    """Build a CAM shard from the reference code's ``<id>.npy`` dicts (``keys``, ``cam``, ``high_res``)."""
    dataset = open_run_dataset(config)
    image_ids = shard_plan(config).product_ids(shard_index, "cam")
    stage_hash, stage_config = stage_metadata(config, "make_cam")
    with ShardWriter(
        output, product="cam", config_hash=stage_hash, shard_index=shard_index,
        config={**stage_config, "imported_from": str(npy_dir)},
        float16=CAM_DATASETS[:2] if config.cam_float16 else (),
    ) as writer:
        for image_id in track(
            image_ids,
            description=f"import cams shard {shard_index}",
            logger=logger,
            every=config.compute.progress_every,
        ):
            path = npy_dir / f"{image_id}.npy"
            class_ids, cam_s4, high_res = read_reference_cam(path)
            try:
                height, width = dataset.image_size(image_id)
            except DatasetError as error:
                skip_or_raise(config, image_id, error, writer.skipped_ids)
                continue
            if high_res.shape[1:] != (height, width):
                raise DatasetError(
                    f"{path}: image id {image_id!r}: high_res is {high_res.shape[1:]}, the image is {(height, width)}"
                )
            writer.add(
                image_id,
                {"cam_s4": cam_s4, "cam_s1": high_res, "class_ids": class_ids.astype(np.int64)},
                {"height": height, "width": width},
            )
