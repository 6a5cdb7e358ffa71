"""Recorded shard plan, input manifests, per-rule resources and the SLURM_CONF fix of the workflow."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from irn_core.config import load_config
from irn_core.data import fingerprints, synthetic
from irn_core.data.fingerprints import FingerprintCache
from irn_core.errors import PlanError
from irn_core.steps.common import ShardPlan, extend_plan, fresh_plan, shard_plan, update_recorded_plan
from irn_core.workflow_support import WorkflowContext, prepare, preserve_slurm_conf


def _ids(*numbers: int) -> list[str]:
    return [f"im{number:03d}" for number in numbers]


def test_extend_plan_appends_new_ids_to_new_shards_and_drops_removed_ids_in_place() -> None:
    first = extend_plan(None, {"train": _ids(0, 1, 2, 3), "infer": _ids(3, 4, 5, 6)}, 2)
    # ids grouped by roles (train only, train + infer, infer only), each group sorted and cut
    assert first.shards == (tuple(_ids(0, 1)), tuple(_ids(2)), tuple(_ids(3)), tuple(_ids(4, 5)), tuple(_ids(6)))
    # new ids, also ones that sort between the old ones, go to new shards; short shards stay short
    grown = extend_plan(first, {"train": _ids(0, 1, 2, 3), "infer": _ids(3, 4, 5, 6, 7) + ["im0035", "im9"]}, 2)
    assert grown.shards[:5] == first.shards
    assert grown.shards[5:] == (("im0035", "im007"), ("im9",))
    assert grown.infer_ids == frozenset(_ids(3, 4, 5, 6, 7) + ["im0035", "im9"])
    # a removed id changes its shard only (a shard without ids has no files); back, it is back in place
    shrunk = extend_plan(grown, {"train": _ids(0, 1, 2, 3), "infer": _ids(3, 4, 7) + ["im0035", "im9"]}, 2)
    assert shrunk.shards == grown.shards
    assert shrunk.ids(3) == _ids(4) and shrunk.ids(4) == [] and shrunk.product_ids(3, "irnet") == _ids(4)
    assert shrunk.product_shards("irnet") == [2, 3, 5, 6]
    assert shrunk.all_ids("infer") == ["im003", "im004", "im0035", "im007", "im9"]  # plan order
    restored = extend_plan(shrunk, {"train": _ids(0, 1, 2, 3), "infer": _ids(3, 4, 5, 6, 7) + ["im0035", "im9"]}, 2)
    assert restored == grown
    # nothing in common (another dataset): a fresh plan
    other = extend_plan(grown, {"train": ["a", "b"], "infer": []}, 3)
    assert other.shards == (("a", "b"),)
    # one split for every role: the sorted ids cut into shards, as before role groups
    assert extend_plan(None, {"train": _ids(2, 0, 1), "infer": _ids(0, 1, 2)}, 2).shards == (
        tuple(_ids(0, 1)), tuple(_ids(2)))


def _synthetic_config(tmp_path: Path, **dataset: object) -> object:
    return load_config([], {
        "name": "plan", "output_dir": str(tmp_path / "results"), "shard_size": 4,
        "dataset": {"kind": "synthetic", "root": str(tmp_path / "data"), "train_split": "train",
                    "infer_split": "val", "synthetic": {"num_train": 6, "num_val": 3}, **dataset},
    })


def test_recorded_plan_is_written_once_and_read_back_by_jobs(tmp_path: Path) -> None:
    config = _synthetic_config(tmp_path)
    plan = update_recorded_plan(config)
    path = config.run_dir / "shards.json"
    before = path.stat().st_mtime_ns
    assert update_recorded_plan(config) == plan and path.stat().st_mtime_ns == before  # unchanged: not rewritten
    assert shard_plan(config) == plan == fresh_plan(config)
    # a job reads the recorded plan even when the split lists say otherwise
    grown = _synthetic_config(tmp_path, synthetic={"num_train": 6, "num_val": 5})
    assert shard_plan(grown) == plan
    assert update_recorded_plan(grown).shards[: len(plan)] == plan.shards
    assert len(shard_plan(grown).all_ids("infer")) == 5
    # another shard size: a new plan
    resized = load_config([], {**json.loads(grown.model_dump_json()), "shard_size": 2})
    assert shard_plan(resized).shards == fresh_plan(resized).shards
    path.write_text("{not json")
    with pytest.raises(PlanError, match="shards.json"):
        shard_plan(config)


def test_plan_json_round_trip() -> None:
    plan = extend_plan(None, {"train": _ids(0, 1), "infer": _ids(1, 2), "val": _ids(3)}, 2)
    again = ShardPlan.from_json(plan.to_json())
    assert again == plan and again.product_shards("deeplab") == [3] and len(again) == 4


@pytest.fixture(scope="module")
def voc_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small VOC-layout dataset on disk (the synthetic generator's output, used as kind voc12)."""
    root = tmp_path_factory.mktemp("voc") / "data"
    synthetic.generate(synthetic.SyntheticConfig(seed=3, num_train=6, num_val=3, image_size_range=(64, 72),
                                                 objects_per_image=(1, 2)), root, progress=False)
    return root


