"""The DeepLab rules in the DAG (dry run): two trainings, inference per validation shard, two evaluations."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "workflow" / "Snakefile"

CONFIG = {
    "name": "tiny",
    "shard_size": 6,
    "dataset": {
        "kind": "synthetic", "root": "data/synthetic-tiny", "train_split": "train", "infer_split": "train",
        "downstream_split": "train", "val_split": "val",
        "synthetic": {"seed": 5, "num_train": 10, "num_val": 4, "image_size_range": [72, 96]},
    },
    "deeplab": {"enabled": True, "backbone": {"name": "resnet18", "weights": "none"}},
    "compute": {"device": "cpu", "threads": 1},
}
TARGETS = ["results/tiny/evaluation/deeplab_pseudo.json", "results/tiny/evaluation/deeplab_ground_truth.json"]


def _dry_run(workdir: Path, config: dict) -> str:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", *TARGETS, "--snakefile", str(SNAKEFILE), "--configfile", str(path),
               "--directory", str(workdir), "--cores", "2", "--dry-run", "--quiet", "rules"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return result.stdout + result.stderr


def test_deeplab_jobs_for_both_label_sources(tmp_path: Path) -> None:
    text = _dry_run(tmp_path, CONFIG)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", text, flags=re.MULTILINE))
    # 14 ids in shards of 6, grouped by role: the 10 training ids in shards 0 and 1, the 4 val ids
    # (syn_000010..13) in shard 2
    assert {name: int(counts.get(name, 0)) for name in (
        "train_deeplab_pseudo", "train_deeplab_ground_truth", "deeplab_infer_pseudo", "deeplab_infer_ground_truth",
        "evaluate_deeplab_pseudo", "evaluate_deeplab_ground_truth", "pseudo_labels",
    )} == {"train_deeplab_pseudo": 1, "train_deeplab_ground_truth": 1, "deeplab_infer_pseudo": 1,
           "deeplab_infer_ground_truth": 1, "evaluate_deeplab_pseudo": 1, "evaluate_deeplab_ground_truth": 1,
           "pseudo_labels": 2}, text[-3000:]  # the training ids lie in shards 0 and 1
