"""``irn`` subcommands of the downstream stages: Mask R-CNN and the exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from irn_core.cli import build_parser, main
from irn_core.data.images import read_label_png
from irn_core.store import ShardWriter

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def test_downstream_subcommands_parse() -> None:
    parser = build_parser()
    arguments = parser.parse_args(["train-maskrcnn", "--config", "c.yaml", "--instances", "a.h5", "b.h5",
                                   "--out", "m.pt"])
    assert arguments.instances == ["a.h5", "b.h5"] and arguments.max_steps is None
    arguments = parser.parse_args(["maskrcnn-infer", "--config", "c.yaml", "--shard", "3", "--checkpoint", "m.pt",
                                   "--out", "o.h5"])
    assert arguments.shard == 3
    arguments = parser.parse_args(["export", "--config", "c.yaml", "--what", "coco", "--ground-truth", "--splits",
                                   "train", "val", "--out", "d"])
    assert arguments.ground_truth and arguments.splits == ["train", "val"]
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--config", "c.yaml", "--what", "tiff", "--out", "d"])


def test_export_png_of_an_instance_shard(tmp_path: Path) -> None:
    shard = tmp_path / "maskrcnn.h5"
    masks = np.zeros((2, 6, 7), bool)
    masks[0, :3, :3] = True
    masks[1, 2:5, 2:6] = True
    with ShardWriter(shard, product="maskrcnn", config_hash="x", shard_index=0) as writer:
        writer.add("img1", {"masks_s1": masks, "class_ids": np.array([3, 1]),
                            "scores": np.array([0.2, 0.9], np.float32)})
    out = tmp_path / "png"
    assert main(["export", "--config", str(CONFIG), "--what", "png", "--inputs", str(shard), "--out", str(out)]) == 0
    objects = read_label_png(out / "SegmentationObject" / "img1.png")
    classes = read_label_png(out / "SegmentationClass" / "img1.png")
    assert objects[2, 2] == 2 and classes[2, 2] == 2 and objects[0, 0] == 1 and classes[0, 0] == 4


def test_export_coco_refuses_a_semantic_shard(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shard = tmp_path / "semantic.h5"
    with ShardWriter(shard, product="semantic", config_hash="x", shard_index=0) as writer:
        writer.add("img1", {"semantic_s1": np.zeros((2, 2), np.uint8)})
    assert main(["export", "--config", str(CONFIG), "--what", "coco", "--inputs", str(shard),
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "takes instance shards" in caplog.text
