"""Where a run stands: each stage, and each shard of the per-shard stages, as done, stale, failed,
running, interrupted or pending, read from the run folder alone (no Snakemake call).

- **done**: every output exists; an HDF5 shard (or a checkpoint) records the hash of the config
  sections its stage depends on, and that hash equals the one of the current config.
- **stale**: an output exists but was made with another config (the sections that changed are
  named), or a shard holds other image ids than the plan gives it; Snakemake re-runs it.
- **failed**: an output is missing (Snakemake removes a failed job's outputs) and the job's log
  ends in an error: the last error line is shown; or the latest Snakemake run of the working
  directory reported the job as failed (``.snakemake/log/``), e.g. killed by a signal. A shard
  file that cannot be read counts too.
- **running**: an output is missing, the log has no error and the working directory's Snakemake
  lock is held; **interrupted**: the same without the lock.
- **pending**: an output is missing and the job never started (no log).

The stage table mirrors ``workflow/rules/*.smk`` (outputs and logs). Product folders of per-shard
shard files that the table does not know (e.g. downstream models' predictions) are listed too,
with done / stale from their files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from irn_core.config import RunConfig, config_hash, tracked_config
from irn_core.errors import StoreError
from irn_core.steps.common import ShardPlan
from irn_core.store import ShardReader, shard_file_name

STATES = ("done", "stale", "failed", "running", "interrupted", "pending")

EXIT_DONE = 0
"""``irn status`` exit code: every stage done."""
EXIT_UNFINISHED = 1
"""``irn status`` exit code: something pending, running, interrupted or stale, nothing failed."""
EXIT_FAILED = 3
"""``irn status`` exit code: at least one job failed."""


@dataclass(frozen=True)
class Stage:
    """A rule of the workflow as ``irn status`` sees it.

    ``outputs``: paths relative to the run folder, or for a per-shard stage the product folders
    whose ``shard-NNNNN.h5`` it writes; ``log``: relative to the run folder, ``{shard}`` replaced by
    the shard's 5-digit index; ``applies``: whether the config runs this rule.
    """

    name: str
    outputs: tuple[str, ...]
    log: str
    per_shard: bool = False
    applies: Callable[[RunConfig], bool] = lambda config: True


def _downstream(config: RunConfig, model: str, *, val: bool = False) -> bool:
    """Whether the workflow has the rules of a downstream model (``deeplab``, ``maskrcnn``), as the
    Snakefile includes them; with ``val``, its prediction and evaluation rules."""
    enabled = getattr(config, model).enabled and config.dataset.downstream_split is not None
    return enabled and (not val or config.dataset.val_split is not None)


def _evaluated(config: RunConfig) -> bool:
    """Whether the workflow has its evaluation rules (``evaluation.ground_truth``)."""
    return config.evaluation.ground_truth


def _has_labels(config: RunConfig, labels: str) -> bool:
    """Whether DeepLab is trained on ``labels`` (``ground_truth`` needs ``evaluation.ground_truth``)."""
    return labels == "pseudo" or config.evaluation.ground_truth


STAGES: tuple[Stage, ...] = (
    Stage("shard_plan", ("shards.json",), "logs/shard_plan.log"),
    Stage("train_cam", ("models/cam.pt",), "logs/train_cam.log", applies=lambda c: c.cam.import_dir is None),
    Stage("make_cam", ("cam",), "logs/make_cam/{shard}.log", True, lambda c: c.cam.import_dir is None),
    Stage("import_cams", ("cam",), "logs/import_cams/{shard}.log", True, lambda c: c.cam.import_dir is not None),
    Stage("ir_labels", ("ir_labels",), "logs/ir_labels/{shard}.log", True),
    Stage("train_irnet", ("models/irnet.pt",), "logs/train_irnet.log"),
    Stage("irnet_infer", ("irnet",), "logs/irnet_infer/{shard}.log", True),
    Stage("pseudo_labels", ("semantic", "instances"), "logs/pseudo_labels/{shard}.log", True),
    Stage("evaluate_cam", ("evaluation/cam.json",), "logs/evaluate_cam.log", applies=_evaluated),
    Stage("evaluate_semantic", ("evaluation/semantic.json",), "logs/evaluate_semantic.log", applies=_evaluated),
    Stage("evaluate_instances", ("evaluation/instances.json",), "logs/evaluate_instances.log", applies=_evaluated),
    *(
        stage
        for labels in ("pseudo", "ground_truth")
        for stage in (
            Stage(f"train_deeplab_{labels}", (f"models/deeplab_{labels}.pt",), f"logs/train_deeplab_{labels}.log",
                  applies=lambda c, labels=labels: _downstream(c, "deeplab") and _has_labels(c, labels)),
            Stage(f"deeplab_infer_{labels}", (f"deeplab_{labels}",), f"logs/deeplab_infer_{labels}/{{shard}}.log",
                  True, lambda c, labels=labels: _downstream(c, "deeplab", val=True) and _has_labels(c, labels)),
            Stage(f"evaluate_deeplab_{labels}", (f"evaluation/deeplab_{labels}.json",),
                  f"logs/evaluate_deeplab_{labels}.log",
                  applies=lambda c: _downstream(c, "deeplab", val=True) and _evaluated(c)),
        )
    ),
    Stage("train_maskrcnn", ("models/maskrcnn.pt",), "logs/train_maskrcnn.log",
          applies=lambda c: _downstream(c, "maskrcnn")),
    Stage("maskrcnn_infer", ("maskrcnn",), "logs/maskrcnn_infer/{shard}.log", True,
          lambda c: _downstream(c, "maskrcnn", val=True)),
    Stage("evaluate_maskrcnn", ("evaluation/maskrcnn.json",), "logs/evaluate_maskrcnn.log",
          applies=lambda c: _downstream(c, "maskrcnn", val=True) and _evaluated(c)),
    Stage("summary", ("evaluation/summary.md",), "logs/summary.log"),
    Stage("report", ("report/index.html",), "logs/report.log"),
)
"""The workflow's rules in DAG order (``make_synthetic``, whose output is the dataset folder, is
added for synthetic runs)."""

_ERROR_LINE = re.compile(
    r"^(?:[\w.]*(?:Error|Exception|Interrupt|Exit)\b.*"  # a traceback's last line: "ValueError: ..."
    r"|.*\b(?:ERROR|CRITICAL)\b.*"                       # a logging line at level ERROR
    r"|Killed\b.*|.*[Ss]egmentation fault.*|.*Out of memory.*)$"
)


@dataclass
class Item:
    """One job: a stage, or one shard of a per-shard stage."""

    stage: str
    shard: int | None
    state: str
    detail: str = ""
    log: str = ""


@dataclass
class RunStatus:
    run_dir: str
    items: list[Item] = field(default_factory=list)

    def by_stage(self) -> dict[str, list[Item]]:
        grouped: dict[str, list[Item]] = {}
        for item in self.items:
            grouped.setdefault(item.stage, []).append(item)
        return grouped

    def count(self, state: str) -> int:
        return sum(item.state == state for item in self.items)

    @property
    def exit_code(self) -> int:
        if self.count("failed"):
            return EXIT_FAILED
        if all(item.state == "done" for item in self.items):
            return EXIT_DONE
        return EXIT_UNFINISHED

    def to_json(self) -> str:
        return json.dumps({"run_dir": self.run_dir, "items": [asdict(item) for item in self.items]}, indent=1)


def last_error(log: Path) -> str | None:
    """The last line of ``log`` that reads as an error (a traceback's exception line, a logging
    line at ERROR level, 'Killed', ...), or None."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        text = line.strip()
        if text and _ERROR_LINE.match(text):
            return text
    return None


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value[part]
    return value


