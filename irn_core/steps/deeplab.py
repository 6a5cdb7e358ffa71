"""Entry points of DeepLab v2: training on pseudo labels or ground truth, per-shard inference, evaluation.

The same training runs on two label sources (``LABEL_SOURCES``): ``pseudo``, the semantic pseudo labels
(``semantic_s1`` of the ``semantic`` shards) of the ``dataset.downstream_split`` ids, and
``ground_truth``, the dataset's own masks of those ids (the fully supervised upper bound).
Predictions are made for the ``val`` ids of each shard (``plan.product_ids(shard, "deeplab")``) and
stored as the product ``deeplab``: dataset ``semantic_s1`` uint8 (H, W); the file's config records the
label source and the checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irn_core.config import RunConfig
from irn_core.deeplab.infer import DeepLabCRFSettings, predict_labels
from irn_core.deeplab.train import IGNORE_LABEL, DeepLabTrainSettings, build_deeplab, train_deeplab
from irn_core.engine.checkpoint import load_checkpoint, save_checkpoint
from irn_core.engine.runtime import autocast, to_memory_format
from irn_core.errors import ConfigError, DatasetError, StoreError
from irn_core.models.deeplab import DeepLabV2
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
from irn_core.steps.evaluate import _evaluated_ids, _semantic_evaluation
from irn_core.store import ShardedStore, ShardWriter

logger = logging.getLogger(__name__)

LABEL_SOURCES: tuple[str, ...] = ("pseudo", "ground_truth")
PRODUCT = "deeplab"


def deeplab_train_settings(config: RunConfig) -> DeepLabTrainSettings:
    deeplab = config.deeplab
    train = deeplab.train
    optimizer = train.optimizer
    return DeepLabTrainSettings(
        backbone=deeplab.backbone.name,
        weights=deeplab.backbone.weights,
        output_stride=deeplab.backbone.output_stride,
        frozen_batchnorm=deeplab.backbone.frozen_batchnorm,
        atrous_rates=deeplab.atrous_rates,
        frozen_stages=train.frozen_stages,
        batch_size=train.batch_size,
        epochs=train.epochs,
        steps=train.steps,
        min_steps=train.min_steps,
        crop_size=train.crop_size,
        scales=train.scales,
        flip=train.flip,
        input_scales=train.input_scales,
        learning_rate=optimizer.learning_rate,
        momentum=optimizer.momentum,
        weight_decay=optimizer.weight_decay,
        poly_power=optimizer.poly_power,
        lr_decay_every=optimizer.lr_decay_every,
        backbone_lr_multiplier=optimizer.backbone_lr_multiplier,
        aspp_weight_lr_multiplier=optimizer.aspp_weight_lr_multiplier,
        aspp_bias_lr_multiplier=optimizer.aspp_bias_lr_multiplier,
        aspp_bias_weight_decay=optimizer.aspp_bias_weight_decay,
        num_workers=train.num_workers,
        seed=config.seed,
        precision=config.compute.precision,
        channels_last=config.compute.channels_last,
    )


def ignoring_uncertain(labels: np.ndarray, uncertain: np.ndarray, where: str = "pseudo label") -> np.ndarray:
    """``labels`` (H, W) uint8 with the ``uncertain`` (H, W) pixels set to the ignore label (a copy);
    ``where`` names the image in the error raised for a mask of another shape."""
    if uncertain.shape != labels.shape:
        raise StoreError(
            f"{where}: uncertain_s1 of shape {uncertain.shape} does not match semantic_s1 of shape {labels.shape}"
        )
    ignored = labels.copy()
    ignored[uncertain.astype(bool)] = IGNORE_LABEL
    return ignored


def run_train_deeplab(
    config: RunConfig,
    labels: str,
    semantic_paths: Sequence[Path],
    output: Path,
    *,
    max_steps: int | None = None,
) -> None:
    """Train DeepLab v2 on the downstream ids with ``labels`` (``pseudo``: the ``semantic_s1`` maps of
    ``semantic_paths``, their ``uncertain_s1`` pixels ignored under ``random_walk.uncertain_band``;
    ``ground_truth``: the dataset's masks) and save ``output`` (rank 0 under torchrun).

    Under ``dataset.on_unreadable: skip`` the ids left out of the pseudo-label shards and those whose
    image (or ground-truth mask) cannot be read are left out, each logged and listed in the checkpoint's
    record (``skipped``); a pseudo label missing for any other id is an error."""
    if labels not in LABEL_SOURCES:
        raise ConfigError(f"DeepLab label source must be one of {', '.join(LABEL_SOURCES)}, got {labels!r}")
    if labels == "pseudo" and not semantic_paths:
        raise ConfigError("DeepLab on pseudo labels needs the semantic pseudo-label shard files (--semantic)")
    with training_process(config) as (context, device):
        dataset = open_run_dataset(config)
        image_ids = downstream_ids(config, "DeepLab")
        settings = deeplab_train_settings(config)
        if max_steps is not None:
            settings = replace(settings, max_steps=max_steps)
        skipped: dict[str, str] = {}
        with ShardedStore(semantic_paths if labels == "pseudo" else [], product="semantic") as store:
            if labels == "pseudo":
                image_ids = drop_skipped_upstream(config, image_ids, store, skipped)
                missing = [image_id for image_id in image_ids if image_id not in store]
                if missing:
                    raise StoreError(
                        f"semantic pseudo labels missing for {len(missing)} of the {len(image_ids)} downstream ids "
                        f"(e.g. {missing[:3]}) in {', '.join(str(path) for path in semantic_paths)}"
                    )

                uncertain_band = config.random_walk.uncertain_band

                def label_source(image_id: str) -> np.ndarray:
                    if uncertain_band is None:
                        return store.read(image_id, ["semantic_s1"])["semantic_s1"]
                    read = store.read(image_id, ["semantic_s1", "uncertain_s1"])
                    return ignoring_uncertain(
                        read["semantic_s1"], read["uncertain_s1"], f"{store.reader_for(image_id).path}, {image_id!r}"
                    )

                def description(image_id: str) -> str:
                    return f"semantic pseudo label in {store.reader_for(image_id).path}"

            else:
                label_source = dataset.semantic_mask

                def description(image_id: str) -> str:
                    return "ground-truth mask"

            image_ids, unreadable = readable_ids(
                config, dataset, image_ids, labels=False, check=None if labels == "pseudo" else dataset.semantic_mask
            )
            skipped.update(unreadable)
            logger.info("training DeepLab v2 on %d images (%s, %s labels; %d left out)", len(image_ids),
                        config.dataset.downstream_split, labels, len(skipped))
            model, record = train_deeplab(
                dataset, image_ids, label_source, settings, device=device, context=context,
                label_description=description,
            )
        if context.is_main:
            stage_hash, stage_config = stage_metadata(config, "train_deeplab")
            save_checkpoint(
                output,
                model_state=model.state_dict(),
                kind="deeplab",
                config={
                    **stage_config,
                    "stage_hash": stage_hash,
                    "class_names": list(dataset.class_names),
                    "labels": labels,
                    "label_files": [str(path) for path in semantic_paths] if labels == "pseudo" else [],
                },
                record={**asdict(record), "world_size": context.world_size, "skipped": dict(sorted(skipped.items()))},
            )
            logger.info("saved %s (%d steps, %.1f images/s)", output, record.steps, record.images_per_second)


def load_deeplab(config: RunConfig, checkpoint: Path, device: torch.device) -> tuple[DeepLabV2, dict[str, Any]]:
    """The trained model (eval mode, on ``device``) and the checkpoint's recorded config."""
    payload = load_checkpoint(checkpoint, kind="deeplab")
    settings = deeplab_train_settings(config)
    model = build_deeplab(settings, len(payload["config"]["class_names"]) + 1, pretrained=False)
    model.load_state_dict(payload["model"])
    return to_memory_format(model.to(device), config.compute.channels_last).eval(), payload["config"]


def crf_settings(config: RunConfig) -> DeepLabCRFSettings | None:
    crf = config.deeplab.infer.crf
    if not crf.enabled:
        return None
    return DeepLabCRFSettings(
        iterations=crf.iterations, pos_w=crf.pos_w, pos_xy_std=crf.pos_xy_std, bi_w=crf.bi_w,
        bi_xy_std=crf.bi_xy_std, bi_rgb_std=crf.bi_rgb_std,
    )


def run_deeplab_infer(config: RunConfig, shard_index: int, checkpoint: Path, output: Path) -> None:
    """Ensemble (+ CRF) label maps ``semantic_s1`` of the shard's validation images (an unreadable one:
    an error, or under ``dataset.on_unreadable: skip`` left out and listed in the file's ``skipped``)."""
    device = prepare_runtime(config)
    dataset = open_run_dataset(config)
    image_ids = shard_plan(config).product_ids(shard_index, PRODUCT)
    model, trained = load_deeplab(config, checkpoint, device)
    infer = config.deeplab.infer
    crf = crf_settings(config)
    stage_hash, stage_config = stage_metadata(config, "deeplab_infer")
    file_config = {**stage_config, "labels": trained["labels"], "checkpoint": str(checkpoint),
                   "train_stage_hash": trained["stage_hash"]}
    with ShardWriter(
        output, product=PRODUCT, config_hash=stage_hash, shard_index=shard_index, config=file_config
    ) as writer:
        for image_id in track(
            image_ids, description=f"deeplab shard {shard_index}", logger=logger,
            every=config.compute.progress_every,
        ):
            try:
                image = dataset.image(image_id)
            except DatasetError as error:
                skip_or_raise(config, image_id, error, writer.skipped_ids)
                continue
            with autocast(config.compute.precision, device):  # probabilities cast to float32 before the CRF
                labels = predict_labels(model, image, scales=infer.scales, flip=infer.flip, crf=crf, image_id=image_id)
            writer.add(
                image_id, {"semantic_s1": labels},
                {"height": image.shape[0], "width": image.shape[1], "labels": trained["labels"]},
            )


def run_evaluate_deeplab(config: RunConfig, deeplab_paths: Sequence[Path], output_prefix: Path) -> dict[str, float]:
    """mIoU and per-class IoU of DeepLab's predictions on the validation images (CSV, Markdown); images
    left out of the prediction shards (``dataset.on_unreadable: skip``) are listed with the table."""
    val_ids = shard_plan(config).all_ids("val")
    if not val_ids:
        raise ConfigError("DeepLab is evaluated on dataset.val_split, which is not set (or empty)")
    skipped: dict[str, str] = {}

    def predictions(store: ShardedStore) -> Iterator[tuple[str, np.ndarray]]:
        present = _evaluated_ids(val_ids, store, skipped)
        for image_id in track(
            present, description="evaluate deeplab", logger=logger,
            every=config.compute.progress_every,
        ):
            yield image_id, store.read(image_id, ["semantic_s1"])["semantic_s1"]

    with ShardedStore(deeplab_paths, product=PRODUCT) as store:
        return _semantic_evaluation(
            config, predictions(store), output_prefix, f"DeepLab v2 ({output_prefix.name})", skipped
        )
