"""IRNet's affinity and displacement losses (reference §6.7).

Per pair (source window × directions of the radius-10 path index):

* ``pos = −log(a + 1e-5)``, ``neg = −log(1 + 1e-5 − a)`` with ``a`` the affinity from
  ``sigmoid(boundary_logits)``;
* ``pair_disp = D(src) − D(dst)`` (2 components), ``dp_fg = |pair_disp − (dy, dx)|``,
  ``dp_bg = |pair_disp|``.

Reductions are batch-level sums, exactly as the reference's ``train_irn``::

    L_bg+ = Σ bg_pos·pos / (Σ bg_pos + 1e-5)        L_fg+ = Σ fg_pos·pos / (Σ fg_pos + 1e-5)
    L_pos = L_bg+/2 + L_fg+/2                       L_neg = Σ neg·negloss / (Σ neg + 1e-5)
    L_Dfg = Σ fg_pos·dp_fg / (2 Σ fg_pos + 1e-5)    L_Dbg = Σ bg_pos·dp_bg / (2 Σ bg_pos + 1e-5)
    total = (L_pos + L_neg)/2 + (L_Dfg + L_Dbg)/2
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from irn_core.errors import InputError
from irn_core.relations.affinity import boundary_to_affinity
from irn_core.relations.pair_labels import pair_labels
from irn_core.relations.path_index import PathIndex

__all__ = ["affinity_displacement_loss"]

EPSILON = 1e-5


def affinity_displacement_loss(
    boundary_logits: torch.Tensor,
    displacement: torch.Tensor,
    label_map: torch.Tensor,
    index: PathIndex,
    *,
    ignore_index: int = 255,
    count_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    constant_reference: bool = False,
) -> dict[str, torch.Tensor]:
    """IRNet's training losses for one batch.

    Args:
        boundary_logits: ``(B, 1, h, w)`` class-boundary logits (stride 4).
        displacement: ``(B, 2, h, w)`` displacement in stride-4 pixels, channel 0 = y.
        label_map: ``(B, h, w)`` uint8 confident-region labels at the same stride
            (0 background, k+1 class k, ``ignore_index`` unknown), on the same device.
        index: the path index (the reference trains with radius 10).
        ignore_index: label of unknown pixels.
        count_reducer: applied to the detached ``(3,)`` pair counts ``[Σ bg_pos, Σ fg_pos, Σ neg]``
            before they divide the sums, e.g. a sum over data-parallel processes so that every
            process normalises by the global batch's counts, as the reference (which gathers the
            whole batch on one GPU) does. The numerators stay local.
        constant_reference: also return ``displacement_fg_constant`` (detached): the value
            ``displacement_fg`` takes for any spatially constant field on this batch,
            Σ fg_pos·(|dy| + |dx|) / (2 Σ fg_pos + 1e-5) — a diagnostic (a ratio near 1 means the
            field has learned nothing); it is not part of ``total``.

    Returns:
        Scalar tensors ``pos_bg`` (L_bg+), ``pos_fg`` (L_fg+), ``neg`` (L_neg),
        ``displacement_fg`` (L_Dfg), ``displacement_bg`` (L_Dbg) and ``total``.
    """
    if boundary_logits.dim() != 4 or boundary_logits.shape[1] != 1:
        raise InputError(
            f"affinity_displacement_loss: boundary_logits must be (B, 1, h, w), got {tuple(boundary_logits.shape)}"
        )
    batch, _, height, width = boundary_logits.shape
    if tuple(displacement.shape) != (batch, 2, height, width):
        raise InputError(
            f"affinity_displacement_loss: displacement must be ({batch}, 2, {height}, {width}) like the "
            f"boundary logits, got {tuple(displacement.shape)}"
        )
    if tuple(label_map.shape) != (batch, height, width):
        raise InputError(
            f"affinity_displacement_loss: label_map must be ({batch}, {height}, {width}), "
            f"got {tuple(label_map.shape)}"
        )
    if not isinstance(label_map, torch.Tensor) or label_map.device != boundary_logits.device:
        raise InputError(
            "affinity_displacement_loss: label_map must be a tensor on the logits' device "
            f"{boundary_logits.device} (build pair labels on the training device)"
        )
    labels = pair_labels(label_map, index, ignore_index=ignore_index)
    affinity = boundary_to_affinity(torch.sigmoid(boundary_logits[:, 0]), index, region="source_window")

    bg_pos = labels.bg_pos.to(affinity.dtype)
    fg_pos = labels.fg_pos.to(affinity.dtype)
    neg = labels.neg.to(affinity.dtype)
    # exact integer counts (a float32 sum of up to 32 · 152 · 13090 ones would round)
    counts = torch.stack([mask.sum() for mask in labels]).to(affinity.dtype)
    if count_reducer is not None:
        counts = count_reducer(counts)
        if tuple(counts.shape) != (3,):
            raise InputError(
                f"affinity_displacement_loss: count_reducer must return shape (3,), got {tuple(counts.shape)}"
            )
    bg_count, fg_count, neg_count = counts.unbind()

    positive_loss = -torch.log(affinity + EPSILON)
    negative_loss = -torch.log(1.0 + EPSILON - affinity)
    pos_bg = (bg_pos * positive_loss).sum() / (bg_count + EPSILON)
    pos_fg = (fg_pos * positive_loss).sum() / (fg_count + EPSILON)
    neg_term = (neg * negative_loss).sum() / (neg_count + EPSILON)

    fg_sum, bg_sum = _displacement_sums(displacement, index, fg_pos, bg_pos)
    displacement_fg = fg_sum / (2 * fg_count + EPSILON)
    displacement_bg = bg_sum / (2 * bg_count + EPSILON)

    total = (pos_bg / 2 + pos_fg / 2 + neg_term) / 2 + (displacement_fg + displacement_bg) / 2
    losses = {
        "pos_bg": pos_bg,
        "pos_fg": pos_fg,
        "neg": neg_term,
        "displacement_fg": displacement_fg,
        "displacement_bg": displacement_bg,
        "total": total,
    }
    if constant_reference:
        with torch.no_grad():
            fg_per_direction = fg_pos.sum(dim=(0, 2, 3))
            target_length = torch.from_numpy(np.abs(index.directions).sum(axis=1)).to(fg_per_direction)
            losses["displacement_fg_constant"] = (fg_per_direction * target_length).sum() / (2 * fg_count + EPSILON)
    return losses


def _displacement_sums(
    displacement: torch.Tensor, index: PathIndex, fg_pos: torch.Tensor, bg_pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ fg_pos·|D(s) − D(t) − δ|, Σ bg_pos·|D(s) − D(t)|)`` over every pair of the source window.

    ``displacement``: ``(B, 2, h, w)``; ``fg_pos``, ``bg_pos``: ``(B, D, hs, ws)`` float masks (no gradient);
    ``δ`` = ``(dy, dx)`` of the pair's direction. One direction at a time, on views of the map: each term's
    tensors are ``(B, 2, hs, ws)`` instead of the ``(B, 2, D, hs, ws)`` stack of every destination, which
    on a CPU keeps them in cache. The gradient is written by hand (:class:`_DisplacementSums`): autograd
    would give every direction's slice a zero-filled gradient of the whole map and add them up, which was
    most of the two terms' time.
    """
    # a channels-last map (the network's output) would make every window a strided view
    return _DisplacementSums.apply(displacement.contiguous(), fg_pos, bg_pos, index)