def _voc_context(tmp_path: Path, root: Path) -> WorkflowContext:
    config = {
        "name": "inputs", "output_dir": str(tmp_path / "results"), "shard_size": 4,
        "dataset": {"kind": "voc12", "root": str(root), "train_split": "train", "infer_split": "val"},
    }
    return prepare(config, Path("unused"))


def test_manifests_change_only_with_the_content_of_the_files_their_jobs_read(tmp_path: Path, voc_layout: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(voc_layout, root)
    context = _voc_context(tmp_path, root)
    assert context.shard_inputs("cam").endswith("inputs/cam/shard-{shard}.json")
    context.shard_inputs("ir_labels")
    context.training_inputs("train")
    context.evaluation_inputs("infer")
    inputs = tmp_path / "results" / "inputs" / "inputs"
    manifests = sorted(path for path in inputs.rglob("*.json") if not path.name.startswith("."))
    names = [str(path.relative_to(inputs)) for path in manifests]
    # train ids 0-5 in shards 0 and 1, val ids 6-8 in shard 2: cam in all, ir_labels in 0 and 1
    assert names == ["cam/shard-00000.json", "cam/shard-00001.json", "cam/shard-00002.json",
                     "infer.ground_truth.json", "ir_labels/shard-00000.json", "ir_labels/shard-00001.json",
                     "train.image+labels.json"]
    cam = json.loads((inputs / "cam" / "shard-00001.json").read_text())
    assert cam["ids"] == ["syn_000004", "syn_000005"]
    assert set(cam["sources"]["syn_000005"]) == {"JPEGImages/syn_000005.jpg", "Annotations/syn_000005.xml"}
    times = {path: path.stat().st_mtime_ns for path in manifests}

    def refresh() -> set[str]:
        again = _voc_context(tmp_path, root)
        again.shard_inputs("cam"), again.shard_inputs("ir_labels"), again.training_inputs("train")
        again.evaluation_inputs("infer")
        changed = {str(path.relative_to(inputs)) for path in manifests
                   if path.stat().st_mtime_ns != times[path]}
        times.update({path: path.stat().st_mtime_ns for path in manifests})
        return changed

    # a new modification time with the same bytes changes nothing
    image = root / "JPEGImages" / "syn_000006.jpg"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert refresh() == set()
    # new bytes in one validation image: only the CAM manifest of its shard
    image.write_bytes(image.read_bytes() + b"\0")
    assert refresh() == {"cam/shard-00002.json"}
    # a training image: its CAM and confident-region shards and the training manifest
    (root / "JPEGImages" / "syn_000001.jpg").write_bytes(b"not a jpeg")
    assert refresh() == {"cam/shard-00000.json", "ir_labels/shard-00000.json", "train.image+labels.json"}
    # a ground-truth mask of a validation image: the evaluation's manifest only
    mask = root / "SegmentationObject" / "syn_000007.png"
    mask.write_bytes(mask.read_bytes() + b"\0")
    assert refresh() == {"infer.ground_truth.json"}


def test_fingerprint_cache_reads_a_file_again_only_when_its_size_or_time_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [tmp_path / f"{index}.bin" for index in range(3)]
    for index, path in enumerate(files):
        path.write_bytes(bytes([index]) * 100)
    reads: list[Path] = []
    digest = fingerprints._file_digest
    monkeypatch.setattr(fingerprints, "_file_digest", lambda path: reads.append(path) or digest(path))
    cache = FingerprintCache(tmp_path / "cache.json")
    first = cache.fingerprints(files)
    cache.save()
    assert sorted(reads) == files and first[files[0]] != first[files[1]]
    reads.clear()
    again = FingerprintCache(tmp_path / "cache.json").fingerprints(files + [tmp_path / "missing"])
    assert reads == [] and again[tmp_path / "missing"] is None
    files[2].write_bytes(b"other")
    assert FingerprintCache(tmp_path / "cache.json").fingerprints(files)[files[2]] != first[files[2]]
    assert reads == [files[2]]


def test_rule_resources_come_from_defaults_then_config(tmp_path: Path) -> None:
    dataset = {"kind": "synthetic", "root": str(tmp_path / "data"), "train_split": "train", "infer_split": "train",
               "synthetic": {"num_train": 2, "num_val": 0}}
    context = prepare({"name": "resources", "output_dir": str(tmp_path), "dataset": dataset, "compute": {
        "threads": 3,
        "rule_resources": {"default": {"slurm_partition": "gpu", "runtime": 90},
                           "make_cam": {"mem_mb": 123, "threads": 5, "gres": "gpu:1"}}}}, Path("unused"))
    assert context.resources("make_cam", gpu=1) == {
        "gpu": 1, "mem_mb": 123, "runtime": 90, "slurm_partition": "gpu", "gres": "gpu:1"}
    assert context.resources("summary") == {"mem_mb": 1000, "runtime": 90, "slurm_partition": "gpu"}
    assert context.threads("make_cam") == 5 and context.threads("ir_labels", 1) == 1
    assert context.threads("train_cam") == 3


def test_srun_inside_a_slurm_job_gets_slurm_conf_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}/usr/bin")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_CONF", "/somewhere/slurm.conf")
    assert preserve_slurm_conf(tmp_path / "shim") is None  # not in a job
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    shim = preserve_slurm_conf(tmp_path / "shim")
    assert shim is not None and os.environ["PATH"].split(os.pathsep)[0] == str(shim)
    text = (shim / "srun").read_text()
    assert "export SLURM_CONF=/somewhere/slurm.conf" in text and f"exec {fake_bin / 'srun'}" in text
    assert (shim / "srun").stat().st_mode & stat.S_IXUSR
    assert preserve_slurm_conf(tmp_path / "shim") == shim  # again: PATH holds the folder once
    assert os.environ["PATH"].count(str(shim)) == 1


