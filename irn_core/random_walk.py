"""Random walk of scores over boundary-aware affinities (reference §7.2, ``propagate_to_edge``).

The reference builds the dense ``N × N`` matrix (N = h·w pixels) of affinities inside a radius-5
disk, ``A`` with self-loops of 1, ``S = A ** β`` (elementwise), the column-normalised
``T = S / colsum(S)``, squares it ``exp_times`` times and returns
``(scores · (1 − boundary)) @ T^(2^exp_times)``: ~26 TFLOP and ~2.7 GB for a 500×375 image.

Only pairs with both ends inside the image survive the reference's crop, and the path of such a
pair lies inside the image, so the operator is (with ``d_j = Σ_i S_ij`` over in-image ``i``)::

    y_j = (1 / d_j) Σ_{i ∈ N(j) ∪ {j}} x_i S_ij

— a 69-tap (radius 5) spatially varying stencil. :func:`propagate` applies it ``2^exp_times``
times as a sparse CSR matrix–dense matrix product over all channels at once (memory
O(channels · pixels · neighbours)), or, on devices without sparse CSR support, as a pure-torch
stencil of shifted slices. Mathematically identical to the reference; only the rounding order
differs, and by default the walk runs in float64 so that its error against an exact evaluation
is far below the float32 reference's own. :func:`propagate_dense` is the literal reference
formulation, kept as a test oracle for small maps.

Threads: the walk is 256 short sparse products, each ending in an OpenMP barrier when torch uses
several intra-op threads. On an idle CPU two threads are ~1.8× faster than one; on cores busy
with other processes a barrier waits for a descheduled thread and the walk was measured 20–30×
slower than with one thread. Processes that share cores should run with
``torch.set_num_threads(1)`` (the per-shard steps take the thread count from the config).
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from irn_core.errors import InputError
from irn_core.relations import _inputs
from irn_core.relations.affinity import boundary_to_affinity
from irn_core.relations.path_index import PathIndex, path_index

__all__ = ["propagate", "propagate_dense", "transition_matrix", "neighbour_weights"]

logger = logging.getLogger(__name__)

Method = Literal["auto", "sparse", "stencil"]
_SPARSE_DEVICE_TYPES = ("cpu", "cuda")


def _check_parameters(beta: float, exp_times: int, radius: float, context: str) -> None:
    if not np.isfinite(beta) or beta <= 0:
        raise InputError(f"{context}: beta must be a finite number > 0, got {beta}")
    if isinstance(exp_times, bool) or not isinstance(exp_times, (int, np.integer)) or not 0 <= exp_times <= 24:
        raise InputError(f"{context}: exp_times must be an integer in 0..24, got {exp_times!r}")
    if not np.isfinite(radius) or radius <= 1:
        raise InputError(f"{context}: radius must be a finite number > 1, got {radius}")


def _prepare(
    scores: object, boundary: object, context: str
) -> tuple[torch.Tensor, torch.Tensor, bool, torch.dtype]:
    """Checked (C, h, w) scores and (h, w) boundary on the scores' device; numpy flag; output dtype."""
    return_numpy = isinstance(scores, np.ndarray)
    scores_tensor = _inputs.as_float_tensor(scores, "scores", context)
    if scores_tensor.dim() != 3:
        raise InputError(f"{context}: scores must be (C, h, w), got shape {tuple(scores_tensor.shape)}")
    height, width = scores_tensor.shape[1:]
    if height < 1 or width < 1:
        raise InputError(f"{context}: scores have an empty map {height}x{width}")
    boundary_tensor = _inputs.as_float_tensor(boundary, "boundary", context, device=scores_tensor.device)
    boundary_tensor = _inputs.boundary_map(boundary_tensor, height, width, context)
    _inputs.check_probability(boundary_tensor, "boundary", context)
    return scores_tensor, boundary_tensor, return_numpy, scores_tensor.dtype


def _finish(result: torch.Tensor, dtype: torch.dtype, return_numpy: bool) -> torch.Tensor | np.ndarray:
    result = result.to(dtype)
    return result.numpy() if return_numpy else result


