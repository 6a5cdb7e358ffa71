"""Entry points of Mask R-CNN: training on the downstream split, per-shard inference on the val ids."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection import MaskRCNN

from irn_core.config import RunConfig
from irn_core.engine.checkpoint import load_checkpoint, save_checkpoint
from irn_core.engine.runtime import autocast
from irn_core.errors import ConfigError, DatasetError
from irn_core.maskrcnn.infer import predict_instances
from irn_core.maskrcnn.train import (
    GroundTruthInstances,
    InstanceSource,
    MaskRCNNTrainingDataset,
    MaskRCNNTrainSettings,
    StoredInstances,
    train_mask_rcnn,
)
from irn_core.models.maskrcnn import build_mask_rcnn
from irn_core.progress import track
from irn_core.steps.common import (
    downstream_ids,
    drop_skipped_upstream,
    open_run_dataset,
    prepare_runtime,
    readable_ids,
    shard_plan,
    skip_or_raise,
    stage_metadata,
    training_process,
)
from irn_core.store import ShardedStore, ShardWriter

logger = logging.getLogger(__name__)

PRODUCT = "maskrcnn"
"""Per-shard HDF5 product of the predictions: ``masks_s1`` (N, H, W) bool, ``class_ids``, ``scores``."""


def maskrcnn_train_settings(config: RunConfig) -> MaskRCNNTrainSettings:
    train = config.maskrcnn.train
    return MaskRCNNTrainSettings(
        batch_size=train.batch_size,
        epochs=train.epochs,
        steps=train.steps,
        min_steps=train.min_steps,
        learning_rate=train.learning_rate,
        lr_steps=tuple(train.lr_steps),
        lr_gamma=train.lr_gamma,
        warmup_steps=train.warmup_steps,
        warmup_factor=train.warmup_factor,
        weight_decay=train.weight_decay,
        momentum=train.momentum,
        bias_lr_multiplier=train.bias_lr_multiplier,
        bias_weight_decay=train.bias_weight_decay,
        flip=train.flip,
        num_workers=train.num_workers,
        seed=config.seed,
        log_every=train.log_every,
        precision=config.compute.precision,
    )


def build_maskrcnn_from_config(config: RunConfig, num_classes: int, *, pretrained: bool = True) -> MaskRCNN:
    """The configured network (``pretrained=False``: no backbone weights, for loading a checkpoint)."""
    section = config.maskrcnn
    model = section.model
    rpn, roi, infer = model.rpn, model.roi, section.infer
    return build_mask_rcnn(
        backbone=section.backbone,
        num_classes=num_classes,
        weights=section.weights if pretrained else "none",
        frozen_batchnorm=section.frozen_batchnorm,
        frozen_stages=section.train.frozen_stages,
        fpn_channels=model.fpn_channels,
        fpn_norm=model.fpn_norm,
        box_head_channels=model.box_head_channels,
        mask_head_channels=model.mask_head_channels,
        anchor_sizes=model.anchor_sizes,
        aspect_ratios=model.aspect_ratios,
        min_size=section.min_size,
        max_size=section.max_size,
        rpn_pre_nms_top_n_train=rpn.pre_nms_top_n_train,
        rpn_post_nms_top_n_train=rpn.post_nms_top_n_train,
        rpn_pre_nms_top_n_test=infer.rpn_pre_nms_top_n,
        rpn_post_nms_top_n_test=infer.rpn_post_nms_top_n,
        rpn_nms_threshold=rpn.nms_threshold,
        rpn_fg_iou_threshold=rpn.fg_iou_threshold,
        rpn_bg_iou_threshold=rpn.bg_iou_threshold,
        rpn_batch_size_per_image=rpn.batch_size_per_image,
        rpn_positive_fraction=rpn.positive_fraction,
        roi_fg_iou_threshold=roi.fg_iou_threshold,
        roi_bg_iou_threshold=roi.bg_iou_threshold,
        roi_batch_size_per_image=roi.batch_size_per_image,
        roi_positive_fraction=roi.positive_fraction,
        score_threshold=infer.score_threshold,
        nms_threshold=infer.nms_threshold,
        detections_per_image=infer.detections_per_image,
    )


def instance_source(config: RunConfig, instance_paths: Sequence[Path]) -> InstanceSource:
    """The pseudo labels in ``instance_paths``, or the ground truth (``maskrcnn.train.labels``)."""
    train = config.maskrcnn.train
    if train.labels == "ground_truth":
        return GroundTruthInstances(open_run_dataset(config))
    if not instance_paths:
        raise ConfigError("Mask R-CNN on pseudo labels needs the instance shard files (--instances)")
    return StoredInstances(instance_paths, min_score=train.min_label_score)


def run_train_maskrcnn(
    config: RunConfig, instance_paths: Sequence[Path], output: Path, *, max_steps: int | None = None
) -> None:
    """Train Mask R-CNN on the downstream ids and save ``output`` (rank 0 only under torchrun).

    Under ``dataset.on_unreadable: skip`` the ids left out of the instance shards and those whose image
    (or ground-truth instances) cannot be read are left out, each logged and listed in the checkpoint's
    record (``skipped``); instances missing for any other id are an error."""
    with training_process(config) as (context, device):
        dataset = open_run_dataset(config)
        image_ids = downstream_ids(config, "Mask R-CNN")
        settings = maskrcnn_train_settings(config)
        if max_steps is not None:
            settings = replace(settings, max_steps=max_steps)
        num_classes = len(dataset.class_names)
        source = instance_source(config, instance_paths)
        skipped: dict[str, str] = {}
        if isinstance(source, StoredInstances):
            with ShardedStore(source.paths, product=source.product) as store:
                image_ids = drop_skipped_upstream(config, image_ids, store, skipped)
        image_ids, unreadable = readable_ids(
            config, dataset, image_ids, labels=False,
            check=dataset.instance_masks if isinstance(source, GroundTruthInstances) else None,
        )
        skipped.update(unreadable)
        training_set = MaskRCNNTrainingDataset(
            dataset, image_ids, source, num_classes=num_classes, seed=config.seed, flip=settings.flip,
        )
        torch.manual_seed(config.seed)
        model = build_maskrcnn_from_config(config, num_classes).to(device)
        logger.info(
            "training Mask R-CNN (%s) on the %s of %d images (%s; %d left out)", config.maskrcnn.backbone,
            "ground truth" if config.maskrcnn.train.labels == "ground_truth" else "instance pseudo labels",
            len(image_ids), config.dataset.downstream_split, len(skipped),
        )
        record = train_mask_rcnn(model, training_set, settings, device=device, context=context)
        if context.is_main:
            stage_hash, stage_config = stage_metadata(config, "train_maskrcnn")
            save_checkpoint(
                output,
                model_state=model.state_dict(),
                kind="maskrcnn",
                config={**stage_config, "stage_hash": stage_hash, "class_names": list(dataset.class_names)},
                record={**asdict(record), "world_size": context.world_size, "skipped": dict(sorted(skipped.items()))},
            )
            logger.info("saved %s (%d steps, %.2f images/s)", output, record.steps, record.images_per_second)


def load_maskrcnn(config: RunConfig, checkpoint: Path, device: torch.device) -> MaskRCNN:
    """The trained network of ``checkpoint`` in eval mode on ``device``, with this config's test settings."""
    payload = load_checkpoint(checkpoint, kind="maskrcnn")
    model = build_maskrcnn_from_config(config, len(payload["config"]["class_names"]), pretrained=False)
    model.load_state_dict(payload["model"])
    return model.to(device).eval()


