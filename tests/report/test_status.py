"""``irn status`` on a fabricated run folder: done, stale (config changed), failed (log error,
corrupt file), interrupted, pending; unknown product folders; the exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from report_fabrication import FabricatedRun

from irn_core import cli
from irn_core.config import load_config
from irn_core.status import EXIT_DONE, EXIT_FAILED, EXIT_UNFINISHED, last_error, recorded_staleness, run_status
from irn_core.steps.common import shard_plan


def states(status, stage: str) -> dict[int | None, str]:
    return {item.shard: item.state for item in status.items if item.stage == stage}


def test_status_of_a_partial_run(fabricated: FabricatedRun) -> None:
    run = fabricated
    status = run_status(run.config, run.plan, workdir=run.workdir)
    assert states(status, "make_synthetic") == {None: "done"}
    assert states(status, "make_cam") == {0: "done", 1: "done"}  # the train ids lie in shards 0 and 1
    assert states(status, "pseudo_labels") == {0: "done", 1: "done"}
    assert states(status, "train_cam") == {None: "pending"}
    assert states(status, "ir_labels") == {0: "pending", 1: "pending"}
    assert states(status, "evaluate_semantic") == {None: "done"}
    assert set(states(status, "maskrcnn_infer").values()) == {"done"} and states(status, "train_maskrcnn")
    # folders the stage table does not know (DeepLab is off in this config): checked by their files
    assert set(states(status, "deeplab_pseudo").values()) == {"done"}
    assert status.exit_code == EXIT_UNFINISHED


def test_failed_stale_and_interrupted_jobs(fabricated: FabricatedRun, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(fabricated.workdir, workdir)
    data = yaml.safe_load(fabricated.config_path.read_text())
    data["output_dir"] = str(workdir / "results")  # not a section any stage depends on
    run_dir = workdir / "results" / "fab"
    # a failed job: output removed (as Snakemake does), the log ends in a traceback
    (run_dir / "instances" / "shard-00001.h5").unlink()
    log = run_dir / "logs" / "pseudo_labels" / "00001.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-01-01 INFO irn_core.steps.pseudo_labels: pseudo labels shard 1: 2/4 images\n"
                   "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                   "irn_core.errors.InputError: pseudo_labels.semantic_label (image syn_000005): boundary is NaN\n\n")
    # an interrupted job: log without error, no lock
    (run_dir / "logs" / "ir_labels").mkdir()
    (run_dir / "logs" / "ir_labels" / "00000.log").write_text("INFO ir labels shard 0: 1/4 images\n")
    # a job killed by a signal: nothing in its own log, Snakemake's log reports it (output relative to workdir)
    (run_dir / "semantic" / "shard-00001.h5").unlink()
    (workdir / ".snakemake" / "log").mkdir(parents=True)
    (workdir / ".snakemake" / "log" / "2026-01-01T000000.000000.snakemake.log").write_text(
        "Command 'set -euo pipefail; irn make-cam ...' died with <Signals.SIGTERM: 15>.\n"
        "[Thu Jan  1 00:00:00 2026]\nError in rule make_cam:\n    message: None\n    jobid: 4\n"
        "    output: results/fab/cam/shard-00001.h5\n    log: results/fab/logs/make_cam/00001.log\n\n"
    )
    (run_dir / "cam" / "shard-00001.h5").unlink()
    # a corrupt shard
    (run_dir / "irnet" / "shard-00000.h5").write_bytes(b"not hdf5")
    # a config change of the random walk: pseudo labels stale, CAMs not
    data["random_walk"] = {"beta": 8.0}
    config_path = workdir / "changed.yaml"
    config_path.write_text(yaml.safe_dump(data))
    config = load_config(config_path)
    status = run_status(config, shard_plan(config), workdir=workdir)
    pseudo = {item.shard: item for item in status.items if item.stage == "pseudo_labels"}
    assert pseudo[1].state == "failed"
    assert pseudo[1].detail == (
        "irn_core.errors.InputError: pseudo_labels.semantic_label (image syn_000005): boundary is NaN"
    )
    assert pseudo[1].log.endswith("logs/pseudo_labels/00001.log")
    assert pseudo[0].state == "stale" and "random_walk" in pseudo[0].detail
    cams = {item.shard: item for item in status.items if item.stage == "make_cam"}
    assert cams[0].state == "done"
    assert cams[1].state == "failed" and cams[1].detail == "Snakemake: job of rule make_cam killed by SIGTERM"
    assert states(status, "ir_labels")[0] == "interrupted"
    irnet = {item.shard: item for item in status.items if item.stage == "irnet_infer"}
    assert irnet[0].state == "failed" and "not a readable HDF5 file" in irnet[0].detail
    assert irnet[1].state == "done"
    assert status.exit_code == EXIT_FAILED

    # the command: table, exit code, JSON
    code = cli.main(["status", "--config", str(config_path), "--directory", str(workdir)])
    assert code == EXIT_FAILED
    code = cli.main(["status", "--config", str(config_path), "--directory", str(workdir), "--json"])
    assert code == EXIT_FAILED


def test_status_text_and_json(fabricated: FabricatedRun, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["status", "--config", str(fabricated.config_path), "--directory", str(fabricated.workdir)])
    text = capsys.readouterr().out
    assert code == EXIT_UNFINISHED
    lines = {line.split()[0]: line for line in text.splitlines() if line and not line.startswith(" ")}
    assert "done (2 shards)" in lines["make_cam"] and "pending" in lines["train_cam"]
    assert "2 pending (of 2 shards)" in lines["ir_labels"]
    cli.main(["status", "--config", str(fabricated.config_path), "--directory", str(fabricated.workdir), "--json"])
    items = json.loads(capsys.readouterr().out)["items"]
    assert {"stage": "make_cam", "shard": 0, "state": "done", "detail": "", "log": ""} in items


def test_exit_codes_follow_the_worst_state() -> None:
    from irn_core.status import Item, RunStatus

    status = RunStatus("run", [Item("a", None, "done"), Item("b", 0, "done")])
    assert status.exit_code == EXIT_DONE
    status.items.append(Item("b", 1, "stale"))
    assert status.exit_code == EXIT_UNFINISHED
    status.items.append(Item("c", None, "failed", "ValueError: x"))
    assert status.exit_code == EXIT_FAILED


def test_last_error_and_staleness_helpers(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_text("INFO fine\n2026-01-01 12:00:00 ERROR irn_core.cli: data/x.png: image id 'x': truncated\n")
    assert last_error(log) == "2026-01-01 12:00:00 ERROR irn_core.cli: data/x.png: image id 'x': truncated"
    log.write_text("INFO all good\nINFO saved\n")
    assert last_error(log) is None
    log.write_text("step 3\nKilled\n")
    assert last_error(log) == "Killed"
    assert last_error(tmp_path / "absent.log") is None
    current = {"random_walk": {"beta": 10.0}, "shard_size": 4}
    from irn_core.config import config_hash

    recorded = {"random_walk": {"beta": 10.0}, "shard_size": 4, "imported_from": "x"}
    assert recorded_staleness(recorded, config_hash({"random_walk": {"beta": 10.0}, "shard_size": 4}), current) is None
    assert recorded_staleness(recorded, config_hash({"random_walk": {"beta": 8.0}, "shard_size": 4}),
                              current) == []
    changed = {"random_walk": {"beta": 8.0}, "shard_size": 4}
    assert recorded_staleness(changed, config_hash(changed), current) == ["random_walk"]


def test_a_run_without_ground_truth_has_no_evaluation_stages() -> None:
    from irn_core.config import validate_config
    from irn_core.status import STAGES

    def stages(ground_truth: bool) -> set[str]:
        config = validate_config({"dataset": {"downstream_split": "train", "val_split": "val", "synthetic": {}},
                                  "deeplab": {"enabled": True}, "maskrcnn": {"enabled": True},
                                  "evaluation": {"ground_truth": ground_truth}}, source="test")
        return {stage.name for stage in STAGES if stage.applies(config)}

    with_truth, without = stages(True), stages(False)
    assert {"evaluate_cam", "evaluate_maskrcnn", "train_deeplab_ground_truth"} <= with_truth
    assert with_truth - without == {
        "evaluate_cam", "evaluate_semantic", "evaluate_instances", "evaluate_deeplab_pseudo",
        "evaluate_deeplab_ground_truth", "evaluate_maskrcnn", "train_deeplab_ground_truth",
        "deeplab_infer_ground_truth",
    }
    assert without < with_truth
