"""Sharding: sorted ids cut into fixed-size chunks, independent of input order."""

from __future__ import annotations

import random

import pytest

from irn_core.data.sharding import make_shards, shard_count, shard_ids, shard_index_of, shard_lookup
from irn_core.errors import InputError


def test_shards_are_sorted_chunks() -> None:
    ids = ["c", "a", "e", "b", "d"]
    assert make_shards(ids, 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert make_shards(ids, 5) == [["a", "b", "c", "d", "e"]]
    assert make_shards(ids, 10) == [["a", "b", "c", "d", "e"]]
    assert make_shards([], 3) == []


def test_shards_do_not_depend_on_input_order() -> None:
    ids = [f"2008_{index:06d}" for index in range(103)]
    reference = make_shards(ids, 16)
    generator = random.Random(5)
    for _ in range(5):
        shuffled = ids[:]
        generator.shuffle(shuffled)
        assert make_shards(shuffled, 16) == reference
    assert [len(shard) for shard in reference] == [16] * 6 + [7]
    assert sum(reference, []) == sorted(ids)


def test_shard_count_and_lookup() -> None:
    assert shard_count(0, 4) == 0
    assert shard_count(8, 4) == 2
    assert shard_count(9, 4) == 3
    ids = [f"id_{index:02d}" for index in range(10)]
    shards = make_shards(ids, 3)
    assert len(shards) == shard_count(len(ids), 3)
    lookup = shard_lookup(ids, 3)
    for index, shard in enumerate(shards):
        assert shard_ids(ids, 3, index) == shard
        for image_id in shard:
            assert shard_index_of(image_id, ids, 3) == index == lookup[image_id]


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="positive integer"):
        make_shards(["a"], 0)
    with pytest.raises(InputError, match="positive integer"):
        shard_count(3, 1.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="image id a appears twice"):
        make_shards(["a", "b", "a"], 2)
    with pytest.raises(InputError, match="image id z is not among"):
        shard_index_of("z", ["a", "b"], 1)
    with pytest.raises(InputError, match="shard index 2 outside"):
        shard_ids(["a", "b"], 1, 2)