def recorded_staleness(recorded: dict[str, Any], recorded_hash: str, current: dict[str, Any]) -> list[str] | None:
    """None when the config sections a file recorded hash to ``recorded_hash`` with their current
    values; else the names of the sections whose values changed (possibly empty when only the
    hash differs). Recorded keys that are not config sections (e.g. ``class_names``) are ignored."""
    present = {}
    for key in recorded:
        try:
            present[key] = _lookup(current, key)
        except (KeyError, TypeError):
            continue
    if config_hash(present) == recorded_hash:
        return None
    return sorted(key for key, value in present.items() if json.dumps(value, sort_keys=True, default=str)
                  != json.dumps(recorded[key], sort_keys=True, default=str))


def _shard_state(
    path: Path, expected_ids: Sequence[str], product: str | None, current: dict[str, Any]
) -> tuple[str, str]:
    try:
        with ShardReader(path, product=product) as reader:
            changed = recorded_staleness(reader.config, reader.config_hash, current)
            ids = list(reader.image_ids)
    except StoreError as error:
        return "failed", str(error)
    if changed is not None:
        return "stale", "config changed: " + (", ".join(changed) if changed else "stage hash differs")
    if expected_ids and sorted(ids) != sorted(expected_ids):
        return "stale", f"{path.name} holds {len(ids)} ids, the plan gives it {len(expected_ids)} others"
    return "done", ""


