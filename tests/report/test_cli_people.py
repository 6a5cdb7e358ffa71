"""The commands for people: help with an example and the exit codes, ``irn run``'s Snakemake
command, ``irn show`` on a fabricated run, ``irn report`` exit codes, the progress helper."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_fabrication import FabricatedRun

from irn_core import cli
from irn_core.progress import format_duration, progress_line, track

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["run", "status", "show", "report"])
def test_help_shows_an_example_and_the_exit_codes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"example:\n  irn {command}" in text
    assert "exit codes:" in text and "130" in text and "  3 " in text


def test_run_builds_the_snakemake_command(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(ROOT / "config" / "config.yaml")
    code = cli.main(["run", "report", "--config", config, "--cores", "2", "--dry-run", "--print-command", "--",
                     "--keep-going", "--rerun-triggers", "mtime"])
    assert code == 0
    command = shlex.split(capsys.readouterr().out)
    assert command[:3] == [sys.executable, "-m", "snakemake"]
    assert command[command.index("--snakefile") + 1] == str(ROOT / "workflow" / "Snakefile")
    assert command[command.index("--configfile") + 1] == config
    assert command[command.index("--workflow-profile") + 1] == str(ROOT / "config" / "profiles" / "local")
    assert command[command.index("--cores") + 1] == "2" and "--dry-run" in command
    assert command[-4:] == ["--keep-going", "--rerun-triggers", "mtime", "report"]
    cli.main(["run", "--config", config, "--profile", "config/profiles/slurm", "--print-command"])
    command = shlex.split(capsys.readouterr().out)
    assert command[command.index("--profile") + 1] == "config/profiles/slurm"
    assert "--workflow-profile" not in command and "--cores" not in command  # the profile's


def test_run_refuses_an_invalid_config_before_snakemake(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("random_walk:\n  beta: -1\n")
    assert cli.main(["run", "--config", str(bad)]) == 2
    assert "random_walk.beta" in caplog.text


def test_unknown_options_are_refused_outside_run() -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["status", "--bogus"])
    assert exit_info.value.code == 2


def test_show_writes_the_panels_of_one_image(fabricated: FabricatedRun, tmp_path: Path) -> None:
    image_id = fabricated.plan.all_ids("infer")[0]
    out = tmp_path / "one.png"
    assert cli.main(["show", image_id, "--config", str(fabricated.config_path), "--out", str(out)]) == 0
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape[0] > 200 and picture.shape[1] > 600 and picture.std() > 20
    assert cli.main(["show", "no_such_id", "--config", str(fabricated.config_path), "--out", str(out)]) == 2


def test_progress_logs_every_n_items_with_eta(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        assert list(track(range(7), description="shard 3", logger=logger, every=3)) == list(range(7))
    lines = [record.getMessage() for record in caplog.records]
    assert [line.split(":")[1].split()[0] for line in lines] == ["3/7", "6/7", "7/7"]
    assert all("images/s" in line and "ETA" in line for line in lines)
    assert lines[-1].startswith("shard 3: 7/7 images (100%)") and lines[-1].endswith("ETA 0:00:00")
    assert progress_line("x", 5, 10, 2.0) == "x: 5/10 images (50%), 2.5 images/s, ETA 0:00:02"
    assert progress_line("x", 5, 10, 10.0) == "x: 5/10 images (50%), 2.0 s/image, ETA 0:00:10"
    assert progress_line("x", 3, None, 1.0, unit="step") == "x: 3 steps, 3.0 steps/s"
    assert format_duration(3725.4) == "1:02:05"
    with pytest.raises(ValueError):
        list(track([1], description="x", logger=logger, every=0))


def test_step_loops_use_the_progress_helper() -> None:
    """Every per-image loop of the steps goes through irn_core.progress.track (quiet bar, log lines)."""
    for path in sorted((ROOT / "irn_core" / "steps").glob("*.py")):
        text = path.read_text()
        assert "tqdm(" not in text, f"{path.name}: use irn_core.progress.track"
    for name in ("cam", "irnet", "pseudo_labels", "evaluate"):
        assert "track(" in (ROOT / "irn_core" / "steps" / f"{name}.py").read_text()
