"""What the per-shard entry points share: the shard plan, dataset opening, output paths, runtime setup.

The shard plan cuts the ids of every split the run uses (training, inference, downstream training,
downstream validation) into shards of ``shard_size``: ids with the same roles together, sorted, so a
shard never mixes, say, training-only and inference-only ids (when all roles use one split: the
sorted ids cut into shards). Every per-shard product
is computed for the ids of its shard in the product's roles (:data:`PRODUCT_ROLES`): CAMs for the
training, inference and downstream ids, confident-region labels for the training ids, IRNet outputs
and pseudo labels for the inference and downstream ids, downstream predictions for the validation
ids. A shard holding none of a product's ids has no file of that product.

The plan is *recorded* in ``<run_dir>/shards.json`` and only ever appended to: the workflow updates
it at DAG-build time (:func:`update_recorded_plan`) and every job reads it (:func:`shard_plan`), so a
growing dataset keeps the shards of the ids already done. New ids go to new shards; a removed id
changes only its own shard (and returns to it when it comes back); a changed ``shard_size`` starts a
new plan (every per-shard stage hash includes ``shard_size``, so everything is recomputed then anyway).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from irn_core.atomic import write_text_atomic
from irn_core.config import RunConfig, stage_config, stage_hash
from irn_core.data import synthetic
from irn_core.data.classes import load_class_names
from irn_core.data.registry import SegmentationDataset, open_dataset
from irn_core.data.sharding import make_shards
from irn_core.errors import ConfigError, PlanError
from irn_core.store import shard_file_name

if TYPE_CHECKING:  # torch loads in the jobs only: the Snakefile imports this module at DAG-build time
    import torch

    from irn_core.engine.distributed import DistributedContext
    from irn_core.store import ShardedStore

logger = logging.getLogger(__name__)

PRODUCTS = ("cam", "ir_labels", "irnet", "semantic", "instances")
"""Per-shard HDF5 products of the pseudo-label pipeline, each in ``<run_dir>/<product>/shard-NNNNN.h5``."""

SPLIT_ROLES = ("train", "infer", "downstream", "val")
"""What a run does with a split: ``train`` the CAM network and IRNet, ``infer`` pseudo labels to
evaluate, ``downstream`` pseudo labels the downstream models train on, ``val`` evaluate those models."""

PRODUCT_ROLES: dict[str, tuple[str, ...]] = {
    "cam": ("train", "infer", "downstream"),
    "ir_labels": ("train",),
    "irnet": ("infer", "downstream"),
    "semantic": ("infer", "downstream"),
    "instances": ("infer", "downstream"),
}
"""The ids a per-shard product is made for: those of a shard in any of these roles. Products not
listed here (the downstream models' predictions) are made for the ``val`` ids."""


PLAN_FILE = "shards.json"
"""The recorded plan, in the run folder."""


@dataclass(frozen=True)
class ShardPlan:
    shards: tuple[tuple[str, ...], ...]
    train_ids: frozenset[str]
    infer_ids: frozenset[str]
    downstream_ids: frozenset[str] = frozenset()
    val_ids: frozenset[str] = frozenset()
    shard_size: int | None = None
    """The shard size the plan was cut with (None: not recorded)."""

    def __len__(self) -> int:
        return len(self.shards)

    def role_ids(self, role: str) -> frozenset[str]:
        if role not in SPLIT_ROLES:
            raise KeyError(f"unknown split role {role!r} (known: {', '.join(SPLIT_ROLES)})")
        return getattr(self, f"{role}_ids")

    def ids(self, shard_index: int, which: str = "all") -> list[str]:
        """Ids of shard ``shard_index``: ``all``, or those in one role (``train``, ``infer``,
        ``downstream``, ``val``), in shard order."""
        ids = self.shards[shard_index]
        if which == "all":
            active = self._wanted_roles(SPLIT_ROLES)
            return [image_id for image_id in ids if image_id in active]
        wanted = self.role_ids(which)
        return [image_id for image_id in ids if image_id in wanted]

    @functools.cached_property
    def _product_id_sets(self) -> dict[str, frozenset[str]]:
        return {}

    def _wanted_roles(self, roles: tuple[str, ...]) -> frozenset[str]:
        """Every id in any of ``roles`` (computed once per roles: plans hold 100k ids)."""
        key = "+".join(roles)
        cache = self._product_id_sets
        if key not in cache:
            cache[key] = frozenset().union(*(self.role_ids(role) for role in roles))
        return cache[key]

    def _wanted(self, product: str) -> frozenset[str]:
        """Every id ``product`` is made for."""
        return self._wanted_roles(PRODUCT_ROLES.get(product, ("val",)))

    def product_ids(self, shard_index: int, product: str) -> list[str]:
        """Ids of shard ``shard_index`` that ``product`` is made for (:data:`PRODUCT_ROLES`)."""
        wanted = self._wanted(product)
        return [image_id for image_id in self.shards[shard_index] if image_id in wanted]

    def product_shards(self, product: str) -> list[int]:
        """Indices of the shards that hold at least one id ``product`` is made for."""
        wanted = self._wanted(product)
        return [index for index, shard in enumerate(self.shards) if any(image_id in wanted for image_id in shard)]

    def all_ids(self, role: str) -> list[str]:
        """Every id in ``role``, in plan order."""
        wanted = self.role_ids(role)
        return [image_id for shard in self.shards for image_id in shard if image_id in wanted]

    def to_json(self) -> str:
        return json.dumps(
            {
                "shard_size": self.shard_size,
                "shards": [list(shard) for shard in self.shards],
                **{f"{role}_ids": sorted(self.role_ids(role)) for role in SPLIT_ROLES},
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, *, source: str = "plan") -> ShardPlan:
        """The plan written by :meth:`to_json`; a malformed file raises :class:`PlanError` naming ``source``."""
        try:
            data = json.loads(text)
            shards = tuple(tuple(str(image_id) for image_id in shard) for shard in data["shards"])
            roles = [frozenset(str(image_id) for image_id in data.get(f"{role}_ids", [])) for role in SPLIT_ROLES]
            shard_size = data.get("shard_size")
        except (ValueError, KeyError, TypeError) as error:
            raise PlanError(f"{source}: not a shard plan ({error!r}); delete it to start a new plan") from None
        return cls(shards, *roles, shard_size=None if shard_size is None else int(shard_size))


def split_ids(config: RunConfig, split: str) -> list[str]:
    """Ids of ``split``; for the synthetic dataset computed from its parameters (no files needed)."""
    if config.dataset.kind == "synthetic":
        assert config.dataset.synthetic is not None
        splits = synthetic.split_ids(config.dataset.synthetic)
        if split not in splits:
            raise KeyError(f"synthetic dataset has splits {sorted(splits)}, not {split!r}")
        return list(splits[split])
    return open_run_dataset(config).ids(split)


def role_splits(config: RunConfig) -> dict[str, str | None]:
    """The split of each role (None: the run has no such role)."""
    dataset = config.dataset
    return {
        "train": dataset.train_split,
        "infer": dataset.infer_split,
        "downstream": dataset.downstream_split,
        "val": dataset.val_split if dataset.downstream_split is not None else None,
    }


def role_ids(config: RunConfig) -> dict[str, list[str]]:
    """The ids of every role (empty for a role the run does not have), from the split lists."""
    return {role: split_ids(config, split) if split else [] for role, split in role_splits(config).items()}


def _role_groups(ids: dict[str, list[str]], wanted: set[str] | None = None) -> list[list[str]]:
    """The ids (all, or only those in ``wanted``) grouped by the set of roles they have, each group
    sorted; groups in a fixed order (by their roles in :data:`SPLIT_ROLES` order)."""
    roles_of: dict[str, tuple[int, ...]] = {}
    for position, role in enumerate(SPLIT_ROLES):
        for image_id in ids.get(role, ()):
            if wanted is None or image_id in wanted:
                roles_of[image_id] = (*roles_of.get(image_id, ()), position)
    groups: dict[tuple[int, ...], list[str]] = {}
    for image_id, signature in roles_of.items():
        groups.setdefault(signature, []).append(image_id)
    return [sorted(set(groups[signature])) for signature in sorted(groups)]


def _cut(ids: dict[str, list[str]], shard_size: int, wanted: set[str] | None = None) -> list[tuple[str, ...]]:
    """Shards of ``shard_size`` cut from each role group separately, so that a shard never mixes ids
    of different roles (a changed inference image then never rewrites a file that training reads)."""
    return [tuple(shard) for group in _role_groups(ids, wanted) for shard in make_shards(group, shard_size)]


def fresh_plan(config: RunConfig) -> ShardPlan:
    """The plan of a run without a recorded plan: the ids grouped by their roles, each group sorted
    and cut into shards (one group when every split is the same: the sorted ids cut into shards)."""
    ids = role_ids(config)
    return ShardPlan(
        tuple(_cut(ids, config.shard_size)),
        *(frozenset(ids[role]) for role in SPLIT_ROLES),
        shard_size=config.shard_size,
    )


def plan_path(config: RunConfig) -> Path:
    return config.run_dir / PLAN_FILE


def read_recorded_plan(config: RunConfig) -> ShardPlan | None:
    """The plan recorded in the run folder, or None when there is none or it was cut with another
    ``shard_size``."""
    path = plan_path(config)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    plan = ShardPlan.from_json(text, source=str(path))
    if plan.shard_size != config.shard_size:
        return None
    return plan


def extend_plan(recorded: ShardPlan | None, ids: dict[str, list[str]], shard_size: int) -> ShardPlan:
    """Append-only update of ``recorded`` to the role ids ``ids``.

    Ids already in a shard stay there (also when their roles change). An id no longer in any role
    stays recorded in its shard but is made for no product any more (only that shard's products
    change; a shard left with no such id has no files, and its index is kept so later shards keep
    their names); when it comes back it is back in its shard. New ids, grouped by roles and sorted,
    fill new shards of ``shard_size``. Without a recorded plan (or when it shares no id with ``ids``)
    the result is the fresh plan of ``ids``.
    """
    wanted = set().union(*map(set, ids.values()))
    roles = [frozenset(ids.get(role, ())) for role in SPLIT_ROLES]
    placed = {image_id for shard in recorded.shards for image_id in shard} if recorded is not None else set()
    if recorded is None or not placed & wanted:
        return ShardPlan(tuple(_cut(ids, shard_size)), *roles, shard_size=shard_size)
    new = _cut(ids, shard_size, wanted - placed)
    return ShardPlan(tuple(recorded.shards) + tuple(new), *roles, shard_size=shard_size)


def update_recorded_plan(config: RunConfig) -> ShardPlan:
    """Extend the recorded plan to the current split lists and write it when it changed (the
    workflow calls this at DAG-build time, in the main Snakemake process only)."""
    recorded = read_recorded_plan(config)
    plan = extend_plan(recorded, role_ids(config), config.shard_size)
    if recorded is None or plan != recorded:
        if recorded is not None:
            added = sum(len(shard) for shard in plan.shards[len(recorded.shards):])
            logger.info("shard plan: %d new shards (%d new ids)", len(plan) - len(recorded), added)
        write_text_atomic(plan_path(config), plan.to_json() + "\n")
    return plan


def shard_plan(config: RunConfig) -> ShardPlan:
    """The run's plan: the recorded one (``<run_dir>/shards.json``) when it exists for this
    ``shard_size``, else the fresh plan of the split lists."""
    recorded = read_recorded_plan(config)
    return recorded if recorded is not None else fresh_plan(config)


def downstream_ids(config: RunConfig, model: str) -> list[str]:
    """The ids a downstream ``model`` trains on: those of ``dataset.downstream_split``, in plan order."""
    if config.dataset.downstream_split is None:
        raise ConfigError(f"{model} trains on dataset.downstream_split, which is not set")
    return shard_plan(config).all_ids("downstream")


def open_run_dataset(config: RunConfig) -> SegmentationDataset:
    return _open_dataset_cached(config.dataset.model_dump_json())


@functools.lru_cache(maxsize=4)
def _open_dataset_cached(dataset_json: str) -> SegmentationDataset:
    from irn_core.config import DatasetConfig

    dataset = DatasetConfig.model_validate_json(dataset_json)
    if dataset.kind == "coco":
        if dataset.coco_splits is not None:
            splits = {name: (split.image_dir, split.annotation_file) for name, split in dataset.coco_splits.items()}
            return open_dataset("coco", splits=splits)
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
    import torch

    from irn_core.engine import distributed

    context = distributed.setup("cuda" if config.compute.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        yield context, prepare_runtime(config, local_rank=context.local_rank)
        distributed.barrier(context)
    finally:
        distributed.teardown(context)


def prepare_runtime(config: RunConfig, *, local_rank: int | None = None) -> torch.device:
    import torch

    from irn_core.engine.runtime import configure_allocator, configure_runtime, resolve_device

    configure_allocator(config.compute.cpu_allocator)
    configure_runtime(threads=config.compute.threads, deterministic=config.compute.deterministic)
    if config.compute.cpu_kernels != "native":
        capability = torch.backends.cpu.get_cpu_capability()
        if capability.lower() != config.compute.cpu_kernels:
            logger.warning(
                "compute.cpu_kernels is %r but PyTorch runs %s kernels: set ATEN_CPU_CAPABILITY=avx2 "
                "ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2 before starting irn (the workflow does)",
                config.compute.cpu_kernels, capability,
            )
    device = resolve_device(config.compute.device, local_rank=local_rank)
    logger.info(
        "device %s, %d CPU threads, CPU kernels %s", device, torch.get_num_threads(), torch.backends.cpu.get_cpu_capability()
    )
    return device


def skip_or_raise(config: RunConfig, image_id: str, error: Exception, skipped: dict[str, str]) -> None:
    """An image that cannot be read: re-raise (``dataset.on_unreadable: error``) or record it in
    ``skipped`` with the error's message, which names the file (``skip``)."""
    if config.dataset.on_unreadable != "skip":
        raise error
    logger.warning("skipping image id %s (dataset.on_unreadable: skip): %s", image_id, error)
    skipped[image_id] = str(error)


def readable_ids(
    config: RunConfig,
    dataset: SegmentationDataset,
    image_ids: list[str],
    *,
    labels: bool,
    check: Callable[[str], object] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """``image_ids`` whose image (and, with ``labels``, image-level labels; with ``check``, whatever
    ``check(image_id)`` reads, e.g. the ground-truth masks a model trains on) can be read, and the
    others -> reason. Under ``on_unreadable: error`` every id is returned unchecked (a training job
    then fails on the first unreadable image, naming it); under ``skip`` each image is decoded once."""
    if config.dataset.on_unreadable != "skip":
        return list(image_ids), {}
    from irn_core.errors import DatasetError
    from irn_core.progress import track

    kept: list[str] = []
    skipped: dict[str, str] = {}
    for image_id in track(image_ids, description="checking images", logger=logger, every=config.compute.progress_every):
        try:
            dataset.image(image_id)
            if labels:
                dataset.class_labels(image_id)
            if check is not None:
                check(image_id)
        except DatasetError as error:
            skip_or_raise(config, image_id, error, skipped)
            continue
        kept.append(image_id)
    return kept, skipped


def drop_skipped_upstream(
    config: RunConfig, image_ids: list[str], store: ShardedStore, skipped: dict[str, str]
) -> list[str]:
    """``image_ids`` less those an earlier stage left out of ``store``'s shard files (their ``skipped``
    attribute, ``dataset.on_unreadable: skip``). Each goes through :func:`skip_or_raise` with the
    recorded reason, which names the image file: a WARNING and into ``skipped`` under ``skip``, a
    :class:`~irn_core.errors.StoreError` under ``error``. Ids neither stored nor skipped are kept: a
    missing label stays the caller's error."""
    from irn_core.errors import StoreError

    left_out = store.skipped
    files = f"{store.product} shard files" if store.product else "shard files"
    kept: list[str] = []
    for image_id in image_ids:
        if image_id in left_out and image_id not in store:
            error = StoreError(f"image id {image_id!r} was left out of the {files}: {left_out[image_id]}")
            skip_or_raise(config, image_id, error, skipped)
            continue
        kept.append(image_id)
    return kept
