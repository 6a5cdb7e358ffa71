"""Sharding of image ids: fixed-size chunks of the sorted id list.

Shards depend only on the *set* of ids and the shard size: the ids are sorted (string order) and cut
into consecutive chunks of ``shard_size`` (the last one may be shorter). The same id set therefore gives
the same shards on every run, whatever order the ids were listed in. Adding or removing ids moves the
ids that sort after them into other shards, so a changed id set is a new sharding.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from irn_core.errors import InputError


def _check_shard_size(shard_size: int) -> int:
    if isinstance(shard_size, bool) or int(shard_size) != shard_size or shard_size < 1:
        raise InputError(f"shard size must be a positive integer, got {shard_size!r}")
    return int(shard_size)


def _sorted_unique(ids: Sequence[str]) -> list[str]:
    ordered = sorted(str(image_id) for image_id in ids)
    for previous, current in zip(ordered, ordered[1:]):
        if previous == current:
            raise InputError(f"image id {current} appears twice in the ids to shard")
    return ordered


def shard_count(n_ids: int, shard_size: int) -> int:
    """Number of shards for ``n_ids`` ids: ceil(n_ids / shard_size) (0 for no ids)."""
    shard_size = _check_shard_size(shard_size)
    if n_ids < 0:
        raise InputError(f"number of ids must be >= 0, got {n_ids}")
    return -(-int(n_ids) // shard_size)


def make_shards(ids: Sequence[str], shard_size: int) -> list[list[str]]:
    """Cut the sorted ids into shards of ``shard_size`` (the last may be shorter). Duplicate ids raise InputError."""
    shard_size = _check_shard_size(shard_size)
    ordered = _sorted_unique(ids)
    return [ordered[start : start + shard_size] for start in range(0, len(ordered), shard_size)]


def shard_ids(ids: Sequence[str], shard_size: int, shard_index: int) -> list[str]:
    """The ids of shard ``shard_index`` (0-based) of :func:`make_shards`."""
    shards = make_shards(ids, shard_size)
    if not 0 <= shard_index < len(shards):
        raise InputError(f"shard index {shard_index} outside 0..{len(shards) - 1} ({len(ids)} ids, size {shard_size})")
    return shards[shard_index]


def shard_index_of(image_id: str, ids: Sequence[str], shard_size: int) -> int:
    """Index of the shard of :func:`make_shards` that holds ``image_id``."""
    shard_size = _check_shard_size(shard_size)
    ordered = _sorted_unique(ids)
    position = bisect.bisect_left(ordered, image_id)
    if position == len(ordered) or ordered[position] != image_id:
        raise InputError(f"image id {image_id} is not among the {len(ordered)} ids to shard")
    return position // shard_size


def shard_lookup(ids: Sequence[str], shard_size: int) -> dict[str, int]:
    """Map every id to its shard index (for many look-ups at once)."""
    return {
        image_id: index for index, shard in enumerate(make_shards(ids, shard_size)) for image_id in shard
    }
