"""Rows of docs/bad_input.md not covered elsewhere: a writer killed mid-write, a full disk, ids
without files, images without foreground classes, config values of the wrong type."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from irn_core.config import load_config, validate_config
from irn_core.data import synthetic
from irn_core.data.fingerprints import FingerprintCache, manifest
from irn_core.data.registry import open_dataset
from irn_core.errors import ConfigError, DatasetError, StoreError
from irn_core.steps.evaluate import cam_labels
from irn_core.steps.pseudo_labels import run_pseudo_labels
from irn_core.store import ShardReader, ShardWriter

WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import irn_core.store
    from irn_core.store import ShardWriter

    def stall(descriptor):  # kill point "writing": the bytes are in the temporary file, not yet renamed
        print("writing", flush=True)
        time.sleep(60)

    if sys.argv[2] == "writing":
        irn_core.store.os.fsync = stall
    with ShardWriter(sys.argv[1], product="cam", config_hash="new", shard_index=0) as writer:
        for index in range(3):
            writer.add(f"im{index}", {"cam_s4": np.full((2, 64, 64), index, np.float32)})
        if sys.argv[2] == "building":
            print("building", flush=True)
            time.sleep(60)
    """
)


def _finished_shard(path: Path) -> None:
    with ShardWriter(path, product="cam", config_hash="old", shard_index=0) as writer:
        writer.add("old", {"cam_s4": np.ones((1, 4, 4), np.float32)})


@pytest.mark.parametrize("previous", [False, True], ids=["new", "replacing"])
@pytest.mark.parametrize("moment", ["building", "writing"])
def test_a_job_killed_mid_write_leaves_nothing_a_later_rule_accepts(
    tmp_path: Path, moment: str, previous: bool
) -> None:
    target = tmp_path / "cam" / "shard-00000.h5"
    target.parent.mkdir()
    if previous:
        _finished_shard(target)
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target), moment], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == moment
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    leftovers = [path for path in target.parent.iterdir() if path != target]
    if moment == "building":  # the file is still in memory: nothing on disk
        assert leftovers == []
    else:  # a temporary sibling that no rule reads (rules read only final paths)
        assert len(leftovers) == 1 and leftovers[0].name.startswith(".shard-00000.h5.tmp-")
    if previous:  # the finished shard is untouched
        with ShardReader(target, product="cam") as reader:
            assert reader.image_ids == ["old"] and reader.config_hash == "old"
    else:  # Snakemake sees a missing output and runs the job again
        assert not target.exists()
        with pytest.raises(StoreError, match="missing"):
            ShardReader(target)


DISK_FULL = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    from irn_core.errors import StoreError
    from irn_core.store import ShardWriter
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    noise = np.random.default_rng(0).random((8, 128, 128), dtype=np.float32)
    try:
        with ShardWriter(sys.argv[1], product="cam", config_hash="new", shard_index=0) as writer:
            for index in range(20):
                writer.add(f"im{index}", {"cam_s4": noise + index})
    except (OSError, StoreError) as error:
        print("failed:", type(error).__name__, error)
        sys.exit(3)
    """
)


def test_a_full_disk_fails_the_write_and_keeps_the_finished_shard(tmp_path: Path) -> None:
    target = tmp_path / "shard-00000.h5"
    _finished_shard(target)
    before = target.read_bytes()
    result = subprocess.run([sys.executable, "-c", DISK_FULL, str(target)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert target.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == [target.name]  # the temporary file was removed


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "data"
    synthetic.generate(synthetic.SyntheticConfig(seed=1, num_train=3, num_val=1, image_size_range=(64, 64)), root,
                       progress=False)
    return root


def test_an_id_without_image_is_fingerprinted_as_missing_and_fails_its_job_clearly(dataset_root: Path) -> None:
    dataset = open_dataset("voc12", root=dataset_root)
    text = manifest(dataset, ["syn_000000", "nowhere"], ("image",), FingerprintCache(None))
    sources = json.loads(text)["sources"]
    assert sources["nowhere"] == {"JPEGImages/nowhere.jpg": None} and sources["syn_000000"]["JPEGImages/syn_000000.jpg"]
    with pytest.raises(DatasetError, match=r"nowhere\.jpg \(image id nowhere\): image file is missing"):
        dataset.image("nowhere")


def test_image_files_outside_the_split_lists_are_ignored(dataset_root: Path, tmp_path: Path) -> None:
    config = load_config([], {"name": "extra", "output_dir": str(tmp_path), "dataset": {
        "kind": "voc12", "root": str(dataset_root), "train_split": "train", "infer_split": "train"}})
    from irn_core.steps.common import shard_plan

    assert shard_plan(config).all_ids("train") == ["syn_000000", "syn_000001", "syn_000002"]  # syn_000003 is val


def test_an_image_without_foreground_classes_gets_background_labels_and_no_instances(tmp_path: Path) -> None:
    config = load_config([], {"name": "empty", "output_dir": str(tmp_path), "shard_size": 4, "dataset": {
        "kind": "synthetic", "root": str(tmp_path / "unused"), "train_split": "train", "infer_split": "train",
        "synthetic": {"num_train": 1, "num_val": 0}}})
    cams, relations = tmp_path / "cam.h5", tmp_path / "irnet.h5"
    with ShardWriter(cams, product="cam", config_hash="x", shard_index=0) as writer:
        writer.add("syn_000000", {"cam_s4": np.zeros((0, 5, 6), np.float32), "class_ids": np.zeros(0, np.int64)},
                   {"height": 20, "width": 24})
    with ShardWriter(relations, product="irnet", config_hash="x", shard_index=0) as writer:
        writer.add("syn_000000", {"boundary_s4": np.zeros((5, 6), np.float32),
                                  "displacement_s4": np.zeros((2, 5, 6), np.float32)})
    semantic, instances = tmp_path / "semantic.h5", tmp_path / "instances.h5"
    run_pseudo_labels(config, 0, cams, relations, semantic, instances)
    with ShardReader(semantic) as reader:
        assert not reader.read("syn_000000")["semantic_s1"].any()
        assert reader.read("syn_000000")["semantic_s1"].shape == (20, 24)
    with ShardReader(instances) as reader:
        stored = reader.read("syn_000000")
        assert stored["masks_s1"].shape == (0, 20, 24) and len(stored["scores"]) == 0
    assert not cam_labels(np.zeros((0, 3, 4), np.float32), np.zeros(0, np.int64), 0.15).any()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"shard_size": "many"}, r"shard_size: Input should be a valid integer"),
        ({"random_walk": {"beta": [10]}}, r"random_walk.beta: Input should be a valid number"),
        ({"dataset": {"on_unreadable": "ignore"}}, r"dataset.on_unreadable: Input should be 'error' or 'skip'"),
        ({"compute": {"rule_resources": {"make_cam": {"memory": 10}}}}, r"make_cam.memory: Extra inputs"),
        ({"datasets": {}}, r"datasets: Extra inputs are not permitted"),
    ],
)
def test_config_typos_and_wrong_types_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(data)