def _neighbour_offsets(index: PathIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All stencil offsets, sorted (y, x)-lexicographically (so CSR columns come out sorted).

    Returns ``offsets (O, 2)``, ``direction (O,)`` (the forward direction index, −1 for the
    self-loop) and ``reverse (O,)`` (True where the offset is −direction).
    """
    entries = [(0, 0, -1, False)]
    for number, (dy, dx) in enumerate(index.directions):
        entries.append((int(dy), int(dx), number, False))
        entries.append((-int(dy), -int(dx), number, True))
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    offsets = np.asarray([(entry[0], entry[1]) for entry in entries], dtype=np.int64)
    direction = np.asarray([entry[2] for entry in entries], dtype=np.int64)
    reverse = np.asarray([entry[3] for entry in entries], dtype=bool)
    return offsets, direction, reverse


def _shift(values: torch.Tensor, dy: int, dx: int, margin: int) -> torch.Tensor:
    """``out[..., y, x] = values[..., y − dy, x − dx]``, zero where that falls off the map."""
    height, width = values.shape[-2:]
    padded = F.pad(values, (margin, margin, margin, margin))
    return padded[..., margin - dy : margin - dy + height, margin - dx : margin - dx + width]


def neighbour_weights(
    boundary: torch.Tensor, *, beta: float = 10.0, radius: float = 5
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Row-normalised stencil of the walk.

    Args:
        boundary: ``(h, w)`` boundary probabilities; the dtype and device of the computation.

    Returns:
        ``weights (h, w, O)``: ``weights[y, x, o]`` is the transition weight ``S_ij / d_j`` from
        neighbour ``i = (y, x) + offsets[o]`` into ``j = (y, x)`` (0 where ``i`` is off the map),
        ``valid (h, w, O)`` bool (``i`` on the map), and ``offsets (O, 2)`` sorted
        (y, x)-lexicographically. The weights of every ``(y, x)`` sum to 1.
    """
    index = path_index(radius)
    height, width = boundary.shape
    margin = index.radius_floor
    device = boundary.device
    offsets, direction, reverse = _neighbour_offsets(index)
    affinity = boundary_to_affinity(boundary.unsqueeze(0), index)[0]  # (D, h, w), 0 off the map
    forward = torch.pow(affinity, beta)  # S between source (y, x) and (y, x) + direction
    # zero-padded so that the weight of the reverse pair, S at source (y, x) − direction, is a slice
    padded = F.pad(forward, (margin, margin, margin, margin))
    planes = []
    for (dy, dx), number, is_reverse in zip(offsets.tolist(), direction.tolist(), reverse.tolist()):
        if number < 0:
            planes.append(torch.ones_like(boundary))
        elif not is_reverse:
            planes.append(forward[number])
        else:  # offset (dy, dx) = −direction: the pair (y + dy, x + dx) → (y, x)
            planes.append(padded[number, margin + dy : margin + dy + height, margin + dx : margin + dx + width])
    weights = torch.stack(planes, dim=-1)  # (h, w, O)
    offsets_tensor = torch.as_tensor(offsets, device=device)
    rows = torch.arange(height, device=device).unsqueeze(1) + offsets_tensor[:, 0].unsqueeze(0)  # (h, O)
    cols = torch.arange(width, device=device).unsqueeze(1) + offsets_tensor[:, 1].unsqueeze(0)  # (w, O)
    valid = ((rows >= 0) & (rows < height)).unsqueeze(1) & ((cols >= 0) & (cols < width)).unsqueeze(0)
    weights = weights * valid
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, valid, offsets


def transition_matrix(
    boundary: torch.Tensor, *, beta: float = 10.0, radius: float = 5
) -> torch.Tensor:
    """Sparse CSR ``(N, N)`` matrix ``R = D⁻¹ S`` (row-stochastic) on the boundary's device and dtype.

    ``R @ x`` for a column ``x`` of N pixel values is one step of the walk; the reference's
    ``x_row @ T`` equals ``(R @ x_row.T).T`` since ``S`` is symmetric. Row ``j`` holds the
    in-image neighbours of pixel ``j`` (itself included) in increasing column order.

    Args:
        boundary: ``(h, w)`` boundary probabilities (float32 or float64).
    """
    height, width = boundary.shape
    count = height * width
    device = boundary.device
    weights, valid, offsets = neighbour_weights(boundary, beta=beta, radius=radius)
    neighbours = len(offsets)
    index_dtype = torch.int32 if count * neighbours < 2**31 - 1 else torch.int64
    weights = weights.reshape(count, neighbours)
    valid = valid.reshape(count, neighbours)
    linear = torch.as_tensor(offsets[:, 0] * width + offsets[:, 1], device=device, dtype=index_dtype)
    columns = torch.arange(count, device=device, dtype=index_dtype).unsqueeze(1) + linear.unsqueeze(0)
    crow = torch.zeros(count + 1, dtype=index_dtype, device=device)
    torch.cumsum(valid.sum(dim=1, dtype=index_dtype), dim=0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(
            crow, columns[valid], weights[valid], (count, count), check_invariants=False
        )


def _walk_sparse(seeds: torch.Tensor, boundary: torch.Tensor, beta: float, radius: float, steps: int) -> torch.Tensor:
    channels, height, width = seeds.shape
    matrix = transition_matrix(boundary, beta=beta, radius=radius)
    state = seeds.reshape(channels, height * width).t().contiguous()  # (N, C)
    for _ in range(steps):
        state = torch.sparse.mm(matrix, state)
    return state.t().reshape(channels, height, width)


def _walk_stencil(
    seeds: torch.Tensor, boundary: torch.Tensor, beta: float, radius: float, steps: int
) -> torch.Tensor:
    weights, _, offsets = neighbour_weights(boundary, beta=beta, radius=radius)
    height, width = boundary.shape
    margin = path_index(radius).radius_floor
    state = seeds
    for _ in range(steps):
        padded = F.pad(state, (margin, margin, margin, margin))
        total = torch.zeros_like(state)
        for number, (dy, dx) in enumerate(offsets.tolist()):
            neighbour = padded[:, margin + dy : margin + dy + height, margin + dx : margin + dx + width]
            total = total + weights[:, :, number] * neighbour
        state = total
    return state


def propagate(
    scores: torch.Tensor | np.ndarray,
    boundary: torch.Tensor | np.ndarray,
    *,
    beta: float = 10.0,
    exp_times: int = 8,
    radius: float = 5,
    method: Method = "auto",
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor | np.ndarray:
    """Random walk of every score map over the boundary-aware transition (the reference's result).

    Args:
        scores: ``(C, h, w)`` seed scores (e.g. stride-4 CAMs), numpy or torch (any device).
        boundary: ``(h, w)`` or ``(1, h, w)`` boundary probabilities in [0, 1] at the same stride.
        beta: exponent of the affinities (reference 10).
        exp_times: the walk takes ``2 ** exp_times`` steps (reference 8 → 256).
        radius: neighbourhood radius (reference 5).
        method: ``"sparse"`` (CSR product, CPU and CUDA), ``"stencil"`` (shifted slices, any
            device) or ``"auto"`` (sparse where supported).
        compute_dtype: dtype of the walk; default float64 (float32 on devices without float64),
            which keeps the result within float rounding of an exact evaluation.

    Returns:
        ``(C, h, w)`` walked scores, numpy for numpy ``scores``, else a tensor on the scores'
        device; dtype of the scores (float32 for integer input). Equals
        ``((scores · (1 − boundary)).view(C, N) @ T^(2^exp_times)).view(C, h, w)``.
    """
    context = "random_walk.propagate"
    _check_parameters(beta, exp_times, radius, context)
    seeds, boundary_tensor, return_numpy, output_dtype = _prepare(scores, boundary, context)
    device = seeds.device
    if compute_dtype is None:
        compute_dtype = torch.float32 if device.type == "mps" else torch.float64
    if method == "auto":
        method = "sparse" if device.type in _SPARSE_DEVICE_TYPES else "stencil"
    if method not in ("sparse", "stencil"):
        raise InputError(f"{context}: method must be 'auto', 'sparse' or 'stencil', got {method!r}")
    boundary_tensor = boundary_tensor.to(compute_dtype)
    seeds = seeds.to(compute_dtype) * (1.0 - boundary_tensor)
    if seeds.shape[0] == 0:
        return _finish(seeds, output_dtype, return_numpy)
    walk = _walk_sparse if method == "sparse" else _walk_stencil
    with torch.no_grad():
        result = walk(seeds, boundary_tensor, beta, radius, 2**exp_times)
    return _finish(result, output_dtype, return_numpy)


def propagate_dense(
    scores: torch.Tensor | np.ndarray,
    boundary: torch.Tensor | np.ndarray,
    *,
    beta: float = 10.0,
    exp_times: int = 8,
    radius: int = 5,
    dtype: torch.dtype = torch.float32,
    flush_denormal: bool = False,
) -> torch.Tensor | np.ndarray:
    """The reference formulation, literally (test oracle; O(N²) memory, O(N³) time).

    Padded grid ``(h + radius) × (w + 2·radius)``, boundary padded with 1.0 left/right/bottom,
    affinities of the reference's source window and path index, a dense matrix with ``A[i, i] = 1``
    for every ``i`` and ``A[src, dst] = A[dst, src] = a``, cropped to the image, ``S = A ** β``,
    column-normalised, squared ``exp_times`` times, applied to ``scores · (1 − boundary)``.
    Computed in ``dtype`` (the reference uses float32) on the scores' device.

    ``flush_denormal=True`` flushes subnormal floats to zero in the calling thread for the
    duration of the call (``torch.set_flush_denormal``; cleared afterwards). The squarings produce
    many subnormal entries, which x86 CPUs multiply ~50× slower; flushing changes the result by
    less than 1e-30 absolute. It only reaches the calling thread, so use it with one intra-op
    thread. (The reference ran on a GPU, where subnormals cost nothing.)

    Returns:
        ``(C, h, w)`` like :func:`propagate` (numpy for numpy scores), in ``dtype``.
    """
    context = "random_walk.propagate_dense"
    _check_parameters(beta, exp_times, radius, context)
    if int(radius) != radius:
        raise InputError(f"{context}: the reference pads by the radius, so it must be an integer, got {radius}")
    radius = int(radius)
    seeds, boundary_tensor, return_numpy, _ = _prepare(scores, boundary, context)
    device = seeds.device
    channels, height, width = seeds.shape
    padded_height, padded_width = height + radius, width + 2 * radius
    index = path_index(radius)
    flushing = bool(flush_denormal) and torch.set_flush_denormal(True)
    try:
        with torch.no_grad():
            edge = boundary_tensor.to(dtype).unsqueeze(0)  # (1, h, w)
            edge_padded = F.pad(edge, (radius, radius, 0, radius), mode="constant", value=1.0).reshape(1, -1)
            per_group, source_indices, destination_indices = index.reference_indices(padded_height, padded_width)
            affinities = []
            for indices in per_group:
                gathered = edge_padded[:, torch.as_tensor(indices.reshape(-1), device=device)]
                gathered = gathered.view(1, indices.shape[0], indices.shape[1], indices.shape[2])
                affinities.append(1.0 - gathered.max(dim=2).values)
            affinity = torch.cat(affinities, dim=1).reshape(-1)  # (D · N_src,), direction-major
            vertex_count = padded_height * padded_width
            source = torch.as_tensor(np.tile(source_indices, destination_indices.shape[0]), device=device)
            destination = torch.as_tensor(destination_indices.reshape(-1), device=device)
            identity = torch.arange(vertex_count, device=device)
            rows = torch.cat([source, identity, destination])
            cols = torch.cat([destination, identity, source])
            values = torch.cat([affinity, torch.ones(vertex_count, dtype=dtype, device=device), affinity])
            dense = torch.zeros((vertex_count, vertex_count), dtype=dtype, device=device)
            dense.index_put_((rows, cols), values, accumulate=True)
            del rows, cols, values, source, destination
            dense = dense.view(padded_height, padded_width, padded_height, padded_width)
            dense = dense[:-radius, radius:-radius, :-radius, radius:-radius].reshape(height * width, height * width)
            scaled = torch.pow(dense, beta)
            del dense
            transition = scaled / scaled.sum(dim=0, keepdim=True)
            del scaled
            for _ in range(exp_times):
                transition = transition @ transition
            seeds = seeds.to(dtype) * (1.0 - edge)
            result = (seeds.reshape(channels, height * width) @ transition).reshape(channels, height, width)
    finally:
        if flushing:
            torch.set_flush_denormal(False)
    return _finish(result, dtype, return_numpy)