def run_maskrcnn_infer(config: RunConfig, shard_index: int, checkpoint: Path, output: Path) -> None:
    """Predictions on the shard's val ids: ``masks_s1`` (N, H, W) bool at full resolution, ``class_ids``
    (N,) 0-based, ``scores`` (N,) float32 (the layout of the ``instances`` product). An unreadable image:
    an error, or under ``dataset.on_unreadable: skip`` left out and listed in the file's ``skipped``."""
    device = prepare_runtime(config)
    dataset = open_run_dataset(config)
    image_ids = shard_plan(config).product_ids(shard_index, PRODUCT)
    model = load_maskrcnn(config, checkpoint, device)
    threshold = config.maskrcnn.infer.mask_threshold
    stage_hash, stage_config = stage_metadata(config, "maskrcnn_infer")
    with ShardWriter(
        output, product=PRODUCT, config_hash=stage_hash, shard_index=shard_index, config=stage_config
    ) as writer:
        for image_id in track(
            image_ids, description=f"maskrcnn shard {shard_index}", logger=logger,
            every=config.compute.progress_every,
        ):
            try:
                image = dataset.image(image_id)
            except DatasetError as error:
                skip_or_raise(config, image_id, error, writer.skipped_ids)
                continue
            with autocast(config.compute.precision, device):  # scores come back float32, masks boolean
                found = predict_instances(model, image, mask_threshold=threshold)
            writer.add(
                image_id,
                {
                    "masks_s1": found.masks,
                    "class_ids": found.class_ids.astype(np.int64),
                    "scores": found.scores.astype(np.float32),
                },
                {"height": image.shape[0], "width": image.shape[1]},
            )
