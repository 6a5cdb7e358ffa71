"""The shard plan: roles of the splits and the ids each per-shard product is made for."""

from __future__ import annotations

import json

from irn_core.config import load_config
from irn_core.steps.common import shard_plan

SYNTHETIC = {"kind": "synthetic", "root": "unused", "synthetic": {"num_train": 6, "num_val": 3}}


def test_plan_without_downstream_covers_train_and_infer_only() -> None:
    config = load_config([], {"shard_size": 4, "dataset": {**SYNTHETIC, "train_split": "train", "infer_split": "train",
                                                           "val_split": "val"}})
    plan = shard_plan(config)
    assert sum(len(shard) for shard in plan.shards) == 6  # val ignored: no downstream models
    assert plan.val_ids == frozenset() and plan.downstream_ids == frozenset()
    assert plan.product_shards("cam") == [0, 1]


def test_plan_with_downstream_adds_val_ids_for_predictions_only() -> None:
    config = load_config([], {"shard_size": 4, "dataset": {**SYNTHETIC, "train_split": "train", "infer_split": "train",
                                                           "downstream_split": "train", "val_split": "val"}})
    plan = shard_plan(config)
    # ids grouped by their roles: the 6 train (= infer = downstream) ids, then the 3 val ids
    assert [len(shard) for shard in plan.shards] == [4, 2, 3]
    val = sorted(plan.val_ids)
    assert len(val) == 3 and plan.all_ids("val") == val
    assert plan.product_ids(1, "cam") == plan.ids(1, "train") and len(plan.ids(1, "train")) == 2
    assert plan.product_ids(2, "deeplab") == val and plan.product_ids(1, "deeplab") == []
    assert plan.product_shards("semantic") == [0, 1] and plan.product_shards("deeplab") == [2]
    assert plan.product_shards("ir_labels") == [0, 1]
    assert json.loads(plan.to_json())["val_ids"] == val
