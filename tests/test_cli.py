"""The ``irn`` command line: resolved config, shard plan, clear failures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from irn_core.cli import main
from irn_core.steps.evaluate import cam_labels

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def test_show_config_prints_the_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show-config", "--config", str(CONFIG)]) == 0
    text = capsys.readouterr().out
    assert "random_walk:" in text and "beta: 10.0" in text and "exp_times: 8" in text


def test_plan_covers_train_and_infer_ids(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert main(["plan", "--config", str(CONFIG), "--out", str(out)]) == 0
    plan = json.loads(out.read_text())
    ids = [image_id for shard in plan["shards"] for image_id in shard]
    roles = ("train_ids", "infer_ids", "downstream_ids", "val_ids")
    assert ids == sorted(ids) and set(ids) == set().union(*(plan[role] for role in roles))
    assert len(plan["val_ids"]) == 40 and not set(plan["val_ids"]) & set(plan["train_ids"])
    assert all(len(shard) <= 80 for shard in plan["shards"]) and len(plan["shards"]) == 3


def test_invalid_config_exits_2_with_a_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("random_walk:\n  beta: -1\n")
    assert main(["plan", "--config", str(bad)]) == 2
    assert "random_walk.beta" in caplog.text


def test_make_synthetic_refuses_a_real_dataset_config(caplog: pytest.LogCaptureFixture) -> None:
    voc = CONFIG.with_name("voc12.yaml")
    assert main(["make-synthetic", "--config", str(voc)]) == 2
    assert "not 'synthetic'" in caplog.text


def test_cam_labels_follow_the_reference_eval_cam() -> None:
    cams = np.zeros((2, 2, 3), np.float32)
    cams[0, 0, 0] = 0.9  # class 4 wins
    cams[1, 1, 2] = 0.2  # class 7 above the 0.15 background
    cams[1, 0, 1] = 0.1  # below the background score
    labels = cam_labels(cams, np.array([4, 7]), 0.15)
    assert labels.tolist() == [[5, 0, 0], [0, 0, 8]]


def _show_config(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    import yaml

    assert main(["show-config", *arguments]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_repeated_config_options_merge_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("name: from_a\nseed: 7\n")
    second.write_text("name: from_b\n")
    repeated = _show_config(["--config", str(CONFIG), "--config", str(first), "--config", str(second)], capsys)
    listed = _show_config(["--config", str(CONFIG), str(first), str(second)], capsys)
    assert repeated == listed
    assert repeated["name"] == "from_b" and repeated["seed"] == 7  # B over A, and A's seed kept


def test_every_command_merges_repeated_config_options() -> None:
    from irn_core.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    checked = 0
    for name, command in commands.items():
        for action in command._actions:
            if "--config" not in action.option_strings:
                continue
            namespace = argparse.Namespace(config=list(action.default))
            action(command, namespace, ["a.yaml"], "--config")
            action(command, namespace, ["b.yaml"], "--config")
            assert namespace.config == ["a.yaml", "b.yaml"], name
            assert action.default == [], name  # the default list is not changed in place
            checked += 1
    assert checked >= 20
