"""What the Snakefile needs from the library at DAG-build time (kept here so tests can reach it).

Inputs of the rules (see :mod:`irn_core.steps.inputs`): a rule never takes the dataset folder as its
input, but a manifest of the files it reads with their content hashes, written here at DAG-build
time and only when its content changes:

``W.shard_inputs(product)``         per-shard rules: ``inputs/<product>/shard-{shard}.json``
``W.training_inputs(role, reads)``  training rules: ``inputs/<role>.<reads>.json``
``W.evaluation_inputs(role)``       evaluation rules: the ground truth of ``role``'s ids

The shard plan is recorded in ``<run_dir>/shards.json`` and only appended to (new ids go to new
shards), by the main Snakemake process; jobs (also a SLURM job's own Snakemake process) read it.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irn_core.atomic import write_text_atomic
from irn_core.config import RunConfig, dump_config, read_yaml, stage_hash, validate_config
from irn_core.data.fingerprints import FingerprintCache, write_if_changed
from irn_core.steps.common import ShardPlan, shard_plan, update_recorded_plan
from irn_core.steps.inputs import (
    parse_reads,
    product_reads,
    role_manifest_path,
    role_manifest_text,
    shard_manifest_path,
    shard_manifest_text,
)

logger = logging.getLogger(__name__)

DEFAULT_RULE_RESOURCES: dict[str, dict[str, int]] = {
    "train_cam": {"mem_mb": 16000, "runtime": 720},
    "train_irnet": {"mem_mb": 16000, "runtime": 720},
    "make_cam": {"mem_mb": 8000, "runtime": 120},
    "import_cams": {"mem_mb": 4000, "runtime": 60},
    "ir_labels": {"mem_mb": 4000, "runtime": 120},
    "irnet_infer": {"mem_mb": 8000, "runtime": 120},
    "pseudo_labels": {"mem_mb": 4000, "runtime": 120},
    "evaluate": {"mem_mb": 8000, "runtime": 120},
    "small": {"mem_mb": 1000, "runtime": 30},
}
"""Memory (MB) and run time (minutes) a rule asks for unless the config (``compute.rule_resources``)
or the command line (``--set-resources RULE:mem_mb=...``) says otherwise; sized for VOC 2012 with
the paper's settings and 64 images per shard."""


CPU_KERNEL_ENVIRONMENT = {
    "native": "",
    "avx2": "env ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2 ",
}
"""Variables set in front of every ``irn`` command for ``compute.cpu_kernels`` (they must be set before
torch loads): PyTorch's vectorised kernels, oneDNN's convolutions and MKL's code path, all AVX2."""


@dataclass(frozen=True)
class WorkflowContext:
    run: RunConfig
    config_path: Path
    plan: ShardPlan
    shards: tuple[str, ...]
    """Shard wildcards ("00000", ...)."""
    main_process: bool = True
    """False inside a job's own Snakemake process (a SLURM job, a group job): nothing is written then."""
    _written: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    _reads: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    _cache: list[FingerprintCache] = field(default_factory=list, compare=False, repr=False)

    def stage(self, name: str) -> str:
        return stage_hash(self.run, name)

    def path(self, *parts: str) -> str:
        return str(self.run.run_dir.joinpath(*parts))

    def shard_files(self, product: str) -> list[str]:
        """The shard files of ``product``: one per shard holding ids the product is made for."""
        return [self.path(product, f"shard-{index:05d}.h5") for index in self.plan.product_shards(product)]

    def irn(self, step: str, *, processes: int = 1) -> str:
        """The command line that runs ``irn <step>`` in this Python environment (torchrun for DDP)."""
        python = CPU_KERNEL_ENVIRONMENT[self.run.compute.cpu_kernels] + shlex.quote(sys.executable)
        if processes > 1:
            launcher = f"{python} -m torch.distributed.run --standalone --nproc_per_node {processes} -m irn_core.cli"
        else:
            launcher = f"{python} -m irn_core.cli"
        return f"{launcher} {step} --config {shlex.quote(str(self.config_path))} --threads {{threads}}"

    def training_resources(self, processes: int) -> dict[str, int]:
        gpus = self.run.compute.training_gpus
        return {"gpu": max(gpus, processes) if gpus else 0}

    def inference_resources(self) -> dict[str, int]:
        return {"gpu": 1 if self.run.compute.inference_gpu else 0}

    # ------------------------------------------------------------------ resources
    def resources(self, rule: str, *, kind: str | None = None, **base: Any) -> dict[str, Any]:
        """Resources of ``rule``: ``base`` (e.g. ``gpu``), then :data:`DEFAULT_RULE_RESOURCES` of
        ``kind`` (default: the rule's own name, else ``small``), then the config's
        ``compute.rule_resources`` for ``default`` and for ``rule``. Only set values are returned, so
        ``--default-resources`` fills the rest and ``--set-resources`` overrides any of them."""
        defaults = DEFAULT_RULE_RESOURCES.get(kind or rule, DEFAULT_RULE_RESOURCES["small"])
        merged: dict[str, Any] = {**base, **defaults}
        for key in ("default", rule):
            configured = self.run.compute.rule_resources.get(key)
            if configured is not None:
                merged.update(configured.model_dump(exclude_none=True, exclude={"threads"}))
        return merged

    def threads(self, rule: str, default: int | None = None) -> int:
        """Threads of ``rule``: the config's ``compute.rule_resources.<rule>.threads``, else ``default``,
        else ``compute.threads`` (``--set-threads RULE=N`` overrides on the command line)."""
        configured = self.run.compute.rule_resources.get(rule)
        if configured is not None and configured.threads is not None:
            return configured.threads
        return default if default is not None else self.run.compute.threads

    # ------------------------------------------------------------------ inputs
    def shard_inputs(self, product: str, reads: Sequence[str] | str | None = None) -> str:
        """Input of a per-shard rule of ``product``: the pattern of its per-shard manifests
        (``{shard}`` wildcard). Writes the manifests of every shard of ``product`` now (when the
        dataset exists and this is the main process); ``reads`` defaults to :data:`PRODUCT_READS`."""
        chosen = parse_reads(reads) if reads is not None else product_reads(product)
        key = f"shard:{product}"
        if key not in self._written:
            self._written[key] = self._refresh(
                lambda cache: {
                    shard_manifest_path(self.run, product, index): shard_manifest_text(
                        self.run, self.plan, product, index, chosen, cache
                    )
                    for index in self.plan.product_shards(product)
                }
            )
            self._reads[product] = "+".join(chosen)
        return str(shard_manifest_path(self.run, product, "{shard}"))

    def training_inputs(self, role: str, reads: Sequence[str] | str = ("image", "labels")) -> str:
        """Input of a rule that reads every id of ``role`` (training): the role's manifest."""
        chosen = parse_reads(reads)
        path = role_manifest_path(self.run, role, chosen)
        key = f"role:{path}"
        if key not in self._written:
            self._written[key] = self._refresh(
                lambda cache: {path: role_manifest_text(self.run, self.plan, role, chosen, cache)}
            )
        return str(path)

    def evaluation_inputs(self, role: str = "infer") -> str:
        """Input of an evaluation rule: the manifest of the ground truth of ``role``'s ids."""
        return self.training_inputs(role, ("ground_truth",))

    def manifest_reads(self, product: str) -> str:
        """The reads of ``product``'s manifests (for the rule that writes them in a job)."""
        return self._reads.get(product, "+".join(product_reads(product)))

    def dataset_available(self) -> bool:
        """Whether the dataset's files exist at DAG-build time (a generated dataset: once generated)."""
        root = Path(self.run.dataset.root)
        if self.run.dataset.kind == "synthetic":
            return (root / "synthetic.json").is_file()
        return True

    def _refresh(self, texts: Any) -> bool:
        """Write the manifests ``texts(cache)`` returns, each only if its content changed."""
        if not self.main_process or not self.dataset_available():
            return False
        if not self._cache:
            self._cache.append(FingerprintCache(self.run.run_dir / "inputs" / ".fingerprint-cache.json"))
        cache = self._cache[0]
        written = [path for path, text in texts(cache).items() if write_if_changed(path, text)]
        cache.save()
        if written:
            logger.info("input manifests updated: %s", ", ".join(str(path) for path in written[:10]))
        return True


