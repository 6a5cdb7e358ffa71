"""The workflow under failures and changes, on an existing (not generated) VOC-layout dataset.

One run with a corrupt validation image and ``--keep-going``: the other shards finish and the error
names the file and the image id; after the fix only that shard and what depends on it is redone. Then,
by dry runs of the finished run: a changed image re-runs exactly its dependants, added images only
new shards, a removed image only its shard, a changed config value exactly the rules it affects.
Finally ``dataset.on_unreadable: skip`` runs through a corrupt image and lists it in the shard file,
the evaluation and the summary.

The dataset: 10 training ids (syn_000000..09) and 8 validation ids (syn_000010..17), of which the
validation list first holds 4. Training on ``train``, pseudo labels for ``val``, shards of 4, ids
grouped by role: shards 0-2 the training ids (4, 4, 2), shard 3 the validation ids syn_000010..13;
the 4 added validation ids -> shard 4.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from irn_core.data import synthetic

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
ALL_VAL = [f"syn_{index:06d}" for index in range(10, 18)]

CONFIG = {
    "name": "robust",
    "seed": 0,
    "shard_size": 4,
    "dataset": {"kind": "voc12", "root": "dataset", "train_split": "train", "infer_split": "val"},
    "cam": {
        "backbone": {"name": "resnet18", "weights": "none", "frozen_batchnorm": False},
        "train": {"batch_size": 4, "epochs": 1, "crop_size": 64, "resize_long": [64, 72], "frozen_stages": 0},
        "infer": {"scales": [1.0]},
    },
    "irnet": {
        "backbone": {"name": "resnet18", "weights": "none", "frozen_batchnorm": False},
        "backbone_init": "cam",
        "train": {"batch_size": 4, "epochs": 1, "crop_size": 64, "radius": 5, "displacement_mean_ids": "train"},
        "infer": {"pad_to": 80},
    },
    "compute": {"device": "cpu", "threads": 1},
}


def snakemake(workdir: Path, config: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile", str(config),
               "--directory", str(workdir), "--cores", "2", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        pytest.fail(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


RULE_LINE = re.compile(r"^\s*(?:local)?rule (\w+):$", re.MULTILINE)
SHARD = re.compile(r"^\s*wildcards:.*\bshard=(\d{5})", re.MULTILINE)


def planned(workdir: Path, config: Path) -> set[str]:
    """The jobs a dry run would run: ``rule`` or ``rule/shard`` (group members are indented)."""
    text = snakemake(workdir, config, "--dry-run").stdout
    starts = list(RULE_LINE.finditer(text))
    jobs = set()
    for start, end in zip(starts, [*starts[1:], None]):
        block = text[start.end(): end.start() if end is not None else len(text)]
        shard = SHARD.search(block)
        jobs.add(start.group(1) if shard is None else f"{start.group(1)}/{int(shard.group(1))}")
    return jobs


EVALUATION = {"evaluate_cam", "evaluate_semantic", "evaluate_instances", "summary", "report", "all"}


def shard_jobs(shard: int) -> set[str]:
    return {f"make_cam/{shard}", f"irnet_infer/{shard}", f"pseudo_labels/{shard}"}


def write_split(root: Path, ids: list[str]) -> None:
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{image_id}\n" for image_id in ids))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished run, made through a failure: a corrupt image, --keep-going, the fix, a re-run."""
    workdir = tmp_path_factory.mktemp("robust")
    root = workdir / "dataset"
    synthetic.generate(synthetic.SyntheticConfig(seed=4, num_train=10, num_val=8, image_size_range=(64, 72),
                                                 objects_per_image=(1, 2)), root, progress=False)
    write_split(root, ALL_VAL[:4])
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    image = root / "JPEGImages" / "syn_000013.jpg"  # shard 3 (validation)
    original = image.read_bytes()
    image.write_bytes(original[: len(original) // 3])

    failed = snakemake(workdir, config, "--keep-going", check=False)
    assert failed.returncode != 0
    log = (workdir / "results" / "robust" / "logs" / "make_cam" / "00003.log").read_text()
    assert "image id syn_000013" in log and "JPEGImages/syn_000013.jpg" in log and "truncated" in log
    results = workdir / "results" / "robust"
    assert [path.name for path in sorted((results / "cam").glob("*.h5"))] == [f"shard-0000{i}.h5" for i in range(3)]
    assert [path.name for path in sorted((results / "ir_labels").glob("*.h5"))] == [
        f"shard-0000{i}.h5" for i in range(3)]
    assert (results / "models" / "irnet.pt").exists()  # training went on without the broken shard
    assert not (results / "cam" / "shard-00003.h5").exists() and not (results / "irnet" / "shard-00003.h5").exists()

    image.write_bytes(original)
    assert planned(workdir, config) == shard_jobs(3) | EVALUATION
    snakemake(workdir, config)
    return workdir, config


@pytest.mark.slow
def test_nothing_to_do_after_the_fixed_run(run: tuple[Path, Path]) -> None:
    workdir, config = run
    assert planned(workdir, config) == set()


@pytest.mark.slow
def test_a_changed_inference_image_reruns_its_shard_only(run: tuple[Path, Path]) -> None:
    workdir, config = run
    image = workdir / "dataset" / "JPEGImages" / "syn_000011.jpg"  # shard 3, val
    original = image.read_bytes()
    try:
        image.write_bytes(original + b"\0")
        assert planned(workdir, config) == shard_jobs(3) | EVALUATION
    finally:
        image.write_bytes(original)
    assert planned(workdir, config) == set()  # back to the recorded content: nothing to do


@pytest.mark.slow
def test_a_changed_training_image_retrains(run: tuple[Path, Path]) -> None:
    workdir, config = run
    image = workdir / "dataset" / "JPEGImages" / "syn_000001.jpg"
    original = image.read_bytes()
    try:
        image.write_bytes(original + b"\0")
        jobs = planned(workdir, config)
    finally:
        image.write_bytes(original)
    assert {"train_cam", "train_irnet", "make_cam/0", "make_cam/3", "ir_labels/0", "ir_labels/2"} <= jobs


@pytest.mark.slow
def test_added_images_go_to_new_shards_and_a_removed_one_reruns_its_shard(run: tuple[Path, Path]) -> None:
    workdir, config = run
    root = workdir / "dataset"
    try:
        write_split(root, ALL_VAL)
        assert planned(workdir, config) == shard_jobs(4) | EVALUATION
        plan = json.loads((workdir / "results" / "robust" / "shards.json").read_text())
        assert plan["shards"][4] == ALL_VAL[4:] and plan["shards"][3] == ALL_VAL[:4]
        write_split(root, ALL_VAL[:1] + ALL_VAL[2:4])  # syn_000011 (shard 3) removed
        assert planned(workdir, config) == shard_jobs(3) | EVALUATION
    finally:
        write_split(root, ALL_VAL[:4])
    assert planned(workdir, config) == set()


@pytest.mark.slow
def test_a_changed_config_value_reruns_exactly_the_rules_it_affects(run: tuple[Path, Path]) -> None:
    workdir, config = run
    cases = {
        ("cam", "eval_threshold", 0.2): {"evaluate_cam", "summary", "report", "all"},
        ("ir_labels", "fg_threshold", 0.4): {f"ir_labels/{shard}" for shard in range(3)} | {"train_irnet"}
        | {"irnet_infer/3", "pseudo_labels/3", "evaluate_semantic", "evaluate_instances", "summary", "report", "all"},
        ("random_walk", "beta", 8.0): {"pseudo_labels/3", "evaluate_semantic", "evaluate_instances", "summary",
                                        "report", "all"},
        ("dataset", "on_unreadable", "skip"): set(),
    }
    for (section, key, value), expected in cases.items():
        changed = yaml.safe_load(config.read_text())
        changed.setdefault(section, {})[key] = value
        path = workdir / "changed.yaml"
        path.write_text(yaml.safe_dump(changed))
        assert planned(workdir, path) == expected, (section, key)
    assert planned(workdir, config) == set()


@pytest.mark.slow
def test_skip_mode_leaves_out_an_unreadable_image_and_lists_it(run: tuple[Path, Path]) -> None:
    workdir, config = run
    image = workdir / "dataset" / "JPEGImages" / "syn_000012.jpg"  # shard 3
    original = image.read_bytes()
    skipping = yaml.safe_load(config.read_text())
    skipping["dataset"]["on_unreadable"] = "skip"
    path = workdir / "skip.yaml"
    path.write_text(yaml.safe_dump(skipping))
    results = workdir / "results" / "robust"
    try:
        image.write_bytes(b"\xff\xd8 not really a jpeg")
        snakemake(workdir, path)
        for product in ("cam", "irnet", "semantic", "instances"):
            with h5py.File(results / product / "shard-00003.h5") as handle:
                ids = json.loads(handle.attrs["image_ids"])
                skipped = json.loads(handle.attrs["skipped"])
            assert ids == ["syn_000010", "syn_000011", "syn_000013"] and list(skipped) == ["syn_000012"], product
            assert "syn_000012" in skipped["syn_000012"]
        for name in ("cam", "semantic", "instances"):
            metrics = json.loads((results / "evaluation" / f"{name}.json").read_text())
            assert metrics["images"] == 3 and list(metrics["skipped"]) == ["syn_000012"]
            assert "syn_000012" in (results / "evaluation" / f"{name}.md").read_text()
        assert "1 image(s) left out" in (results / "evaluation" / "summary.md").read_text()
    finally:
        image.write_bytes(original)
    snakemake(workdir, config)  # the fixed image: shard 3 again, with all its ids
    with h5py.File(results / "semantic" / "shard-00003.h5") as handle:
        assert json.loads(handle.attrs["image_ids"]) == ALL_VAL[:4]
        assert "skipped" not in handle.attrs
