"""Entry point of the pseudo-label stage: semantic and instance pseudo labels with one random walk."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from irn_core.config import RunConfig
from irn_core.instances import InstanceLabels
from irn_core.progress import track
from irn_core.pseudo_labels import semantic_and_instance_labels_with_margin, uncertain_mask
from irn_core.steps.common import prepare_runtime, shard_plan, stage_metadata
from irn_core.store import ShardReader, ShardWriter

logger = logging.getLogger(__name__)


def empty_instances(image_size: tuple[int, int]) -> InstanceLabels:
    """No detections (an image without foreground classes)."""
    return InstanceLabels(
        masks=np.zeros((0, *image_size), bool), class_ids=np.zeros(0, np.int64), scores=np.zeros(0, np.float32)
    )


def _skip_reason(image_id: str, *readers: ShardReader) -> str | None:
    """Why ``image_id`` was left out of one of the input shards, or None."""
    for reader in readers:
        if image_id in reader.skipped:
            return f"skipped in {reader.path}: {reader.skipped[image_id]}"
    return None


def run_pseudo_labels(
    config: RunConfig,
    shard_index: int,
    cam_path: Path,
    irnet_path: Path,
    semantic_output: Path,
    instance_output: Path,
) -> None:
    """``semantic_s1`` (uint8 label map; with ``random_walk.uncertain_band`` also ``uncertain_s1``, bool
    (H, W), the pixels DeepLab v2 on the pseudo labels ignores) and instances (``masks_s1`` bool (N, H, W), ``class_ids``
    0-based, ``scores``) for the shard's inference images."""
    device = prepare_runtime(config)
    image_ids = shard_plan(config).product_ids(shard_index, "semantic")
    walk = config.random_walk
    instances = config.instances
    stage_hash, stage_config = stage_metadata(config, "pseudo_labels")
    writer_options = {"config_hash": stage_hash, "shard_index": shard_index, "config": stage_config}
    with (
        ShardReader(cam_path, product="cam") as cams,
        ShardReader(irnet_path, product="irnet") as relations,
        ShardWriter(semantic_output, product="semantic", **writer_options) as semantic_writer,
        ShardWriter(instance_output, product="instances", **writer_options) as instance_writer,
    ):
        for image_id in track(
            image_ids,
            description=f"pseudo labels shard {shard_index}",
            logger=logger,
            every=config.compute.progress_every,
        ):
            reason = _skip_reason(image_id, cams, relations)
            if reason is not None:
                semantic_writer.skip(image_id, reason)
                instance_writer.skip(image_id, reason)
                continue
            cam = cams.read(image_id, ["cam_s4", "class_ids"])
            relation = relations.read(image_id, ["boundary_s4", "displacement_s4"])
            attributes = cams.attributes(image_id)
            image_size = (int(attributes["height"]), int(attributes["width"]))
            class_ids = cam["class_ids"]
            if len(class_ids) == 0:
                semantic, instance = np.zeros(image_size, np.uint8), empty_instances(image_size)
                margin = np.zeros(image_size, np.float32)
            else:
                semantic, margin, instance = semantic_and_instance_labels_with_margin(
                    torch.from_numpy(cam["cam_s4"].astype(np.float32)).to(device),
                    class_ids,
                    torch.from_numpy(relation["boundary_s4"].astype(np.float32)).to(device),
                    relation["displacement_s4"].astype(np.float32),
                    image_size,
                    beta=walk.beta,
                    exp_times=walk.exp_times,
                    radius=walk.radius,
                    bg_threshold=walk.semantic_bg_threshold,
                    instance_bg_threshold=walk.instance_bg_threshold,
                    background=walk.background,
                    threshold_rule=walk.threshold_rule,
                    centroid_iterations=instances.centroid_iterations,
                    cluster_threshold=instances.cluster_threshold,
                    min_fragment=instances.min_fragment,
                    image_id=image_id,
                )
            size_attributes = {"height": image_size[0], "width": image_size[1]}
            semantic_datasets = {"semantic_s1": semantic}
            if walk.uncertain_band is not None:
                semantic_datasets["uncertain_s1"] = uncertain_mask(margin, walk.uncertain_band)
            semantic_writer.add(image_id, semantic_datasets, size_attributes)
            instance_writer.add(
                image_id,
                {
                    "masks_s1": instance.masks,
                    "class_ids": instance.class_ids.astype(np.int64),
                    "scores": instance.scores.astype(np.float32),
                },
                size_attributes,
            )