def preserve_slurm_conf(directory: Path) -> Path | None:
    """Inside a SLURM job whose cluster is configured through ``SLURM_CONF``: put a ``srun`` first on
    PATH that restores ``SLURM_CONF``, and return its folder (None when not needed).

    Snakemake's SLURM job-step plugin (snakemake-executor-plugin-slurm-jobstep 0.6) removes every
    ``SLURM_*`` variable, ``SLURM_CONF`` included, before it starts the job's command with ``srun``;
    on a cluster whose ``slurm.conf`` is not at the compiled-in default path, that ``srun`` finds no
    configuration and fails before the rule's command starts, leaving the rule's log empty.
    """
    config = os.environ.get("SLURM_CONF")
    if "SLURM_JOB_ID" not in os.environ or not config:
        return None
    directory = directory.resolve()
    search = os.pathsep.join(part for part in os.environ.get("PATH", "").split(os.pathsep) if part != str(directory))
    real = shutil.which("srun", path=search)
    if real is None:
        return None
    script = directory / "srun"
    text = f"#!/bin/sh\nexport SLURM_CONF={shlex.quote(config)}\nexec {shlex.quote(real)} \"$@\"\n"
    if not script.is_file() or script.read_text() != text:
        write_text_atomic(script, text)
        script.chmod(0o755)
    os.environ["PATH"] = f"{directory}{os.pathsep}{search}"
    return directory


def prepare(
    snakemake_config: Mapping[str, Any], default_config: Path, *, main_process: bool = True
) -> WorkflowContext:
    """Validate the config; in the main process record the resolved config (only when it changed,
    so an unchanged re-run touches nothing), check the dataset (:func:`irn_core.data.check.check_at_run_start`:
    a wrong folder raises with the table of problems), extend the recorded shard plan and write the run record.
    In a job's own Snakemake process read the recorded plan and write nothing."""
    data = dict(snakemake_config) if snakemake_config else read_yaml(default_config)
    run = validate_config(data, source="snakemake config")
    config_path = run.run_dir / "config.yaml"
    if main_process:
        text = dump_config(run)
        if not config_path.exists() or config_path.read_text(encoding="utf-8") != text:
            write_text_atomic(config_path, text)
        from irn_core.data.check import check_at_run_start

        check_at_run_start(run)  # a wrong dataset folder stops here, with the table (cached while unchanged)
        plan = update_recorded_plan(run)
        from irn_core.records import write_run_record

        write_run_record(run)
    else:
        plan = shard_plan(run)
        preserve_slurm_conf(Path(".snakemake") / "irn" / "slurm-bin")
    shards = tuple(f"{index:05d}" for index in range(len(plan)))
    return WorkflowContext(run=run, config_path=config_path, plan=plan, shards=shards, main_process=main_process)
