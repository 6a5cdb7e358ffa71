"""What the per-shard entry points share: the shard plan, dataset opening, output paths, runtime setup.

The shard plan cuts the sorted union of the training and inference ids into shards of
``shard_size``. Every per-shard product is computed for the ids of its shard that belong to the
product's list: CAMs for all of them, confident-region labels for the training ids, IRNet
outputs and pseudo labels for the inference ids (a shard with none of them writes an empty file).
The plan depends only on the config and the split lists, so the workflow computes it at DAG-build
time and every job recomputes the same plan.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from irn_core.config import RunConfig, stage_config, stage_hash
from irn_core.data import synthetic
from irn_core.data.classes import load_class_names
from irn_core.data.registry import SegmentationDataset, open_dataset
from irn_core.data.sharding import make_shards
from irn_core.engine import distributed
from irn_core.engine.distributed import DistributedContext
from irn_core.engine.runtime import configure_runtime, resolve_device
from irn_core.store import shard_file_name

logger = logging.getLogger(__name__)

PRODUCTS = ("cam", "ir_labels", "irnet", "semantic", "instances")
"""Per-shard HDF5 products, each in ``<run_dir>/<product>/shard-NNNNN.h5``."""


@dataclass(frozen=True)
class ShardPlan:
    shards: tuple[tuple[str, ...], ...]
    train_ids: frozenset[str]
    infer_ids: frozenset[str]

    def __len__(self) -> int:
        return len(self.shards)

    def ids(self, shard_index: int, which: str = "all") -> list[str]:
        """Ids of shard ``shard_index``: ``all``, ``train`` or ``infer`` (in shard order)."""
        ids = self.shards[shard_index]
        if which == "all":
            return list(ids)
        wanted = {"train": self.train_ids, "infer": self.infer_ids}[which]
        return [image_id for image_id in ids if image_id in wanted]

    def to_json(self) -> str:
        return json.dumps(
            {
                "shards": [list(shard) for shard in self.shards],
                "train_ids": sorted(self.train_ids),
                "infer_ids": sorted(self.infer_ids),
            },
            indent=1,
        )


def split_ids(config: RunConfig, split: str) -> list[str]:
    """Ids of ``split``; for the synthetic dataset computed from its parameters (no files needed)."""
    if config.dataset.kind == "synthetic":
        assert config.dataset.synthetic is not None
        splits = synthetic.split_ids(config.dataset.synthetic)
        if split not in splits:
            raise KeyError(f"synthetic dataset has splits {sorted(splits)}, not {split!r}")
        return list(splits[split])
    return open_run_dataset(config).ids(split)


def shard_plan(config: RunConfig) -> ShardPlan:
    train = split_ids(config, config.dataset.train_split)
    infer = split_ids(config, config.dataset.infer_split)
    shards = make_shards(sorted(set(train) | set(infer)), config.shard_size)
    return ShardPlan(tuple(tuple(shard) for shard in shards), frozenset(train), frozenset(infer))


def open_run_dataset(config: RunConfig) -> SegmentationDataset:
    return _open_dataset_cached(config.dataset.model_dump_json())


@functools.lru_cache(maxsize=4)
def _open_dataset_cached(dataset_json: str) -> SegmentationDataset:
    from irn_core.config import DatasetConfig

    dataset = DatasetConfig.model_validate_json(dataset_json)
    if dataset.kind == "coco":
        assert dataset.annotation_file is not None
        return open_dataset("coco", image_dir=dataset.root, annotation_file=dataset.annotation_file)
    options: dict[str, object] = {"root": dataset.root}
    if dataset.sbd_root is not None:
        options["sbd_root"] = dataset.sbd_root
    if dataset.class_names_file is not None:
        options["class_names"] = load_class_names(dataset.class_names_file)
    return open_dataset(dataset.kind, **options)


def product_path(config: RunConfig, product: str, shard_index: int) -> Path:
    return config.run_dir / product / shard_file_name(shard_index)


def product_paths(config: RunConfig, product: str, count: int) -> list[Path]:
    return [product_path(config, product, index) for index in range(count)]


def stage_metadata(config: RunConfig, stage: str) -> tuple[str, dict[str, object]]:
    """(hash, config subset) recorded in a stage's outputs."""
    return stage_hash(config, stage), stage_config(config, stage)


@contextlib.contextmanager
def training_process(config: RunConfig) -> Iterator[tuple[DistributedContext, torch.device]]:
    """One training process: joins torchrun's process group when launched by it (NCCL on GPUs,
    gloo on CPU), sets threads and device, and waits for every process before leaving."""
    context = distributed.setup("cuda" if config.compute.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        yield context, prepare_runtime(config, local_rank=context.local_rank)
        distributed.barrier(context)
    finally:
        distributed.teardown(context)


def prepare_runtime(config: RunConfig, *, local_rank: int | None = None) -> torch.device:
    configure_runtime(threads=config.compute.threads, deterministic=config.compute.deterministic)
    device = resolve_device(config.compute.device, local_rank=local_rank)
    logger.info("device %s, %d CPU threads", device, torch.get_num_threads())
    return device
