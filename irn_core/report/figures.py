"""Charts of the report, drawn with matplotlib's object API on the Agg canvas (no pyplot state).

Class colours are the VOC palette's (class k -> entry k + 1, as in the label maps); series of
thresholds or stages use matplotlib's qualitative 'tab10' colours.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from irn_core.atomic import atomic_path
from irn_core.report.colours import palette_array
from irn_core.report.panels import Panel

DPI = 110


def class_colour(class_index: int) -> tuple[float, float, float]:
    """The VOC colour (0..1 floats) of label ``class_index`` (0 background, k + 1 class k)."""
    red, green, blue = palette_array()[class_index % 256]
    return red / 255, green / 255, blue / 255


def _series_colour(index: int) -> tuple[float, ...]:
    from matplotlib import colormaps

    return tuple(colormaps["tab10"](index % 10))


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def grouped_bars(
    values: Mapping[str, Mapping[str, float]], categories: Sequence[str], *, title: str, ylabel: str
) -> Figure:
    """Grouped bar chart: one group per category (x axis), one bar per series (``values``:
    series name -> category -> value in [0, 1], shown in percent; NaN / missing: no bar)."""
    series = list(values)
    width = max(7.0, 0.16 * len(categories) * max(len(series), 1) + 2.5)
    figure = _new_figure(min(width, 18.0), 4.0)
    axes = figure.add_subplot()
    positions = np.arange(len(categories), dtype=np.float64)
    bar_width = 0.8 / max(len(series), 1)
    for index, name in enumerate(series):
        heights = np.array([values[name].get(category, math.nan) for category in categories], dtype=np.float64)
        offsets = positions - 0.4 + bar_width * (index + 0.5)
        axes.bar(offsets, 100 * np.nan_to_num(heights), width=bar_width, color=_series_colour(index), label=name)
    axes.set_xticks(positions, list(categories), rotation=45 if len(categories) > 6 else 0, ha="right"
                    if len(categories) > 6 else "center")
    axes.set_ylim(0, 100)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    if series:
        figure.legend(fontsize="small", ncols=min(len(series), 4), loc="outside lower center")
    return figure


def precision_recall_figure(
    curves: Mapping[float, Sequence[tuple[np.ndarray, np.ndarray, float] | None]],
    class_names: Sequence[str],
    *,
    title: str,
) -> Figure:
    """One subplot per IoU threshold, one precision-recall curve per class (VOC colour), the
    class's AP in the legend; mAP in each subplot's title."""
    thresholds = sorted(curves)
    columns = min(len(thresholds), 4)
    rows = math.ceil(len(thresholds) / columns)
    figure = _new_figure(3.3 * columns + 1.8, 3.1 * rows + 0.4)
    figure.suptitle(title)
    for index, threshold in enumerate(thresholds):
        axes = figure.add_subplot(rows, columns, index + 1)
        aps = []
        for class_index, curve in enumerate(curves[threshold]):
            if curve is None:
                continue
            precision, recall, ap = curve
            aps.append(ap)
            label = f"{class_names[class_index]} {100 * ap:.1f}" if index == len(thresholds) - 1 else None
            # the curve from (recall 0, first precision) on, as a step of each detection
            axes.plot(
                np.concatenate([[0.0], recall]),
                np.concatenate([precision[:1] if len(precision) else [0.0], precision]),
                color=class_colour(class_index + 1),
                linewidth=1.4,
                label=label,
            )
        mean_ap = float(np.mean(aps)) if aps else math.nan
        axes.set_title(f"IoU {threshold:g}: mAP {100 * mean_ap:.1f}", fontsize="medium")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.set_xlabel("recall")
        if index % columns == 0:
            axes.set_ylabel("precision")
        axes.grid(alpha=0.3)
        if index == len(thresholds) - 1 and aps:
            axes.legend(title=f"class, AP@{threshold:g} (%)", fontsize="x-small", title_fontsize="x-small",
                        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return figure


def threshold_curve_figure(curve: pd.DataFrame, *, title: str) -> Figure:
    """Line chart of CAM mIoU and of the CAM labels' mean foreground fraction (both in percent) against
    the background threshold; the best mIoU is marked and named in the legend. ``curve``: index the
    thresholds, columns ``mIoU`` and ``foreground_fraction`` (fractions)."""
    figure = _new_figure(7.0, 3.8)
    axes = figure.add_subplot()
    thresholds = curve.index.to_numpy(dtype=np.float64)
    miou = curve["mIoU"].to_numpy(dtype=np.float64)
    axes.plot(thresholds, 100 * miou, marker="o", color=_series_colour(0), label="CAM mIoU")
    axes.plot(thresholds, 100 * curve["foreground_fraction"].to_numpy(dtype=np.float64), marker="s",
              linestyle="--", color=_series_colour(1), label="foreground fraction of the CAM labels")
    if np.isfinite(miou).any():
        best = int(np.nanargmax(miou))
        axes.plot([thresholds[best]], [100 * miou[best]], marker="*", markersize=14, linestyle="none",
                  color=_series_colour(3), label=f"best: {100 * miou[best]:.1f} at {thresholds[best]:.2f}")
    axes.set_xlabel("background threshold")
    axes.set_ylabel("percent")
    axes.set_ylim(0, 100)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def job_cost_figure(costs: pd.DataFrame) -> Figure:
    """Two horizontal bar charts per rule: wall time (s, all jobs summed) and peak resident
    memory (MiB, largest job). ``costs``: index rule, columns ``seconds`` and ``peak_rss_mib``."""
    rules = list(costs.index)
    figure = _new_figure(10.0, 0.35 * len(rules) + 1.4)
    for index, (column, label) in enumerate((("seconds", "wall time (s, all jobs)"),
                                             ("peak_rss_mib", "peak memory (MiB, largest job)"))):
        axes = figure.add_subplot(1, 2, index + 1)
        values = costs[column].astype(float).fillna(0.0).to_numpy()
        axes.barh(np.arange(len(rules)), values, color=_series_colour(index))
        axes.set_yticks(np.arange(len(rules)), rules if index == 0 else [""] * len(rules))
        axes.invert_yaxis()
        axes.set_xlabel(label)
        axes.grid(axis="x", alpha=0.3)
        axes.set_axisbelow(True)
        for position, value in enumerate(values):
            axes.text(value, position, f" {value:.0f}", va="center", fontsize="x-small")
        axes.margins(x=0.15)
    return figure


def panel_grid(panels: Sequence[Panel], *, title: str, columns: int = 6) -> Figure:
    """The panels of one image in a grid with their captions (what ``irn show`` writes)."""
    count = max(len(panels), 1)
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    height, width = panels[0].rgb.shape[:2] if panels else (1, 1)
    cell = 2.6
    figure = _new_figure(cell * columns, cell * rows * height / width + 0.35 * rows + 0.5)
    figure.suptitle(title)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(panel.rgb, interpolation="nearest")
        axes.set_title(panel.title, fontsize="small", wrap=True)
        axes.set_axis_off()
    return figure


def write_png(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Save ``figure`` as a PNG, atomically."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)

