"""The HTML report of a run: ``<run_dir>/report/index.html`` with its PNGs beside it.

Sections: the headline metrics of every stage (``evaluation/*.json``); galleries of sampled images
(the best, median and worst by the ranking product's per-image mIoU, plus a seeded random sample),
one row of panels per image (:func:`irn_core.report.sources.image_panels`) with a figure PNG of the
row; per-class IoU and AP bar charts (``evaluation/*.csv``); the CAM mIoU against the background
threshold (``evaluation/cam_thresholds.csv``); precision-recall curves at each IoU
threshold of every instance product; time and peak memory per rule (``benchmarks/**/*.tsv``, the
files Snakemake's ``benchmark:`` directive writes); the per-class tables; the resolved config.

Galleries: ``pseudo labels`` over the inference ids (``dataset.infer_split``) and, when the run has
downstream models, ``downstream models`` over the validation ids. Products and metric files are
taken from what exists, so the report of a partial run shows what is there.

The page uses no script and no external resource; the folder is written beside its final place
and renamed over it when complete.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from irn_core.config import RunConfig, dump_config, stage_hash
from irn_core.data.registry import SegmentationDataset
from irn_core.evaluation import NOT_APPLICABLE
from irn_core.report import figures
from irn_core.report.colours import colour_wheel_legend, palette_array
from irn_core.report.panels import Panel
from irn_core.report.scores import GalleryScores, Selection, precision_recall_curves, score_gallery, select_images
from irn_core.report.sources import RunSources, image_panels

logger = logging.getLogger(__name__)

INDEX = "index.html"


@dataclass
class Row:
    selection: Selection
    panels: list[tuple[Panel, str]]
    """Each panel and its PNG's path relative to the report folder."""
    figure: str


@dataclass
class Gallery:
    role: str
    title: str
    description: str
    ranking: str | None
    rows: list[Row] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ inputs


