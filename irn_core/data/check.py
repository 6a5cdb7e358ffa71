"""``irn data check``: is a run's dataset complete and readable, before hours of jobs find out?

For every split the run uses (``dataset.train_split``, ``infer_split``, ``downstream_split``,
``val_split``), :func:`check_dataset` reports

- the id count, against the official count where it applies (``resources/datasets.yaml``: VOC 2012's
  ``train`` 1,464 / ``val`` 1,449 / ``train_aug`` 10,582 when the root is a devkit's ``VOC2012`` folder
  with the VOC class table; COCO 2017's 118,287 / 5,000 images of ``instances_{train,val}2017.json``);
- that every listed image exists (all ids), opens (header only: the pixels are not decoded) and is
  complete (a JPEG's end marker, a PNG's IEND chunk); COCO: its size equals the annotation file's;
- the image-level labels (VOC layout: the XML, else the class map; COCO: the annotations); an image
  without any label is a problem in the VOC layout (every VOC segmentation image holds an object),
  counted only for COCO (train2017 holds 1,021 images without annotations);
- the ground truth of the ``infer`` and ``val`` splits (evaluated by the run): VOC layout: the class
  map exists, decodes, holds only class values and has the image's size (not checked when
  ``evaluation.ground_truth`` is false: a run on photos with image-level labels only);
- class counts (images holding each class) and image size statistics per split.

``sample``: check the contents (header, completeness, labels) of at most that many ids per split,
evenly spread (existence is checked for every id); None checks every id. :func:`check_at_run_start`
runs the sampled check when a run starts, cached under ``results/<name>/data_check.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from irn_core.atomic import write_text_atomic
from irn_core.config import RunConfig
from irn_core.data.classes import VOC_CLASSES
from irn_core.data.images import image_header, image_is_complete
from irn_core.data.registry import SegmentationDataset
from irn_core.errors import DatasetError
from irn_core.progress import track

logger = logging.getLogger(__name__)

CACHE_FILE = "data_check.json"
"""The cached run-start check, in the run folder."""
RUN_START_SAMPLE = 100
"""Ids per split whose contents the run-start check reads (every id's files are checked to exist)."""
GROUND_TRUTH_ROLES = ("infer", "val")
LABELLED_ROLES = ("train", "infer")


@dataclass(frozen=True)
class Problem:
    """One thing wrong: ``image_id`` None for a dataset- or split-level problem."""

    split: str | None
    image_id: str | None
    path: str | None
    problem: str


@dataclass(frozen=True)
class SizeStatistics:
    """Image heights and widths (pixels) of the checked images of a split."""

    images: int
    height_min: int
    height_median: float
    height_max: int
    width_min: int
    width_median: float
    width_max: int

    @classmethod
    def of(cls, sizes: list[tuple[int, int]]) -> SizeStatistics | None:
        if not sizes:
            return None
        heights, widths = [size[0] for size in sizes], [size[1] for size in sizes]
        return cls(len(sizes), min(heights), float(statistics.median(heights)), max(heights),
                   min(widths), float(statistics.median(widths)), max(widths))


@dataclass
class SplitReport:
    """One split: ``ids`` listed, ``expected_ids`` of the official release (None: no official count),
    ``checked`` ids examined (missing ones, and those whose contents were read), ``without_labels`` of
    them, images per class name."""

    split: str
    roles: list[str]
    ids: int
    expected_ids: int | None
    checked: int = 0
    without_labels: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    sizes: SizeStatistics | None = None


@dataclass
class DatasetCheck:
    """The result of :func:`check_dataset`; ``image_counts`` and each split's ``sizes`` are what a disk
    estimate of the run's products needs."""

    kind: str
    location: str
    splits: list[SplitReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sample: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def image_counts(self) -> dict[str, int]:
        """Ids per split."""
        return {split.split: split.ids for split in self.splits}

    def fatal_problems(self) -> list[Problem]:
        """The problems that stop a run at its start: dataset- or split-level ones, and every problem of a
        split where each checked id has one (a wrong folder). Problems of single images are left to the
        jobs that read them (which fail naming the file, or skip it under ``on_unreadable: skip``)."""
        checked = {split.split: split.checked for split in self.splits}
        failing: dict[str | None, set[str]] = {}
        for problem in self.problems:
            if problem.image_id is not None:
                failing.setdefault(problem.split, set()).add(problem.image_id)
        broken = {split for split, ids in failing.items() if split in checked and len(ids) >= max(checked[split], 1)}
        return [problem for problem in self.problems if problem.image_id is None or problem.split in broken]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DatasetCheck:
        data = json.loads(text)
        splits = []
        for split in data["splits"]:
            sizes = SizeStatistics(**split.pop("sizes")) if split.get("sizes") else None
            split.pop("sizes", None)
            splits.append(SplitReport(**split, sizes=sizes))
        return cls(kind=data["kind"], location=data["location"], splits=splits,
                   problems=[Problem(**problem) for problem in data["problems"]], notes=list(data["notes"]),
                   sample=data["sample"])


# ---------------------------------------------------------------------------------------------- checks


def _split_roles(config: RunConfig) -> dict[str, list[str]]:
    from irn_core.steps.common import role_splits

    roles: dict[str, list[str]] = {}
    for role, split in role_splits(config).items():
        if split is not None:
            roles.setdefault(split, []).append(role)
    return roles


def _location(config: RunConfig) -> str:
    dataset = config.dataset
    if dataset.kind == "coco" and dataset.coco_splits is not None:
        return ", ".join(f"{name}: {split.annotation_file}" for name, split in dataset.coco_splits.items())
    parts = [str(dataset.root)]
    if dataset.sbd_root is not None:
        parts.append(f"SBD {dataset.sbd_root}")
    if dataset.annotation_file is not None:
        parts.append(str(dataset.annotation_file))
    return ", ".join(parts)


def _official_counts(config: RunConfig, dataset: SegmentationDataset) -> dict[str, int]:
    """Split -> the official release's id count, where the dataset is an official release."""
    from irn_core.data.fetch import FetchError, load_resources

    try:
        table = load_resources()
    except FetchError as error:
        logger.warning("official split sizes not checked: %s", error)
        return {}
    section = config.dataset
    if section.kind == "voc12":
        official = tuple(dataset.class_names) == VOC_CLASSES and Path(section.root).name == "VOC2012"
        return dict(table["voc12"].expected_ids) if official and "voc12" in table else {}
    if section.kind == "coco" and "coco" in table:
        expected = table["coco"].expected_images
        if section.coco_splits is not None:
            return {name: expected[Path(split.annotation_file).name] for name, split in section.coco_splits.items()
                    if Path(split.annotation_file).name in expected}
        if section.annotation_file is not None and section.annotation_file.name in expected:
            return {"all": expected[section.annotation_file.name]}
    return {}


def _evenly(ids: list[str], sample: int | None) -> list[str]:
    if sample is None or len(ids) <= sample:
        return ids
    return [ids[(index * len(ids)) // sample] for index in range(sample)]


def _check_image(dataset: SegmentationDataset, image_id: str) -> tuple[int, int]:
    """(height, width) of an existing image from its header; a problem raises DatasetError."""
    path = dataset.image_path(image_id)  # type: ignore[attr-defined]
    size, file_format = image_header(path, image_id=image_id)
    if not image_is_complete(path, file_format):
        raise DatasetError(f"{path} (image id {image_id}): truncated image (no {file_format} end marker)")
    if hasattr(dataset, "coco_image_id"):
        recorded = dataset.image_size(image_id)
        if recorded != size:
            raise DatasetError(f"{path} (image id {image_id}): image size {size} differs from {recorded} in the "
                               "annotation file")
    return size


def _check_ground_truth(dataset: SegmentationDataset, image_id: str) -> None:
    """VOC layout: the class map exists, decodes, holds class values only and has the image's size; COCO:
    every annotation of the image has a segmentation."""
    if hasattr(dataset, "semantic_mask_source"):
        dataset.semantic_mask(image_id)
    elif hasattr(dataset, "require_segmentation"):  # COCO: every annotation has a segmentation (not decoded)
        dataset.require_segmentation(image_id)


def _problem(split: str | None, image_id: str | None, error: DatasetError) -> Problem:
    """A problem from a reader's error "PATH (image id ID): what" (the path goes to its own column)."""
    message = str(error)
    first = message.split(" ", 1)[0].rstrip(":")
    if os.sep not in first:
        return Problem(split, image_id, None, message)
    rest = message[len(first):].lstrip(":").strip()
    if image_id is not None and rest.startswith(f"(image id {image_id})"):
        rest = rest[len(f"(image id {image_id})"):].lstrip(":").strip()
    return Problem(split, image_id, first, rest or message)


def _check_split(
    dataset: SegmentationDataset, split: str, roles: list[str], ids: list[str], report: DatasetCheck,
    *, coco: bool, sample: int | None, progress: bool, evaluated: bool = True,
) -> SplitReport:
    """``evaluated``: the run evaluates against ground truth (``evaluation.ground_truth``), so the
    ``infer`` and ``val`` splits' class maps are checked too."""
    result = SplitReport(split, roles, len(ids), None)
    missing = set()
    for image_id in ids:
        path = dataset.image_path(image_id)  # type: ignore[attr-defined]
        if not os.path.isfile(path):
            missing.add(image_id)
            report.problems.append(Problem(split, image_id, str(path), "image file is missing"))
    chosen = [image_id for image_id in _evenly(ids, sample) if image_id not in missing]
    sizes: list[tuple[int, int]] = []
    classes: Counter[str] = Counter()
    labelled = any(role in LABELLED_ROLES for role in roles) and not coco
    ground_truth = evaluated and any(role in GROUND_TRUTH_ROLES for role in roles)
    result.checked = len(missing) + len(chosen)
    items = track(chosen, description=f"check {split}", logger=logger, every=2000) if progress else chosen
    for image_id in items:
        try:
            sizes.append(_check_image(dataset, image_id))
            labels = dataset.class_labels(image_id)
            if ground_truth:
                _check_ground_truth(dataset, image_id)
        except DatasetError as error:
            report.problems.append(_problem(split, image_id, error))
            continue
        if len(labels) == 0:
            result.without_labels += 1
            if labelled:
                problem = "no image-level label (the image holds no object)"
                report.problems.append(Problem(split, image_id, None, problem))
        classes.update(dataset.class_names[int(class_id)] for class_id in labels)
    result.class_counts = {name: classes[name] for name in dataset.class_names if classes[name]}
    result.sizes = SizeStatistics.of(sizes)
    return result


def check_dataset(config: RunConfig, *, sample: int | None = None, progress: bool = True) -> DatasetCheck:
    """Check the dataset of ``config`` (see the module docstring); never raises for a dataset problem."""
    from irn_core.steps.common import open_run_dataset

    report = DatasetCheck(config.dataset.kind, _location(config), sample=sample)
    if config.dataset.kind == "synthetic" and not (Path(config.dataset.root) / "synthetic.json").is_file():
        report.notes.append(f"{config.dataset.root}: the synthetic dataset is not generated yet (the run's first "
                            "rule writes it); nothing to check")
        return report
    try:
        dataset = open_run_dataset(config)
    except DatasetError as error:
        report.problems.append(_problem(None, None, error))
        return report
    official = _official_counts(config, dataset)
    coco = config.dataset.kind == "coco"
    for split, roles in _split_roles(config).items():
        try:
            ids = dataset.ids(split)
        except DatasetError as error:
            report.problems.append(_problem(split, None, error))
            continue
        if not ids:
            report.problems.append(Problem(split, None, None, f"split {split!r} lists no ids"))
            continue
        result = _check_split(dataset, split, roles, ids, report, coco=coco, sample=sample, progress=progress,
                              evaluated=config.evaluation.ground_truth)
        result.expected_ids = official.get(split)
        if result.expected_ids is not None and result.ids != result.expected_ids:
            report.problems.append(Problem(split, None, None, f"{result.ids} ids, the official release has "
                                           f"{result.expected_ids} (an incomplete copy, or another release?)"))
        report.splits.append(result)
    if coco:
        report.notes.append("COCO: images without annotations are counted, not flagged (train2017 has 1,021)")
    return report


# ---------------------------------------------------------------------------------------------- output


def _markdown(rows: list[dict[str, Any]]) -> str:
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) + "\n"


def disk_needed(config: RunConfig, report: DatasetCheck) -> dict[str, int]:
    """Uncompressed bytes of each HDF5 product a run of ``config`` on this dataset writes
    (:func:`irn_core.estimate.product_disk_bytes`), from the check's own figures: images per product from
    the shard plan a fresh run would cut, the median image size of the largest checked split, and classes
    per image from the checked images' labels; instances are taken as one per class present (the check
    reads no masks), a lower bound where objects of a class come several to an image."""
    from irn_core.estimate import estimate_plan, product_disk_bytes, product_images

    measured = [split for split in report.splits if split.sizes is not None and split.checked]
    if not measured:
        return {}
    largest = max(measured, key=lambda split: split.checked)
    assert largest.sizes is not None
    mean_classes = sum(largest.class_counts.values()) / largest.checked
    plan, _ = estimate_plan(config)
    return product_disk_bytes(config, product_images(plan, config),
                              (largest.sizes.height_median, largest.sizes.width_median), mean_classes, mean_classes)


def format_disk(disk: dict[str, int]) -> str:
    """The disk table of ``irn data check``."""
    from irn_core.estimate import size_text

    if not disk:
        return ""
    rows = [{"product": product, "uncompressed": size_text(size)} for product, size in disk.items()]
    rows.append({"product": "total", "uncompressed": size_text(sum(disk.values()))})
    return ("\nDisk of the run's products (uncompressed arrays; the store gzip-compresses them, `irn estimate "
            "--from-run` measures the ratio; instances: one per class present):\n\n" + _markdown(rows))


def format_problems(problems: list[Problem], *, limit: int = 50) -> str:
    rows = [{"split": problem.split or "", "image id": problem.image_id or "", "file": problem.path or "",
             "problem": problem.problem} for problem in problems[:limit]]
    more = f"... and {len(problems) - limit} more\n" if len(problems) > limit else ""
    return _markdown(rows) + more


def format_report(report: DatasetCheck) -> str:
    """The summary table, class counts and (if any) the problems, as Markdown text."""
    text = f"# dataset check: {report.kind} ({report.location})\n\n"
    text += "".join(f"- {note}\n" for note in report.notes)
    if report.splits:
        rows = []
        for split in report.splits:
            sizes = split.sizes
            heights = "" if sizes is None else f"{sizes.height_min}/{sizes.height_median:g}/{sizes.height_max}"
            widths = "" if sizes is None else f"{sizes.width_min}/{sizes.width_median:g}/{sizes.width_max}"
            rows.append({
                "split": split.split, "roles": "+".join(split.roles), "ids": str(split.ids),
                "expected": "" if split.expected_ids is None else str(split.expected_ids),
                "checked": str(split.checked), "no label": str(split.without_labels),
                "H min/med/max": heights, "W min/med/max": widths,
            })
        text += "\n" + _markdown(rows)
        names = list(dict.fromkeys(name for split in report.splits for name in split.class_counts))
        if names:
            counts = [{"class": name, **{split.split: str(split.class_counts.get(name, 0)) for split in report.splits}}
                      for name in names]
            text += "\nImages per class (of the checked images):\n\n" + _markdown(counts)
    if report.problems:
        text += f"\n**{len(report.problems)} problem(s)**\n\n" + format_problems(report.problems)
    else:
        text += "\nOK: no problems found.\n"
    return text


# ---------------------------------------------------------------------------------------------- run start


def _dataset_folders(config: RunConfig) -> list[Path]:
    """The dataset's source paths (with ``coco_splits``, not the unused ``root``) and its class table."""
    section = config.dataset
    folders = section.source_paths()
    if section.class_names_file is not None:
        folders.append(Path(section.class_names_file))
    return folders


def _listing(path: Path, depth: int = 3) -> Iterator[str]:
    """(name, size, mtime) of ``path`` and, for a folder, of everything down to ``depth`` levels."""
    try:
        status = path.stat()
    except OSError:
        yield f"{path} absent"
        return
    yield f"{path} {status.st_size} {status.st_mtime_ns}"
    if depth and path.is_dir():
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda entry: entry.name):
                yield from _listing(Path(entry.path), depth - 1)


def cache_key(config: RunConfig, sample: int | None) -> str:
    """A digest of the dataset config section, the sample size and the dataset folders' listing
    (names, sizes, modification times): any added, removed, replaced or touched file changes it."""
    digest = hashlib.sha256(config.dataset.model_dump_json().encode())
    digest.update(f"sample={sample} ground_truth={config.evaluation.ground_truth}".encode())
    for folder in _dataset_folders(config):
        for line in _listing(folder):
            digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def check_at_run_start(config: RunConfig, *, sample: int | None = RUN_START_SAMPLE) -> DatasetCheck:
    """The run-start check (``irn run`` and the workflow, at DAG-build time; relative paths from the working
    directory): reuse the cached report
    while the dataset is unchanged, else check (contents of ``sample`` ids per split) and cache. Raises
    :class:`DatasetError` with the table of the :meth:`~DatasetCheck.fatal_problems`; other problems
    are logged as warnings."""
    if config.dataset.kind == "synthetic" and not (Path(config.dataset.root) / "synthetic.json").is_file():
        return DatasetCheck(config.dataset.kind, _location(config), notes=["synthetic dataset not generated yet"])
    cache = config.run_dir / CACHE_FILE
    key = cache_key(config, sample)
    report = None
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            report = DatasetCheck.from_json(json.dumps(cached["report"]))
    except (OSError, ValueError, KeyError, TypeError):
        report = None
    if report is None:
        report = check_dataset(config, sample=sample, progress=False)
        write_text_atomic(cache, json.dumps({"key": key, "report": json.loads(report.to_json())}, indent=1) + "\n")
    fatal = report.fatal_problems()
    if fatal:
        raise DatasetError(
            f"the dataset of run '{config.name}' ({report.location}) fails the check at the start of the run:\n\n"
            + format_problems(fatal) + "\nFix the dataset folders in the config (irn data check --config ... "
            "shows the whole report)."
        )
    if report.problems:
        logger.warning("dataset check: %d image(s) with problems; the jobs reading them will fail (or skip them "
                       "under dataset.on_unreadable: skip):\n%s", len(report.problems),
                       format_problems(report.problems, limit=10))
    return report