def test_coco_manifests_hash_each_image_and_its_own_annotations(tmp_path: Path, real_samples: Path) -> None:
    from irn_core.data.registry import open_dataset

    source = real_samples / "coco"
    annotations = json.loads((source / "annotations.json").read_text())
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    dataset = open_dataset("coco", image_dir=source / "images", annotation_file=tmp_path / "annotations.json")
    ids = dataset.ids()[:2]
    before = json.loads(fingerprints.manifest(dataset, ids, ("image", "labels"), FingerprintCache(None)))["sources"]
    assert set(before[ids[0]]) == {f"{ids[0]}.jpg", f"annotations:{ids[0]}"}
    coco_id = dataset.coco_image_id(ids[1])
    changed = next(item for item in annotations["annotations"] if item["image_id"] == coco_id)
    changed["category_id"] = next(c["id"] for c in annotations["categories"] if c["id"] != changed["category_id"])
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    dataset = open_dataset("coco", image_dir=source / "images", annotation_file=tmp_path / "annotations.json")
    after = json.loads(fingerprints.manifest(dataset, ids, ("image", "labels"), FingerprintCache(None)))["sources"]
    assert after[ids[0]] == before[ids[0]] and after[ids[1]] != before[ids[1]]
    assert after[ids[1]][f"{ids[1]}.jpg"] == before[ids[1]][f"{ids[1]}.jpg"]
