"""Per-channel thresholds chosen from the data (Otsu's rule), shared by the IR labels and the pseudo labels.

``irn_core.ir_labels`` uses them for the confident foreground (``ir_labels.fg_threshold_rule: otsu``),
``irn_core.pseudo_labels`` for the background threshold of the walked scores (``random_walk.threshold_rule:
otsu``); both are named deviations from the reference (README, deviations table).
"""

from __future__ import annotations

import torch

__all__ = ["OTSU_BINS", "OTSU_LIMITS", "otsu_thresholds"]

OTSU_BINS = 100
"""Histogram bins on [0, 1] of the per-channel Otsu threshold."""
OTSU_LIMITS: tuple[float, float] = (0.05, 0.60)
"""The default clamp of the Otsu thresholds (that of the CAM threshold curve)."""


def otsu_thresholds(
    scores: torch.Tensor,
    valid: torch.Tensor | None = None,
    bins: int = OTSU_BINS,
    limits: tuple[float, float] = OTSU_LIMITS,
) -> torch.Tensor:
    """Otsu's threshold of each channel of ``scores (C, H, W)``, values in [0, 1] (clamped): ``(C,)`` float32
    on the scores' device.

    Only the pixels where ``valid (H, W)`` (default: all) count. The histogram has ``bins`` equal bins on
    [0, 1], each value at its bin's centre; the threshold is the upper edge of the last bin of the lower
    class, for the cut that maximises the between-class variance ``w0 · w1 · (m0 − m1)²`` (the first such
    cut), clamped to ``limits``. A constant channel has no between-class variance and gets the lower limit.
    """
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64, device=scores.device)
    centres = (edges[:-1] + edges[1:]) / 2
    counts = torch.stack([
        torch.histc((channel if valid is None else channel[valid]).detach().float().clamp(0, 1), bins, 0.0, 1.0)
        for channel in scores
    ]).double()  # (C, bins)
    weight_below = counts.cumsum(1)
    weight_above = weight_below[:, -1:] - weight_below
    mass_below = (counts * centres).cumsum(1)
    mean_below = mass_below / weight_below.clamp_min(1)
    mean_above = (mass_below[:, -1:] - mass_below) / weight_above.clamp_min(1)
    between = weight_below * weight_above * (mean_below - mean_above) ** 2
    low, high = limits
    return edges[between.argmax(1) + 1].float().clamp(low, high)
