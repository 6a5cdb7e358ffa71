"""Input manifests of the workflow's jobs: which dataset files a job reads, with their content hashes.

A per-shard job's manifest lists the ids of its shard that its product is made for
(:meth:`~irn_core.steps.common.ShardPlan.product_ids`) and the files it reads for them
(:data:`PRODUCT_READS`); a training or evaluation job's manifest lists every id of a role. See
:mod:`irn_core.data.fingerprints` for why and how. The workflow writes the manifests at DAG-build time
(or, for a dataset the workflow generates itself, in a job after the generator); both call the
functions here, so both write the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from irn_core.config import RunConfig
from irn_core.data.fingerprints import READS, FingerprintCache, manifest
from irn_core.steps.common import ShardPlan, open_run_dataset

PRODUCT_READS: dict[str, tuple[str, ...]] = {
    "cam": ("image", "labels"),
    "ir_labels": ("image",),
    "irnet": ("image",),
}
"""What a per-shard product reads from the dataset for each of its ids; products not listed read the
image only (the downstream models' predictions)."""

INPUTS_DIR = "inputs"
CACHE_FILE = ".fingerprint-cache.json"


def product_reads(product: str) -> tuple[str, ...]:
    return PRODUCT_READS.get(product, ("image",))


def parse_reads(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"image+labels"`` (or a sequence) -> ("image", "labels"), checked against :data:`READS`."""
    parts = tuple(text.replace(",", "+").split("+")) if isinstance(text, str) else tuple(text)
    unknown = [part for part in parts if part not in READS]
    if unknown or not parts:
        raise ValueError(f"reads {text!r}: each part must be one of {', '.join(READS)}")
    return parts


def shard_manifest_path(config: RunConfig, product: str, shard: int | str) -> Path:
    name = f"shard-{int(shard):05d}.json" if str(shard).isdigit() else f"shard-{shard}.json"
    return config.run_dir / INPUTS_DIR / product / name


def role_manifest_path(config: RunConfig, role: str, reads: Sequence[str]) -> Path:
    return config.run_dir / INPUTS_DIR / f"{role}.{'+'.join(reads)}.json"


def fingerprint_cache(config: RunConfig) -> FingerprintCache:
    return FingerprintCache(config.run_dir / INPUTS_DIR / CACHE_FILE)


def shard_manifest_text(
    config: RunConfig, plan: ShardPlan, product: str, shard: int, reads: Sequence[str], cache: FingerprintCache
) -> str:
    """The manifest of shard ``shard`` of ``product``."""
    return manifest(
        open_run_dataset(config),
        plan.product_ids(shard, product),
        reads,
        cache,
        description={"product": product, "shard": shard},
    )


def role_manifest_text(
    config: RunConfig, plan: ShardPlan, role: str, reads: Sequence[str], cache: FingerprintCache
) -> str:
    """The manifest of every id of ``role`` (what a training or evaluation job reads)."""
    return manifest(open_run_dataset(config), plan.all_ids(role), reads, cache, description={"role": role})