def safe_name(text: str) -> str:
    """A file-name-safe form of an image id or key (other characters become '_')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "_"


def read_metrics(evaluation_dir: Path) -> dict[str, dict[str, float | None]]:
    """Headline metrics of every stage: ``evaluation/<stage>.json`` -> stage -> metric -> value
    (None: JSON null, a metric that does not apply, shown as "n/a"; files that are not a JSON object of
    numbers are skipped with a warning)."""
    metrics: dict[str, dict[str, float | None]] = {}
    for path in sorted(evaluation_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            logger.warning("%s skipped: %s", path, error)
            continue
        if not isinstance(data, dict):
            logger.warning("%s skipped: not a JSON object", path)
            continue
        numbers: dict[str, float | None] = {
            str(key): None if value is None else float(value)
            for key, value in data.items()
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        }
        if numbers:
            metrics[path.stem] = numbers
    return dict(sorted(metrics.items(), key=lambda item: _stage_order(item[0])))


def _stage_order(stage: str) -> tuple[int, str]:
    """Pipeline stages first, in pipeline order; then the others (downstream models) by name."""
    order = ("cam", "semantic", "instances")
    return (order.index(stage), "") if stage in order else (len(order), stage)


def read_tables(evaluation_dir: Path) -> dict[str, pd.DataFrame]:
    """Per-class tables ``evaluation/<stage>.csv`` (first column the class) by stage."""
    tables = {}
    for path in sorted(evaluation_dir.glob("*.csv")):
        try:
            tables[path.stem] = pd.read_csv(path, index_col=0)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            logger.warning("%s skipped: %s", path, error)
    return dict(sorted(tables.items(), key=lambda item: _stage_order(item[0])))


def read_benchmarks(benchmark_dir: Path) -> pd.DataFrame:
    """Job costs per rule from Snakemake's benchmark files: ``benchmarks/<rule>.tsv`` or
    ``benchmarks/<rule>/<wildcards>.tsv`` -> index rule; columns ``jobs``, ``seconds`` (sum of the
    jobs' wall times), ``longest_job_s``, ``cpu_seconds`` (sum) and ``peak_rss_mib`` (largest job's
    ``max_rss``, Snakemake's MB = MiB); the last row of a file is its latest measurement."""
    records = []
    for path in sorted(benchmark_dir.rglob("*.tsv")):
        relative = path.relative_to(benchmark_dir)
        rule = relative.parts[0].removesuffix(".tsv")
        try:
            frame = pd.read_csv(path, sep="\t", na_values=["-", "NA"])
        except (OSError, ValueError, pd.errors.ParserError) as error:
            logger.warning("%s skipped: %s", path, error)
            continue
        if frame.empty or "s" not in frame:
            continue
        last = frame.iloc[-1]
        records.append(
            {
                "rule": rule,
                "seconds": float(last["s"]),
                "cpu_seconds": float(last.get("cpu_time", math.nan)),
                "max_rss": float(last.get("max_rss", math.nan)),
            }
        )
    if not records:
        return pd.DataFrame(columns=["jobs", "seconds", "longest_job_s", "cpu_seconds", "peak_rss_mib"])
    frame = pd.DataFrame(records)
    grouped = frame.groupby("rule", sort=False)
    costs = pd.DataFrame(
        {
            "jobs": grouped.size(),
            "seconds": grouped["seconds"].sum(),
            "longest_job_s": grouped["seconds"].max(),
            "cpu_seconds": grouped["cpu_seconds"].sum(min_count=1),
            "peak_rss_mib": grouped["max_rss"].max(),
        }
    )
    costs.index.name = "rule"
    return costs


# ------------------------------------------------------------------------------------------ images


def write_rgb_png(rgb: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path, format="PNG", optimize=False, compress_level=6)


def _gallery_ids(role_ids: Sequence[str], sources: RunSources) -> list[str]:
    return [image_id for image_id in role_ids if sources.holding(image_id)]


def build_gallery(
    role: str,
    title: str,
    ids: Sequence[str],
    sources: RunSources,
    dataset: SegmentationDataset,
    config: RunConfig,
    output: Path,
) -> tuple[Gallery, GalleryScores]:
    """Score the gallery's ids, pick the images, write their panels and row figures under ``output``."""
    scores = score_gallery(ids, sources, dataset, config, description=f"report: scoring {role} images")
    ranking_source = scores.ranking_source()
    per_image = scores.per_image_iou.get(ranking_source) if ranking_source else None
    selections = select_images(ids, per_image, random_count=config.report.random_images, seed=config.seed)
    if ranking_source is not None:
        description = (
            f"The best, median and worst of {len(per_image or {})} images by the per-image mIoU of the "
            f"{ranking_source.title} (classes present in the label map or the ground truth), and "
            f"{config.report.random_images} drawn at random (seed {config.seed})."
        )
    else:
        description = f"{config.report.random_images} images drawn at random (seed {config.seed})."
    gallery = Gallery(role, title, description, ranking_source.title if ranking_source else None)
    for selection in selections:
        panels = image_panels(selection.image_id, sources, dataset, config)
        folder = Path("images") / safe_name(selection.image_id)
        written = []
        for panel in panels:
            relative = folder / f"{safe_name(panel.key)}.png"
            write_rgb_png(panel.rgb, output / relative)
            written.append((panel, relative.as_posix()))
        figure_path = Path("figures") / f"{safe_name(selection.image_id)}.png"
        figure = figures.panel_grid(panels, title=_row_title(selection, gallery.ranking))
        (output / figure_path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(output / figure_path, format="png", dpi=figures.DPI)
        gallery.rows.append(Row(selection, written, figure_path.as_posix()))
    return gallery, scores


def _row_title(selection: Selection, ranking: str | None) -> str:
    text = f"{selection.image_id} ({selection.reason}"
    if selection.miou is not None and ranking:
        text += f", {ranking} mIoU {100 * selection.miou:.1f}%"
    return text + ")"


# ------------------------------------------------------------------------------------------ charts


def _class_values(table: pd.DataFrame, column: str, drop: Sequence[str]) -> dict[str, float]:
    return {str(name): float(value) for name, value in table[column].items() if str(name) not in drop}


def write_charts(
    tables: dict[str, pd.DataFrame], curves: dict[str, dict[float, list]], class_names: Sequence[str], output: Path
) -> list[tuple[str, str, str]]:
    """Bar charts and precision-recall figures; returns (title, relative path, caption) of each."""
    charts: list[tuple[str, str, str]] = []
    iou_series = {
        stage: _class_values(table, "IoU", ("mIoU",)) for stage, table in tables.items() if "IoU" in table.columns
    }
    if iou_series:
        categories = ["background", *class_names]
        labelled = {f"{stage} (mIoU {100 * tables[stage].loc['mIoU', 'IoU']:.1f})"
                    if "mIoU" in tables[stage].index else stage: values for stage, values in iou_series.items()}
        figure = figures.grouped_bars(labelled, categories, title="Per-class IoU", ylabel="IoU (%)")
        figures.write_png(figure, output / "charts" / "iou.png")
        charts.append(("Per-class IoU", "charts/iou.png", "IoU of every class (background included), per stage."))
    for stage, table in tables.items():
        ap_columns = [column for column in table.columns if str(column).startswith("AP@")]
        if not ap_columns:
            continue
        series = {}
        for column in ap_columns:
            values = _class_values(table, column, ("mAP",))
            label = str(column)
            if "mAP" in table.index:
                label += f" (mAP {100 * float(table.loc['mAP', column]):.1f})"
            series[label] = values
        figure = figures.grouped_bars(series, list(class_names), title=f"Per-class AP: {stage}", ylabel="AP (%)")
        path = f"charts/ap-{safe_name(stage)}.png"
        figures.write_png(figure, output / path)
        charts.append((f"Per-class AP: {stage}", path, f"Mask AP of every class at each IoU threshold ({stage})."))
    for stage, table in tables.items():
        if {"mIoU", "foreground_fraction"} <= set(table.columns):  # the CAM threshold curve
            figure = figures.threshold_curve_figure(table, title="CAM mIoU against the background threshold")
            path = f"charts/threshold-{safe_name(stage)}.png"
            figures.write_png(figure, output / path)
            charts.append((
                "CAM mIoU against the background threshold", path,
                "CAM mIoU when pixels whose largest CAM is at most the threshold are background, and the share "
                f"of pixels labelled foreground (no ground truth needed), per threshold ({stage}.csv).",
            ))
    for stage, stage_curves in curves.items():
        figure = figures.precision_recall_figure(stage_curves, class_names, title=f"Precision-recall: {stage}")
        path = f"charts/pr-{safe_name(stage)}.png"
        figures.write_png(figure, output / path)
        charts.append(
            (
                f"Precision-recall curves: {stage}",
                path,
                f"Precision against recall of {stage}, detections in decreasing score order, one panel per IoU "
                "threshold; AP is the area under the interpolated curve (VOC 2010+), as in the evaluation.",
            )
        )
    return charts


# ------------------------------------------------------------------------------------------ HTML


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em 2em; color: #222;
       max-width: 1600px; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
.row { margin: 1.2em 0; }
.row h3 { font-size: 1em; margin: 0 0 0.3em 0; }
.panels { display: flex; flex-wrap: wrap; gap: 8px 6px; }
figure { margin: 0; flex: 0 0 auto; width: min-content; }
figure img.panel { height: 132px; width: auto; display: block; border: 1px solid #ccc; }
figcaption { font-size: 0.75em; color: #333; margin-top: 2px; line-height: 1.2; }
.chart img { max-width: 100%; height: auto; border: 0; }
.legend { display: flex; flex-wrap: wrap; gap: 0.3em 1em; align-items: center; font-size: 0.85em; margin: 0.5em 0; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #888; vertical-align: middle;
          margin-right: 0.3em; }
details { margin: 0.5em 0; } pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
"""


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _image_tag(path: Path, relative: str, alt: str, css_class: str) -> str:
    with Image.open(path) as image:
        width, height = image.size
    return (f'<img class="{css_class}" src="{_escape(relative)}" width="{width}" height="{height}" '
            f'alt="{_escape(alt)}">')


def _percent(value: float | None) -> str:
    """A fraction as a percentage; None (not applicable, e.g. COCO's AP_small without small objects) as "n/a",
    NaN (not computed) as a dash."""
    if value is None:
        return NOT_APPLICABLE
    return "–" if isinstance(value, float) and math.isnan(value) else f"{100 * value:.1f}"


def _metrics_html(metrics: dict[str, dict[str, float | None]]) -> str:
    if not metrics:
        return '<p class="note">No metric files in evaluation/.</p>'
    rows = []
    for stage, values in metrics.items():
        shown = [(name, value) for name, value in values.items() if name != "images"]
        images = values.get("images")
        span = f' rowspan="{len(shown)}"'
        for index, (name, value) in enumerate(shown):
            cells = f'<td class="name"{span}>{_escape(stage)}</td>' if index == 0 else ""
            cells += f'<td class="name">{_escape(name)}</td><td>{_percent(value)}</td>'
            if index == 0:
                cells += f"<td{span}>{int(images) if images is not None else ''}</td>"
            rows.append(f"<tr>{cells}</tr>")
    return ('<table><tr><th class="name">stage</th><th class="name">metric</th><th>value (%)</th>'
            "<th>images</th></tr>" + "".join(rows) + "</table>")


def _table_html(table: pd.DataFrame) -> str:
    header = "".join(f"<th>{_escape(column)} (%)</th>" for column in table.columns)
    rows = []
    for name, values in table.iterrows():
        cells = "".join(f"<td>{_percent(float(value))}</td>" for value in values)
        rows.append(f'<tr><td class="name">{_escape(name)}</td>{cells}</tr>')
    return f'<table><tr><th class="name">{_escape(table.index.name or "")}</th>{header}</tr>{"".join(rows)}</table>'


def _costs_html(costs: pd.DataFrame) -> str:
    if costs.empty:
        return '<p class="note">No benchmark files in benchmarks/.</p>'
    rows = []
    for rule, values in costs.iterrows():
        rows.append(
            f'<tr><td class="name">{_escape(rule)}</td><td>{int(values["jobs"])}</td>'
            f'<td>{values["seconds"]:.1f}</td><td>{values["longest_job_s"]:.1f}</td>'
            f'<td>{_number(values["cpu_seconds"], ".1f")}</td><td>{_number(values["peak_rss_mib"], ".0f")}</td></tr>'
        )
    total = costs["seconds"].sum()
    return (
        '<table><tr><th class="name">rule</th><th>jobs</th><th>wall time (s, all jobs)</th><th>longest job (s)</th>'
        "<th>CPU time (s)</th><th>peak memory (MiB)</th></tr>" + "".join(rows)
        + f'<tr><td class="name"><b>all rules</b></td><td>{int(costs["jobs"].sum())}</td><td><b>{total:.1f}</b></td>'
        "<td></td><td></td><td></td></tr></table>"
    )


def _number(value: float, spec: str) -> str:
    return "–" if value is None or math.isnan(float(value)) else format(float(value), spec)


def _legend_html(class_names: Sequence[str]) -> str:
    palette = palette_array()
    items = []
    for index, name in enumerate(["background", *class_names, "void / unknown"]):
        red, green, blue = palette[index if index <= len(class_names) else 255]
        items.append(f'<span><span class="swatch" style="background: rgb({red}, {green}, {blue})"></span>'
                     f"{_escape(name)}</span>")
    return '<div class="legend">' + "".join(items) + "</div>"


def _gallery_html(gallery: Gallery, output: Path) -> str:
    parts = [f"<h2>{_escape(gallery.title)}</h2>", f'<p class="note">{_escape(gallery.description)}</p>']
    if not gallery.rows:
        parts.append('<p class="note">No image of this split is held by any product.</p>')
    for row in gallery.rows:
        heading = _row_title(row.selection, gallery.ranking)
        figures_html = []
        for panel, relative in row.panels:
            figures_html.append(
                f"<figure>{_image_tag(output / relative, relative, panel.title, 'panel')}"
                f"<figcaption>{_escape(panel.title)}</figcaption></figure>"
            )
        parts.append(
            f'<div class="row" id="{_escape(gallery.role)}-{_escape(safe_name(row.selection.image_id))}">'
            f'<h3>{_escape(heading)} · <a href="{_escape(row.figure)}">figure PNG</a></h3>'
            f'<div class="panels">{"".join(figures_html)}</div></div>'
        )
    return "\n".join(parts)


def _metrics_section(metrics: dict[str, dict[str, float | None]]) -> list[str]:
    return [
        "<h2>Metrics</h2>",
        _metrics_html(metrics),
        '<p class="note">Semantic: mIoU over background and every class (ChainerCV). Instances: VOC mask AP at '
        "each IoU threshold and mAP<sup>r</sup><sub>vol</sub> (mean over IoU 0.1 … 0.9).</p>",
    ]


def _summary_section(run_dir: Path) -> list[str]:
    """Without ground truth: no metrics, the summary's ground-truth-free figures (``evaluation/summary.md``)."""
    summary = run_dir / "evaluation" / "summary.md"
    text = summary.read_text(encoding="utf-8") if summary.is_file() else "(no evaluation/summary.md)"
    return [
        "<h2>Summary without ground truth</h2>",
        '<p class="note">evaluation.ground_truth is false: nothing is scored against masks. '
        "The figures of evaluation/summary.md:</p>",
        f"<pre>{_escape(text)}</pre>",
    ]


def render_html(
    config: RunConfig,
    *,
    metrics: dict[str, dict[str, float | None]],
    galleries: Sequence[Gallery],
    charts: Sequence[tuple[str, str, str]],
    tables: dict[str, pd.DataFrame],
    costs: pd.DataFrame,
    class_names: Sequence[str],
    code_version: str,
    output: Path,
) -> str:
    """The page's HTML (the PNGs it names must already be in ``output``)."""
    dataset = config.dataset
    title = f"irn report: run '{config.name}'"
    sections = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_escape(title)}</h1>",
        f'<p class="meta">IRNet (Ahn, Cho, Kwak, CVPR 2019) pseudo labels from image-level labels · dataset '
        f"{_escape(dataset.kind)} ({_escape(dataset.root)}), trained on '{_escape(dataset.train_split)}', "
        f"pseudo labels {'evaluated on' if config.evaluation.ground_truth else 'made for'} "
        f"'{_escape(dataset.infer_split)}' · preset {_escape(config.preset)} · "
        f"code {_escape(code_version)} · report config {_escape(stage_hash(config, 'report'))}</p>",
        *(_metrics_section(metrics) if config.evaluation.ground_truth else _summary_section(config.run_dir)),
    ]
    sections.append("<h2>Colours</h2>" + _legend_html(class_names))
    wheel = "images/colour-wheel.png"
    sections.append(
        f'<div class="legend">{_image_tag(output / wheel, wheel, "optical-flow colour wheel", "wheel")}'
        '<span class="note">Displacement fields: the optical-flow colour wheel (Middlebury; Baker et al.): hue = '
        "direction (right red, down yellow, left cyan, up blue), saturation = length relative to the image's longest "
        "vector; white dots ringed in black: the instance centroids the pixels converge to. CAMs: 'jet' over the "
        "image. Boundary map: dark = boundary. Instance maps: instance k in VOC colour k+1.</span></div>"
    )
    for gallery in galleries:
        sections.append(_gallery_html(gallery, output))
    if charts:
        sections.append("<h2>Per-class results</h2>")
        for chart_title, relative, caption in charts:
            sections.append(
                f'<div class="chart"><h3>{_escape(chart_title)}</h3>'
                f"{_image_tag(output / relative, relative, chart_title, 'chart')}"
                f'<p class="note">{_escape(caption)}</p></div>'
            )
    if tables:
        sections.append("<h2>Per-class tables</h2>")
        for stage, table in tables.items():
            sections.append(f"<details><summary>{_escape(stage)}</summary>{_table_html(table)}</details>")
    sections.append("<h2>Compute: time and peak memory per rule</h2>")
    sections.append(_costs_html(costs))
    if not costs.empty and (output / "charts" / "costs.png").exists():
        costs_chart = _image_tag(output / "charts/costs.png", "charts/costs.png", "job costs", "chart")
        sections.append(f'<div class="chart">{costs_chart}</div>')
    sections.append(
        '<p class="note">From the files of Snakemake\'s benchmark directive (results/&lt;name&gt;/benchmarks/): '
        "wall time summed over a rule's jobs; peak memory = the largest job's maximum resident set size.</p>"
    )
    sections.append("<h2>Configuration</h2><details><summary>resolved config</summary>"
                    f"<pre>{_escape(dump_config(config))}</pre></details>")
    sections.append("</body></html>")
    return "\n".join(sections) + "\n"


# ------------------------------------------------------------------------------------------ entry


def build_report(config: RunConfig, dataset: SegmentationDataset, role_ids: dict[str, list[str]], output: Path) -> Path:
    """Write the report of ``config``'s run folder into ``output`` (which must be empty or absent).

    ``role_ids``: the ids of the ``infer`` and ``val`` roles (the shard plan's). Returns the page's path.
    """
    from irn_core.version import code_version

    run_dir = config.run_dir
    output.mkdir(parents=True, exist_ok=True)
    class_names = list(dataset.class_names)
    write_rgb_png(colour_wheel_legend(96), output / "images" / "colour-wheel.png")
    galleries: list[Gallery] = []
    curves: dict[str, dict[float, list]] = {}
    gallery_specs = (
        ("infer", f"Pseudo labels ({config.dataset.infer_split} split)"),
        ("val", f"Downstream models ({config.dataset.val_split} split)"),
    )
    with RunSources.open(run_dir) as sources:
        for role, title in gallery_specs:
            ids = _gallery_ids(role_ids.get(role, []), sources)
            if not ids:
                continue
            gallery, scores = build_gallery(role, title, ids, sources, dataset, config, output)
            galleries.append(gallery)
            for source, accumulator in scores.accumulators.items():
                if scores.images_scored.get(source):
                    curves[source.directory] = precision_recall_curves(accumulator)
    metrics = read_metrics(run_dir / "evaluation")
    tables = read_tables(run_dir / "evaluation")
    charts = write_charts(tables, curves, class_names, output)
    costs = read_benchmarks(run_dir / "benchmarks")
    if not costs.empty:
        figures.write_png(figures.job_cost_figure(costs), output / "charts" / "costs.png")
    page = render_html(
        config, metrics=metrics, galleries=galleries, charts=charts, tables=tables, costs=costs,
        class_names=class_names, code_version=code_version(), output=output,
    )
    (output / INDEX).write_text(page, encoding="utf-8")
    return output / INDEX


def write_report(config: RunConfig, dataset: SegmentationDataset, role_ids: dict[str, list[str]],
                 output: Path) -> Path:
    """:func:`build_report` into a temporary sibling of ``output``, then swap it into place, so
    ``output`` is always a whole report (the previous one until the new one is complete)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        build_report(config, dataset, role_ids, temporary)
        os.chmod(temporary, 0o777 & ~_umask())
        previous = output.with_name(f".{output.name}.old-{os.getpid()}")
        if output.exists():
            os.replace(output, previous)
        os.replace(temporary, output)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info("report written to %s", output / INDEX)
    return output / INDEX


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