def _direction_windows(
    displacement: torch.Tensor, index: PathIndex
) -> tuple[tuple[slice, slice], list[tuple[int, int, slice, slice]]]:
    """``(rows, cols)`` of the source window of ``displacement (B, 2, h, w)`` and, per direction,
    ``(dy, dx, rows, cols)`` of its destination window."""
    rows, cols = index.source_window(displacement.shape[2], displacement.shape[3])
    window_height, window_width = rows.stop - rows.start, cols.stop - cols.start
    windows = []
    for dy, dx in index.directions.tolist():
        top, left = rows.start + dy, cols.start + dx
        windows.append((dy, dx, slice(top, top + window_height), slice(left, left + window_width)))
    return (rows, cols), windows


class _DisplacementSums(torch.autograd.Function):
    """The displacement terms' sums with a hand-written gradient.

    ``∂/∂D(s) = Σ_d m_d·sgn(D(s) − D(t_d) − δ_d)`` and the negative of each term at ``t_d``, with ``sgn(0) = 0``
    as ``torch.abs``'s gradient; the fg and bg terms add. The gradient map is filled once and every
    direction's ``(B, 2, hs, ws)`` term is added into its destination window in place.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        displacement: torch.Tensor,
        fg_pos: torch.Tensor,
        bg_pos: torch.Tensor,
        index: PathIndex,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        (source_rows, source_cols), windows = _direction_windows(displacement, index)
        source = displacement[:, :, source_rows, source_cols]
        fg_sum = displacement.new_zeros(())
        bg_sum = displacement.new_zeros(())
        for direction, (dy, dx, rows, cols) in enumerate(windows):
            difference = source - displacement[:, :, rows, cols]
            target = difference.new_tensor([dy, dx]).view(1, 2, 1, 1)
            fg_sum += (torch.abs(difference - target) * fg_pos[:, direction : direction + 1]).sum()
            bg_sum += (torch.abs(difference) * bg_pos[:, direction : direction + 1]).sum()
        ctx.save_for_backward(displacement, fg_pos, bg_pos)
        ctx.index = index
        return fg_sum, bg_sum

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_fg: torch.Tensor, grad_bg: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None]:
        displacement, fg_pos, bg_pos = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        (source_rows, source_cols), windows = _direction_windows(displacement, ctx.index)
        source = displacement[:, :, source_rows, source_cols]
        gradient = torch.zeros_like(displacement, memory_format=torch.contiguous_format)
        source_gradient = torch.zeros_like(source, memory_format=torch.contiguous_format)
        for direction, (dy, dx, rows, cols) in enumerate(windows):
            difference = source - displacement[:, :, rows, cols]
            target = difference.new_tensor([dy, dx]).view(1, 2, 1, 1)
            term = torch.sign(difference - target) * (fg_pos[:, direction : direction + 1] * grad_fg)
            term += torch.sign(difference) * (bg_pos[:, direction : direction + 1] * grad_bg)
            source_gradient += term
            gradient[:, :, rows, cols] -= term
        gradient[:, :, source_rows, source_cols] += source_gradient
        return gradient, None, None, None
