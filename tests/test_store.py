"""The HDF5 shard store: round trips, atomicity and the errors on bad files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from irn_core.errors import StoreError
from irn_core.store import SCHEMA_VERSION, ShardedStore, ShardReader, ShardWriter, shard_file_name


def write_shard(path: Path, *, product: str = "cam", ids: tuple[str, ...] = ("2007_000032", "2007_000039")) -> dict:
    rng = np.random.default_rng(0)
    content = {}
    with ShardWriter(path, product=product, config_hash="h123", shard_index=3, config={"beta": 10},
                     float16=("cam_s4",), code_version="test") as writer:
        for image_id in ids:
            datasets = {
                "cam_s4": rng.random((2, 5, 7), dtype=np.float32),
                "cam_s1": rng.random((2, 17, 25), dtype=np.float32),
                "class_ids": np.array([3, 11]),
                "masks_s1": rng.random((3, 17, 25)) > 0.5,
                "empty": np.zeros((0, 17, 25), bool),
            }
            writer.add(image_id, datasets, {"height": 17, "width": 25})
            content[image_id] = datasets
    return content


def test_round_trip_keeps_values_dtypes_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / shard_file_name(3)
    assert path.name == "shard-00003.h5"
    content = write_shard(path)
    with ShardReader(path, product="cam") as shard:
        assert shard.image_ids == ["2007_000032", "2007_000039"]
        assert "2007_000039" in shard and "2007_000040" not in shard
        assert shard.config_hash == "h123" and shard.code_version == "test" and shard.config == {"beta": 10}
        for image_id, datasets in content.items():
            stored = shard.read(image_id)
            assert stored["cam_s4"].dtype == np.float16
            np.testing.assert_allclose(stored["cam_s4"], datasets["cam_s4"], atol=1e-3)
            np.testing.assert_array_equal(stored["cam_s1"], datasets["cam_s1"])
            assert stored["cam_s1"].dtype == np.float32
            np.testing.assert_array_equal(stored["masks_s1"], datasets["masks_s1"])
            assert stored["empty"].shape == (0, 17, 25)
            assert shard.attributes(image_id) == {"height": 17, "width": 25}
        only = shard.read("2007_000032", ["class_ids"])
        assert list(only) == ["class_ids"]
        with h5py.File(path) as raw:
            assert raw["2007_000032/cam_s1"].compression == "gzip"
            assert raw.attrs["schema_version"] == SCHEMA_VERSION


def test_same_content_gives_same_bytes(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.h5")
    write_shard(tmp_path / "b.h5")
    digest = [hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in ("a.h5", "b.h5")]
    assert digest[0] == digest[1]


def test_torch_tensors_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    with ShardWriter(path, product="irnet", config_hash="x", shard_index=0) as writer:
        writer.add("a", {"boundary_s4": torch.ones(3, 4)})
    with ShardReader(path) as shard:
        np.testing.assert_array_equal(shard.read("a")["boundary_s4"], np.ones((3, 4), np.float32))


def test_failure_inside_writer_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.h5"
    write_shard(path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with ShardWriter(path, product="cam", config_hash="new", shard_index=0) as writer:
            writer.add("x", {"cam_s4": np.zeros((1, 2, 2))})
            raise RuntimeError("image 3 failed")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.h5"]


def test_duplicate_and_invalid_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="written twice"):
        with ShardWriter(tmp_path / "d.h5", product="cam", config_hash="x", shard_index=0) as writer:
            writer.add("a", {"v": np.zeros(2)})
            writer.add("a", {"v": np.zeros(2)})
    with pytest.raises(StoreError, match="not a valid group name"):
        with ShardWriter(tmp_path / "e.h5", product="cam", config_hash="x", shard_index=0) as writer:
            writer.add("a/b", {"v": np.zeros(2)})
    assert not (tmp_path / "d.h5").exists() and not (tmp_path / "e.h5").exists()


def test_reader_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "shard-00001.h5"
    write_shard(path)
    with pytest.raises(StoreError, match="missing"):
        ShardReader(tmp_path / "absent.h5")
    with pytest.raises(StoreError, match=r"holds product 'cam', expected 'irnet'"):
        ShardReader(path, product="irnet")
    with ShardReader(path) as shard:
        with pytest.raises(StoreError, match=r"shard-00001.h5: image id '2007_999999' is not in this shard"):
            shard.read("2007_999999")
        with pytest.raises(StoreError, match="has no dataset 'boundary_s4'"):
            shard.read("2007_000032", ["boundary_s4"])

    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(StoreError, match="truncated.h5: not a readable HDF5 file"):
        ShardReader(truncated)

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(StoreError, match="garbage.h5"):
        ShardReader(garbage)


def test_wrong_schema_version_and_missing_groups(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    write_shard(path)
    with h5py.File(path, "r+") as raw:
        raw.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        ShardReader(path)

    path = tmp_path / "lost_group.h5"
    write_shard(path)
    with h5py.File(path, "r+") as raw:
        del raw["2007_000039"]
    with pytest.raises(StoreError, match="groups missing for image ids \\['2007_000039'\\]"):
        ShardReader(path)

    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as raw:
        raw["x"] = 1
    with pytest.raises(StoreError, match="not an irn shard file"):
        ShardReader(plain)


def test_sharded_store_finds_ids_across_files(tmp_path: Path) -> None:
    write_shard(tmp_path / "s0.h5", ids=("a", "b"))
    write_shard(tmp_path / "s1.h5", ids=("c",))
    with ShardedStore([tmp_path / "s0.h5", tmp_path / "s1.h5"], product="cam") as store:
        assert store.image_ids == ["a", "b", "c"]
        assert store.read("c", ["class_ids"])["class_ids"].tolist() == [3, 11]
        with pytest.raises(StoreError, match="image id 'z' is in none of the cam shard files"):
            store.read("z")
    with h5py.File(tmp_path / "s1.h5") as raw:
        assert json.loads(raw.attrs["image_ids"]) == ["c"]