def _checkpoint_state(path: Path, current: dict[str, Any]) -> tuple[str, str]:
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        recorded = dict(payload["config"])
        recorded_hash = str(recorded.pop("stage_hash"))
    except Exception as error:  # noqa: BLE001 - torch raises several types for unreadable files
        return "failed", f"{path}: unreadable checkpoint: {error}"
    changed = recorded_staleness(recorded, recorded_hash, current)
    if changed is not None:
        return "stale", "config changed: " + (", ".join(changed) if changed else "stage hash differs")
    return "done", ""


def last_line(log: Path, limit: int = 160) -> str:
    """The last non-empty line of ``log`` (e.g. a progress line with images done and ETA), shortened."""
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    if not lines:
        return ""
    text = lines[-1].split("\r")[-1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _missing_state(log: Path, locked: bool, reported: str | None = None) -> tuple[str, str]:
    error = last_error(log) if log.exists() else None
    if error:
        return "failed", error
    if reported:
        return "failed", reported
    if not log.exists():
        return "pending", ""
    latest = last_line(log)
    if locked:
        return "running", latest
    return "interrupted", "no Snakemake running; log ends: " + (latest or "(empty)")


def _job(
    stage: str, shard: int | None, outputs: Sequence[Path], log: Path, *, locked: bool, current: dict[str, Any],
    expected_ids: Sequence[str] = (), failures: dict[str, str] | None = None,
) -> Item:
    missing = [path for path in outputs if not path.exists()]
    relative_log = str(log)
    if missing:
        state, detail = _missing_state(log, locked, _reported(missing, failures or {}))
        return Item(stage, shard, state, detail, relative_log if log.exists() else "")
    for path in outputs:
        if path.suffix == ".h5":  # folder names may differ from the product (deeplab_pseudo holds 'deeplab')
            state, detail = _shard_state(path, expected_ids, None, current)
        elif path.suffix == ".pt":
            state, detail = _checkpoint_state(path, current)
        else:
            continue
        if state != "done":
            return Item(stage, shard, state, detail)  # the file itself is the problem, not the job's log
    return Item(stage, shard, "done")


def snakemake_failures(workdir: Path) -> dict[str, str]:
    """Outputs of the jobs the latest Snakemake run of ``workdir`` reported as failed
    (``.snakemake/log/*.snakemake.log``: its "Error in rule" blocks) -> why (e.g. killed by a
    signal, which leaves no error in the job's own log). Paths normalised against ``workdir``."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return {}
    try:
        lines = logs[-1].read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    failures: dict[str, str] = {}
    for index, line in enumerate(lines):
        rule = re.match(r"Error in rule (\S+):", line)
        if not rule:
            continue
        reason = f"Snakemake: job of rule {rule.group(1)} failed"
        for previous in reversed(lines[max(0, index - 5) : index]):
            signal = re.search(r"died with <Signals\.(\w+): \d+>", previous)
            if signal:
                reason = f"Snakemake: job of rule {rule.group(1)} killed by {signal.group(1)}"
                break
        for following in lines[index + 1 :]:
            if not following.startswith("    "):
                break
            field, _, value = following.strip().partition(": ")
            if field == "output":
                for path in value.split(", "):
                    failures[os.path.normpath(workdir / path.strip())] = reason
    return failures


def _reported(missing: Sequence[Path], failures: dict[str, str]) -> str | None:
    """Snakemake's reason for a missing output (or for the folder output holding it), if any."""
    for path in missing:
        normalised = os.path.normpath(str(path))
        for output, reason in failures.items():
            if normalised == output or normalised.startswith(output + os.sep):
                return reason
    return None


def snakemake_locked(workdir: Path) -> bool:
    """Whether a Snakemake run holds the lock of ``workdir`` (``.snakemake/locks/`` not empty)."""
    locks = workdir / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


def run_status(config: RunConfig, plan: ShardPlan, *, workdir: Path = Path(".")) -> RunStatus:
    """The state of every job of ``config``'s run (paths relative to ``workdir`` as Snakemake's)."""
    run_dir = workdir / config.run_dir
    current = tracked_config(config)
    locked = snakemake_locked(workdir)
    failures = snakemake_failures(workdir)
    status = RunStatus(str(run_dir))
    if config.dataset.kind == "synthetic":
        root = workdir / config.dataset.root
        outputs = [root / "classes.txt"] if root.exists() else [root]
        status.items.append(_job("make_synthetic", None, outputs, run_dir / "logs/make_synthetic.log",
                                 locked=locked, current=current, failures=failures))
    known_products = set()
    for stage in STAGES:
        if not stage.applies(config):
            continue
        log_pattern = run_dir / stage.log
        if not stage.per_shard:
            status.items.append(_job(stage.name, None, [run_dir / output for output in stage.outputs],
                                     log_pattern, locked=locked, current=current, failures=failures))
            continue
        known_products.update(stage.outputs)
        for shard in plan.product_shards(stage.outputs[0]):
            outputs = [run_dir / product / shard_file_name(shard) for product in stage.outputs]
            log = Path(str(log_pattern).replace("{shard}", f"{shard:05d}"))
            status.items.append(
                _job(stage.name, shard, outputs, log, locked=locked, current=current,
                     expected_ids=plan.product_ids(shard, stage.outputs[0]), failures=failures)
            )
    status.items.extend(_other_products(run_dir, known_products, plan, current))
    return status


def _other_products(run_dir: Path, known: set[str], plan: ShardPlan, current: dict[str, Any]) -> list[Item]:
    """Shard folders the stage table does not know (downstream predictions): done / stale per file."""
    items = []
    if not run_dir.is_dir():
        return items
    for folder in sorted(path for path in run_dir.iterdir() if path.is_dir() and path.name not in known):
        files = sorted(folder.glob("shard-*.h5"))
        for path in files:
            shard = int(path.stem.split("-")[1])
            try:
                with ShardReader(path) as reader:
                    product = reader.product
            except StoreError as error:
                items.append(Item(folder.name, shard, "failed", str(error)))
                continue
            expected = plan.product_ids(shard, product) if shard < len(plan) else []
            state, detail = _shard_state(path, expected, product, current)
            items.append(Item(folder.name, shard, state, detail))
    return items


def format_status(status: RunStatus, *, verbose: bool = False) -> str:
    """A table of the stages (one line each, shards summarised) and the failed / stale jobs."""
    lines = [f"run folder {status.run_dir}", ""]
    grouped = status.by_stage()
    width = max([len(name) for name in grouped] + [5])
    lines.append(f"{'stage':<{width}}  state")
    for stage, items in grouped.items():
        if items[0].shard is None and len(items) == 1:
            summary = items[0].state
        else:
            counts = {state: sum(item.state == state for item in items) for state in STATES}
            if counts["done"] == len(items):
                summary = f"done ({len(items)} shard{'s' if len(items) != 1 else ''})"
            else:
                summary = ", ".join(f"{count} {state}" for state, count in counts.items() if count)
                summary += f" (of {len(items)} shards)"
        lines.append(f"{stage:<{width}}  {summary}")
    for state, heading in (("failed", "failed"), ("stale", "stale (re-run by the workflow)"),
                           ("interrupted", "interrupted"), ("running", "running")):
        chosen = [item for item in status.items if item.state == state]
        if not chosen:
            continue
        lines += ["", f"{heading}:"]
        for item in chosen:
            where = item.stage + (f" shard {item.shard:05d}" if item.shard is not None else "")
            lines.append(f"  {where}" + (f": {item.detail}" if item.detail else ""))
            if item.log and state == "failed":
                lines.append(f"    log: {item.log}")
    if verbose:
        lines += ["", "every job:"]
        for item in status.items:
            where = item.stage + (f" shard {item.shard:05d}" if item.shard is not None else "")
            lines.append(f"  {where:<{width + 12}} {item.state}" + (f"  {item.detail}" if item.detail else ""))
    done, total = status.count("done"), len(status.items)
    others = ", ".join(f"{status.count(state)} {state}" for state in STATES[1:] if status.count(state))
    lines += ["", f"{done}/{total} jobs done" + (f"; {others}" if others else "")]
    return "\n".join(lines) + "\n"
