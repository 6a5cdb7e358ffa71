"""Progress of long per-image loops: a tqdm bar on a terminal, a log line every N items everywhere.

The bar is created with ``disable=None``, so it is shown only when stderr is a terminal (in a
Snakemake job, whose stderr goes to the job's log file, it stays quiet); the log lines are what a
log file keeps::

    2026-11-25 10:41:07 INFO irn_core.steps.cam: cam shard 0: 25/80 images (31%), 1.9 images/s, ETA 0:00:29
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

Item = TypeVar("Item")

DEFAULT_EVERY = 25
"""Items between two log lines when the caller does not say (``compute.progress_every``)."""


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` of a number of seconds (rounded)."""
    minutes, seconds = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{seconds:02d}"


def progress_line(description: str, done: int, total: int | None, elapsed: float, unit: str = "image") -> str:
    """``"<description>: 25/80 images (31%), 1.9 images/s, ETA 0:00:29"`` (no total: no share, no ETA;
    under one item per second the time per item: ``2.5 s/image``)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    units = f"{unit}s"
    speed = f"{rate:.1f} {units}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s/{unit}"
    if total:
        remaining = (total - done) / rate if rate > 0 else float("nan")
        eta = format_duration(remaining) if remaining == remaining else "?"
        return f"{description}: {done}/{total} {units} ({100 * done / total:.0f}%), {speed}, ETA {eta}"
    return f"{description}: {done} {units}, {speed}"


def track(
    items: Iterable[Item],
    *,
    description: str,
    logger: logging.Logger,
    every: int = DEFAULT_EVERY,
    unit: str = "image",
    total: int | None = None,
) -> Iterator[Item]:
    """Yield ``items`` with a progress bar (terminals only) and a log line every ``every`` items
    and after the last one: items done, share, rate and ETA."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if total is None and isinstance(items, Sized):
        total = len(items)
    started = time.perf_counter()
    done = 0
    # log lines go through tqdm.write while the bar is shown, so that they do not break it
    with logging_redirect_tqdm(), tqdm(items, total=total, desc=description, unit=unit, disable=None,
                                       leave=False) as bar:
        for item in bar:
            yield item
            done += 1
            if done % every == 0 and done != total:
                logger.info("%s", progress_line(description, done, total, time.perf_counter() - started, unit))
    logger.info("%s", progress_line(description, done, total, time.perf_counter() - started, unit))
