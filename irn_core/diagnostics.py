"""Training and product diagnostics: statistics of every stage's outputs and collapse warnings.

Pure functions on arrays/tensors and loss curves (no file I/O); the step entry points call them,
log the summaries and warnings, and record them beside their outputs.

* Loss curves: :func:`flat_loss_terms` finds terms that did not move over a run;
  :func:`displacement_progress` compares IRNet's foreground displacement loss with its value for a
  spatially constant field (``displacement_fg_constant``, recorded per step by IRNet's training):
  a ratio near 1 means the displacement field has learned nothing.
* Products: :func:`cam_statistics`, :func:`ir_label_statistics`, :func:`boundary_statistics`,
  :func:`displacement_statistics` return plain ``dict[str, float]`` for one image; :func:`mean_statistics`
  averages them over images.
* Warnings: ``*_warnings`` functions return human-readable messages (empty when healthy) that name
  the collapse and its likely causes; the entry points log them at WARNING level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from irn_core.cam.infer import train_range_base_scale
from irn_core.errors import InputError

__all__ = [
    "flat_loss_terms",
    "displacement_progress",
    "training_warnings",
    "loss_curve_rows",
    "cam_statistics",
    "ir_label_statistics",
    "boundary_statistics",
    "displacement_statistics",
    "mean_statistics",
    "cam_warnings",
    "ir_label_warnings",
    "boundary_warnings",
    "displacement_warnings",
]

IGNORE_LABEL = 255

#: Loss terms that are recorded but are not optimised (references for other terms).
REFERENCE_TERMS = ("displacement_fg_constant",)

DISPLACEMENT_CAUSES = (
    "likely causes: the background displacement term (an L1 penalty on every difference between "
    "background pixels) outweighs the foreground term and flattens the field before it forms, as on real "
    "photos with few, small confident foreground regions (set irnet.train.displacement_bg_weight to 0.1, the "
    "fixed preset's value; the paper preset keeps the reference's 1); too few foreground pairs per batch (see "
    "the IR-label coverage logged by the ir_labels stage); objects much smaller than the path-index radius at "
    "this crop size; a learning rate far too large or too small for the displacement branch"
)


def _as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _window(length: int, window_fraction: float, min_window: int) -> int:
    return max(min_window, int(math.ceil(length * window_fraction)))


def flat_loss_terms(
    loss_terms: Mapping[str, Sequence[float]],
    *,
    min_steps: int = 40,
    window_fraction: float = 0.1,
    min_window: int = 5,
    relative_tolerance: float = 0.01,
    skip: Sequence[str] = ("total", *REFERENCE_TERMS),
) -> list[str]:
    """Names of loss terms that stayed flat over a run of at least ``min_steps`` steps.

    A term is flat when the mean of its first window (``window_fraction`` of the steps, at least
    ``min_window``) and the mean of its last window differ by less than ``relative_tolerance`` of the
    first, i.e. the optimiser never moved it. Runs shorter than ``min_steps`` report nothing.
    """
    flat = []
    for name, values in loss_terms.items():
        if name in skip or len(values) < min_steps:
            continue
        series = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(series)):
            continue
        window = _window(len(series), window_fraction, min_window)
        first, last = series[:window].mean(), series[-window:].mean()
        if abs(last - first) <= relative_tolerance * max(abs(first), 1e-12):
            flat.append(name)
    return flat


def displacement_progress(
    loss_terms: Mapping[str, Sequence[float]], *, window_fraction: float = 0.1, min_window: int = 5
) -> float | None:
    """``displacement_fg`` / ``displacement_fg_constant`` over the last window of steps.

    ``displacement_fg_constant`` is the foreground displacement loss a spatially constant field would
    have on the same batch (mean of (|dy| + |dx|) / 2 over the foreground pairs). 1.0: the field learned
    nothing; a healthy run on the synthetic demo ends near 0.7. None when the terms were not recorded.
    """
    learned = loss_terms.get("displacement_fg")
    constant = loss_terms.get("displacement_fg_constant")
    if not learned or not constant or len(learned) != len(constant):
        return None
    window = _window(len(learned), window_fraction, min_window)
    learned_mean = float(np.mean(learned[-window:]))
    constant_mean = float(np.mean(constant[-window:]))
    if constant_mean <= 0:
        return None
    return learned_mean / constant_mean


def training_warnings(
    loss_terms: Mapping[str, Sequence[float]],
    *,
    name: str,
    min_steps: int = 40,
    constant_ratio: float = 0.97,
    skip: Sequence[str] = ("total", *REFERENCE_TERMS),
) -> list[str]:
    """Collapse warnings of a training run from its per-term loss curves (empty when healthy).

    ``skip``: terms not tested for flatness (by default the total, which mixes the terms, and the
    reference terms); pass ``()`` for a model whose only term is the total (the CAM network).
    """
    warnings = []
    steps = len(next(iter(loss_terms.values()), []))
    ratio = displacement_progress(loss_terms)
    collapsed = ratio is not None and steps >= min_steps and ratio >= constant_ratio
    if collapsed:
        warnings.append(
            f"{name}: the displacement field collapsed to a constant: displacement_fg is {ratio:.3f} x its "
            f"constant-field value at the end of training; {DISPLACEMENT_CAUSES}"
        )
    for term in flat_loss_terms(loss_terms, min_steps=min_steps, skip=skip):
        if collapsed and term == "displacement_fg":
            continue
        series = loss_terms[term]
        window = max(5, len(series) // 10)
        message = (
            f"{name}: loss term {term!r} stayed flat over {len(series)} steps "
            f"({float(np.mean(series[:window])):.4f} -> {float(np.mean(series[-window:])):.4f})"
        )
        if term.startswith("displacement"):
            message += f"; {DISPLACEMENT_CAUSES}"
        elif term in ("pos_fg", "pos_bg", "neg"):
            message += (
                "; the boundary branch is not learning: likely causes: no negative (cross-region) pairs in "
                "the IR labels, a learning rate far too small or too large"
            )
        else:
            message += "; likely causes: learning rate too small or too large, or labels without signal"
        warnings.append(message)
    return warnings


def loss_curve_rows(loss_terms: Mapping[str, Sequence[float]], learning_rates: Sequence[float] = ()) -> list[dict]:
    """One row per step (``step`` 1-based, ``learning_rate`` when given, every term): for a CSV file."""
    names = list(loss_terms)
    steps = max((len(values) for values in loss_terms.values()), default=0)
    rows = []
    for step in range(steps):
        row: dict[str, float | int] = {"step": step + 1}
        if step < len(learning_rates):
            row["learning_rate"] = float(learning_rates[step])
        for name in names:
            values = loss_terms[name]
            row[name] = float(values[step]) if step < len(values) else float("nan")
        rows.append(row)
    return rows


def cam_statistics(
    cam: np.ndarray | torch.Tensor, *, eval_threshold: float = 0.15, fg_threshold: float = 0.30
) -> dict[str, float]:
    """Statistics of one image's normalised CAMs ``cam``: (K, H, W) float in [0, 1].

    ``coverage_eval``: fraction of pixels whose largest CAM exceeds ``eval_threshold`` (foreground when
    evaluating CAMs); ``coverage_fg``: the same at ``fg_threshold`` (the IR labels' foreground);
    ``mean``: mean of the largest CAM; ``peak``: its maximum. An image without classes gives zeros.
    """
    values = _as_numpy(cam).astype(np.float32)
    if values.ndim != 3:
        raise InputError(f"cam_statistics: cam must be (K, H, W), got shape {values.shape}")
    if values.shape[0] == 0:
        return {"coverage_eval": 0.0, "coverage_fg": 0.0, "mean": 0.0, "peak": 0.0}
    top = values.max(axis=0)
    return {
        "coverage_eval": float((top > eval_threshold).mean()),
        "coverage_fg": float((top > fg_threshold).mean()),
        "mean": float(top.mean()),
        "peak": float(top.max()),
    }


def ir_label_statistics(
    labels: np.ndarray | torch.Tensor, ground_truth: np.ndarray | torch.Tensor | None = None
) -> dict[str, float]:
    """Coverage and (with ground truth) accuracy of one confident-region label map.

    ``labels``: (H, W) uint8, 0 background, k+1 class k, 255 unknown. ``ground_truth``: (H, W) uint8
    semantic labels (255 void, ignored). Returns ``foreground``, ``background``, ``unknown``: fractions
    of the image; with ground truth also ``accuracy`` (confident pixels whose label equals the ground
    truth, among confident pixels with valid ground truth), ``foreground_accuracy`` and
    ``background_accuracy`` (the same among confident foreground / background pixels; NaN when none),
    and ``foreground_recall`` (ground-truth foreground pixels labelled with their class).
    """
    label_map = _as_numpy(labels)
    if label_map.ndim != 2:
        raise InputError(f"ir_label_statistics: labels must be (H, W), got shape {label_map.shape}")
    total = label_map.size
    foreground = (label_map != 0) & (label_map != IGNORE_LABEL)
    background = label_map == 0
    statistics = {
        "foreground": float(foreground.sum() / total),
        "background": float(background.sum() / total),
        "unknown": float((label_map == IGNORE_LABEL).sum() / total),
    }
    if ground_truth is None:
        return statistics
    truth = _as_numpy(ground_truth)
    if truth.shape != label_map.shape:
        raise InputError(f"ir_label_statistics: ground truth {truth.shape} does not match labels {label_map.shape}")
    valid = truth != IGNORE_LABEL
    correct = (label_map == truth) & valid

    def ratio(numerator: np.ndarray, denominator: np.ndarray) -> float:
        count = int(denominator.sum())
        return float(numerator.sum() / count) if count else float("nan")

    confident = (foreground | background) & valid
    statistics["accuracy"] = ratio(correct & confident, confident)
    statistics["foreground_accuracy"] = ratio(correct & foreground & valid, foreground & valid)
    statistics["background_accuracy"] = ratio(correct & background & valid, background & valid)
    truth_foreground = valid & (truth != 0)
    statistics["foreground_recall"] = ratio(correct & truth_foreground, truth_foreground)
    return statistics


def boundary_statistics(boundary: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Statistics of one boundary probability map ``boundary``: (h, w) in [0, 1].

    ``mean``, ``above_half`` (fraction > 0.5), ``p01`` and ``p99`` (1st / 99th percentiles).
    """
    values = _as_numpy(boundary).astype(np.float64).reshape(-1)
    if values.size == 0:
        raise InputError("boundary_statistics: empty boundary map")
    return {
        "mean": float(values.mean()),
        "above_half": float((values > 0.5).mean()),
        "p01": float(np.percentile(values, 1)),
        "p99": float(np.percentile(values, 99)),
    }


def displacement_statistics(displacement: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Magnitude statistics of a displacement field ``displacement``: (2, h, w) or (B, 2, h, w).

    Returns ``mean_magnitude``, ``median_magnitude``, ``p99_magnitude`` and ``max_magnitude`` of the
    per-pixel Euclidean norm (stride-4 pixels), and ``centred_p99_magnitude``: the 99th percentile of
    the norm after subtracting the field's mean over all pixels (0 for a constant field, whatever the
    constant, which is what IRNet's mean shift removes).
    """
    values = _as_numpy(displacement).astype(np.float64)
    if values.ndim == 3:
        values = values[None]
    if values.ndim != 4 or values.shape[1] != 2 or values[0, 0].size == 0:
        raise InputError(f"displacement_statistics: displacement must be (2, h, w) or (B, 2, h, w), got {values.shape}")
    magnitude = np.sqrt((values**2).sum(axis=1)).reshape(-1)
    centred = values - values.mean(axis=(0, 2, 3), keepdims=True)
    centred_magnitude = np.sqrt((centred**2).sum(axis=1)).reshape(-1)
    return {
        "mean_magnitude": float(magnitude.mean()),
        "median_magnitude": float(np.median(magnitude)),
        "p99_magnitude": float(np.percentile(magnitude, 99)),
        "max_magnitude": float(magnitude.max()),
        "centred_p99_magnitude": float(np.percentile(centred_magnitude, 99)),
    }


def mean_statistics(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Average each statistic over images, skipping NaN; adds ``images``. Keys are the union."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    images = 0
    for statistics in per_image:
        images += 1
        for key, value in statistics.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            sums[key] = sums.get(key, 0.0) + float(value)
            counts[key] = counts.get(key, 0) + 1
    means = {key: sums[key] / counts[key] for key in sums}
    means["images"] = float(images)
    return means


def inference_scale_statistics(
    size: tuple[int, int], train_long_side: tuple[int, int], base_scale: float
) -> dict[str, float]:
    """Whether an image of ``size`` (H, W) lies outside the CAM training's long-side range (its
    :func:`~irn_core.cam.infer.train_range_base_scale` is not 1), and whether its CAMs were inferred
    rescaled (``base_scale`` != 1): 1.0 or 0.0 each, to be averaged over images."""
    return {
        "outside_train_range": float(train_range_base_scale(*size, train_long_side) != 1.0),
        "rescaled_for_inference": float(base_scale != 1.0),
    }


def cam_warnings(statistics: Mapping[str, float], *, name: str = "make_cam") -> list[str]:
    """Warnings on averaged :func:`cam_statistics`: CAMs covering (almost) nothing or everything; most
    images inferred at another size than the network was trained on (:func:`inference_scale_statistics`)."""
    warnings = []
    outside = statistics.get("outside_train_range")
    if outside is not None and outside > 0.5 and statistics.get("rescaled_for_inference", 0.0) == 0.0:
        warnings.append(
            f"{name}: {100 * outside:.0f}% of the images have a long side outside cam.train.resize_long and their "
            "CAMs are inferred at scales of the image as stored, so the network sees objects at another size than "
            "in training (issue 10: at twice the size the CAMs cover less); likely fix: cam.infer.base_size: "
            "train_range, or a cam.train.resize_long that matches the images"
        )
    coverage = statistics.get("coverage_eval")
    if coverage is not None and coverage < 0.01:
        warnings.append(
            f"{name}: the CAMs cover {100 * coverage:.2f}% of the pixels above the evaluation threshold: "
            "the CAM network learned almost no localisation; likely causes: too few training steps "
            "(cam.train.steps / min_steps for small datasets), a learning rate far off, or labels without signal"
        )
    if coverage is not None and coverage > 0.9:
        warnings.append(
            f"{name}: the CAMs cover {100 * coverage:.1f}% of the pixels: they do not localise; likely causes: "
            "an untrained or overfitted classifier, every image holding the same class"
        )
    return warnings


def ir_label_warnings(statistics: Mapping[str, float], *, name: str = "ir_labels") -> list[str]:
    """Warnings on averaged :func:`ir_label_statistics`: no foreground, or labels mostly wrong."""
    warnings = []
    foreground = statistics.get("foreground")
    if foreground is not None and foreground < 0.01:
        warnings.append(
            f"{name}: confident foreground covers {100 * foreground:.2f}% of the pixels: IRNet gets almost no "
            "foreground pairs; likely causes: weak CAMs, ir_labels.fg_threshold too high"
        )
    accuracy = statistics.get("accuracy")
    if accuracy is not None and accuracy < 0.6:
        warnings.append(
            f"{name}: only {100 * accuracy:.1f}% of the confident pixels agree with the ground truth: IRNet will "
            "learn wrong relations; likely causes: weak CAMs (see the CAM mIoU), thresholds"
        )
    return warnings


def boundary_warnings(statistics: Mapping[str, float], *, name: str = "irnet_infer") -> list[str]:
    """Warnings on averaged :func:`boundary_statistics`: a boundary map all 0 or all 1."""
    warnings = []
    if statistics.get("p99", 1.0) < 0.05:
        warnings.append(
            f"{name}: the boundary maps are all 0 (99th percentile {statistics['p99']:.3f}): the random walk "
            "will spread the CAMs everywhere; likely causes: no negative pairs in the IR labels, a collapsed "
            "boundary branch (see pos_bg / pos_fg / neg in the training log)"
        )
    if statistics.get("p01", 0.0) > 0.95:
        warnings.append(
            f"{name}: the boundary maps are all 1 (1st percentile {statistics['p01']:.3f}): the random walk "
            "cannot propagate; likely causes: no positive pairs in the IR labels, a diverged boundary branch"
        )
    return warnings


def displacement_warnings(
    statistics: Mapping[str, float], *, name: str = "train_irnet", min_magnitude: float = 0.1
) -> list[str]:
    """Warning on :func:`displacement_statistics`: a near-zero (or constant) displacement field."""
    if statistics.get("centred_p99_magnitude", math.inf) < min_magnitude:
        return [
            f"{name}: the displacement field is near zero or constant (99th percentile of |D - mean D| "
            f"{statistics['centred_p99_magnitude']:.3f} stride-4 px, below {min_magnitude}): every pixel will be "
            f"its own centroid and instances will not be separated; "
            f"{DISPLACEMENT_CAUSES}"
        ]
    return []
