"""What the Snakefile needs from the library at DAG-build time (kept here so tests can reach it)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irn_core.atomic import write_text_atomic
from irn_core.config import RunConfig, dump_config, read_yaml, stage_hash, validate_config
from irn_core.steps.common import ShardPlan, shard_plan


@dataclass(frozen=True)
class WorkflowContext:
    run: RunConfig
    config_path: Path
    plan: ShardPlan
    shards: tuple[str, ...]
    """Shard wildcards ("00000", ...)."""

    def stage(self, name: str) -> str:
        return stage_hash(self.run, name)

    def path(self, *parts: str) -> str:
        return str(self.run.run_dir.joinpath(*parts))

    def shard_files(self, product: str) -> list[str]:
        """The shard files of ``product``: one per shard holding ids the product is made for."""
        return [self.path(product, f"shard-{index:05d}.h5") for index in self.plan.product_shards(product)]

    def irn(self, step: str, *, processes: int = 1) -> str:
        """The command line that runs ``irn <step>`` in this Python environment (torchrun for DDP)."""
        python = shlex.quote(sys.executable)
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


def prepare(snakemake_config: Mapping[str, Any], default_config: Path) -> WorkflowContext:
    """Validate the config, record the resolved config in the run folder (only when it changed,
    so an unchanged re-run touches nothing), and compute the shard plan."""
    data = dict(snakemake_config) if snakemake_config else read_yaml(default_config)
    run = validate_config(data, source="snakemake config")
    config_path = run.run_dir / "config.yaml"
    text = dump_config(run)
    if not config_path.exists() or config_path.read_text(encoding="utf-8") != text:
        write_text_atomic(config_path, text)
    plan = shard_plan(run)
    shards = tuple(f"{index:05d}" for index in range(len(plan)))
    return WorkflowContext(run=run, config_path=config_path, plan=plan, shards=shards)
