"""The workflow on a real one-node SLURM cluster (Debian's slurmctld + slurmd + munge on localhost).

``start_cluster.sh`` writes a minimal slurm.conf into a temporary folder (so the client commands find
it through ``SLURM_CONF``, the setting that used to make every job fail inside its job step), with no
job accounting (the executor polls with squeue). The synthetic workflow up to the evaluation's summary
(the report, a rendering of the same products, is left out to keep the test short) runs through
Snakemake's SLURM executor with the shipped profile; one job fails once on purpose and must be retried;
the products must equal a local run of the same config. The cluster is stopped afterwards, also on
failure.
Skipped only where SLURM is not installed (outside CI; ``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from irn_core.compare import compare_runs

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "srun", "sinfo")

CONFIG = {
    "name": "slurm",
    "seed": 0,
    "shard_size": 4,
    "dataset": {
        "kind": "synthetic",
        "root": "data/synthetic-slurm",
        "train_split": "train",
        "infer_split": "train",
        "synthetic": {"seed": 2, "num_train": 8, "num_val": 0, "image_size_range": [64, 72],
                      "objects_per_image": [1, 2]},
    },
    "cam": {
        "backbone": {"name": "resnet18", "weights": "none", "frozen_batchnorm": False},
        "train": {"batch_size": 4, "epochs": 1, "crop_size": 64, "resize_long": [64, 72], "frozen_stages": 0,
                  "optimizer": {"learning_rate": 0.01}},
        "infer": {"scales": [1.0]},
    },
    "irnet": {
        "backbone": {"name": "resnet18", "weights": "none", "frozen_batchnorm": False},
        "backbone_init": "cam",
        "train": {"batch_size": 4, "epochs": 1, "crop_size": 64, "radius": 5},
        "infer": {"pad_to": 80},
    },
    "compute": {"device": "cpu", "threads": 1, "rule_resources": {"default": {"mem_mb": 1000, "runtime": 30}}},
}
TARGET = f"results/{CONFIG['name']}/evaluation/summary.md"


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        missing.append("snakemake-executor-plugin-slurm (pip install -e .[slurm])")
    if missing:
        message = f"SLURM is not installed here ({', '.join(missing)} missing; apt-get install slurmctld slurmd " \
                  "slurm-client munge)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run should have installed it")
        pytest.skip(message)
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs slurmd, which must be root to start jobs")
    directory = tmp_path_factory.mktemp("cluster")
    started = subprocess.run([str(SCRIPTS / "start_cluster.sh"), str(directory)], capture_output=True, text=True,
                             timeout=120)
    try:
        if started.returncode != 0:
            pytest.fail(f"cluster did not start:\n{started.stdout}\n{started.stderr}")
        yield directory / "slurm.conf"
    finally:
        subprocess.run([str(SCRIPTS / "stop_cluster.sh"), str(directory)], capture_output=True, timeout=120)


def _command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
            "--configfile", str(workdir / "config.yaml"), "--directory", str(workdir), *extra, TARGET]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_workflow_on_slurm_retries_a_failed_job_and_equals_a_local_run(slurm_conf: Path, tmp_path: Path) -> None:
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    for workdir in (on_slurm, local):
        workdir.mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    marker = tmp_path / "make-cam-failed-once"
    environment = {
        **os.environ,
        "SLURM_CONF": str(slurm_conf),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "IRN_TEST_FAIL_ONCE": f"make-cam:{marker}",
    }
    # the local run to compare with runs meanwhile: the SLURM run mostly waits for its status checks
    local_environment = {key: value for key, value in environment.items() if key != "IRN_TEST_FAIL_ONCE"}
    local_log = tmp_path / "local.log"
    with local_log.open("w") as log:
        local_run = subprocess.Popen(_command(local, "--cores", "2"), stdout=log, stderr=subprocess.STDOUT,
                                     env=local_environment)
    try:
        result = _run_on_slurm(on_slurm, environment)
        local_returncode = local_run.wait(timeout=1500)
    finally:
        if local_run.poll() is None:
            local_run.kill()
    output = result.stdout + result.stderr
    if result.returncode != 0:
        logs = "\n".join(f"--- {path}\n{path.read_text()[-1500:]}" for path in sorted(on_slurm.rglob("*.log"))[-12:])
        pytest.fail(f"snakemake on SLURM failed:\n{output[-6000:]}\n{logs}")
    assert marker.exists(), "the injected failure never happened"
    assert "Trying to restart job" in output  # the failed make_cam job was submitted again
    assert "Job " in output and "SLURM jobid" in output
    slurm_logs = sorted((on_slurm / "logs" / "slurm").rglob("*.log"))
    assert any("group_cam_and_ir_labels" in str(path) for path in slurm_logs)  # grouped jobs in one SLURM job
    run = on_slurm / "results" / "slurm"
    assert (run / "evaluation" / "summary.md").exists()

    assert local_returncode == 0, local_log.read_text()[-4000:]
    comparison = compare_runs(run, local / "results" / "slurm")
    assert comparison.identical, comparison.report()
    assert [stage.stage for stage in comparison.stages][:3] == ["models/cam.pt", "cam", "ir_labels"]


def _run_on_slurm(workdir: Path, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = _command(
        workdir,
        "--profile", str(ROOT / "config" / "profiles" / "slurm"),
        "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2",
        "--default-resources", "slurm_partition=debug", "mem_mb=1000", "runtime=30",
        # fewer, larger SLURM jobs keep the test short: each job starts Python twice
        "--groups", "make_cam=cam_and_ir_labels", "ir_labels=cam_and_ir_labels", "irnet_infer=irnet_and_pseudo",
        "pseudo_labels=irnet_and_pseudo", "evaluate_semantic=evaluation", "evaluate_instances=evaluation",
        "summary=evaluation",  # two evaluations side by side: a group job asks for what runs at once
        "--group-components", "cam_and_ir_labels=2", "irnet_and_pseudo=2",
        "--jobs", "4",
    )
    return subprocess.run(command, capture_output=True, text=True, timeout=1500, env=environment)
