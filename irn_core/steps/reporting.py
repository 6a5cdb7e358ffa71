"""Where the step entry points put their diagnostics: the log, and small files beside their outputs.

``<output>.diagnostics.json`` holds a stage's statistics and warnings (for a checkpoint
``models/irnet.pt``: ``models/irnet.diagnostics.json``; for a shard ``cam/shard-00000.h5``:
``cam/shard-00000.diagnostics.json``); a training run also writes its per-step loss curves to
``<checkpoint stem>.loss_curves.csv``. Warnings are logged at WARNING level, summaries at INFO.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from irn_core.atomic import write_text_atomic
from irn_core.diagnostics import loss_curve_rows

logger = logging.getLogger(__name__)


def diagnostics_path(output: Path) -> Path:
    """``dir/name.ext`` -> ``dir/name.diagnostics.json``."""
    return output.with_name(f"{output.stem}.diagnostics.json")


def loss_curves_path(output: Path) -> Path:
    """``dir/name.ext`` -> ``dir/name.loss_curves.csv``."""
    return output.with_name(f"{output.stem}.loss_curves.csv")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def report(stage: str, output: Path, statistics: Mapping[str, Any], warnings: Sequence[str]) -> dict[str, Any]:
    """Log ``statistics`` (INFO) and ``warnings`` (WARNING), write them to :func:`diagnostics_path` of ``output``.

    Returns the recorded mapping ``{"stage", "statistics", "warnings"}``.
    """
    summary = ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in statistics.items()
        if not isinstance(value, (Mapping, list, tuple))
    )
    logger.info("%s diagnostics: %s", stage, summary)
    for warning in warnings:
        logger.warning("%s", warning)
    record = {"stage": stage, "statistics": _finite(dict(statistics)), "warnings": list(warnings)}
    write_text_atomic(diagnostics_path(output), json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def write_loss_curves(output: Path, loss_terms: Mapping[str, Sequence[float]], learning_rates: Sequence[float]) -> Path:
    """Write the per-step loss curves of a training run as CSV beside ``output``; returns the path."""
    rows = loss_curve_rows(loss_terms, learning_rates)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    path = loss_curves_path(output)
    write_text_atomic(path, buffer.getvalue())
    return path
