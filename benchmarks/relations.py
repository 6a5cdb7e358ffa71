"""Benchmark of the random walk and the pseudo labels against the reference's dense formulation.

For each map size: time and peak memory of ``irn_core.random_walk.propagate`` (sparse, float64)
and of ``propagate_dense`` (the reference formulation, float32, as the reference runs it), in the
same run, and the largest difference relative to the largest output. Then the time per image of
semantic + instance pseudo labels at 94×125 (a 500×375 VOC image).

Every measurement runs in its own subprocess; peak memory is the growth of the process's peak
resident set (``VmHWM`` after ``/proc/self/clear_refs`` reset it to the current RSS) during the
measured call, so torch's allocations are counted. Run::

    python benchmarks/relations.py            # full run, dense up to 94×125 (~3 min for that size)
    python benchmarks/relations.py --quick    # small sizes only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_SIZES = "48x64,64x80,94x125,125x125"
REFERENCE_ORIGIN = "reference formulation (dense float32, padded grid, 8 squarings)"


# ---------------------------------------------------------------------------------------------- inputs
def scene(height: int, width: int, classes: int, seed: int) -> dict[str, np.ndarray]:
    """CAM-like blobs, a boundary along their rims plus noise, a displacement field to their centres."""
    generator = np.random.default_rng(seed)
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    cams = np.zeros((classes, height, width), dtype=np.float32)
    boundary = np.zeros((height, width), dtype=np.float32)
    displacement = np.zeros((2, height, width), dtype=np.float32)
    scale = min(height, width)
    for channel in range(classes):
        for _ in range(2):  # two instances per class
            cy, cx = generator.uniform(0.15, 0.85) * height, generator.uniform(0.15, 0.85) * width
            size = generator.uniform(0.08, 0.18) * scale
            distance = np.hypot(grid_y - cy, grid_x - cx)
            cams[channel] = np.maximum(cams[channel], np.clip(1.0 - distance / (1.5 * size), 0, None))
            near = distance < 1.5 * size
            displacement[0][near] = (cy - grid_y)[near]
            displacement[1][near] = (cx - grid_x)[near]
            boundary = np.maximum(boundary, np.exp(-((distance - 1.5 * size) ** 2) / 2.0))
    cams /= cams.reshape(classes, -1).max(axis=1)[:, None, None] + 1e-5
    boundary = np.clip(boundary + generator.uniform(0, 0.1, boundary.shape), 0, 1).astype(np.float32)
    displacement += generator.normal(scale=0.3, size=displacement.shape).astype(np.float32)
    return {"cams": cams, "boundary": boundary, "displacement": displacement.astype(np.float32)}


# ---------------------------------------------------------------------------------------------- worker
def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _measure(function, repeats: int) -> tuple[list[float], float, object]:
    """Times of ``repeats`` calls and the peak RSS growth (MiB) during the first one."""
    exact = _reset_peak()
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = function()
    times = [time.perf_counter() - start]
    peak = (_status_kib("VmHWM") - before) / 1024 if exact else float("nan")
    for _ in range(repeats - 1):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times, peak, result


def worker(arguments: argparse.Namespace) -> None:
    import torch

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    from irn_core.pseudo_labels import instance_labels, semantic_and_instance_labels, semantic_label
    from irn_core.random_walk import propagate, propagate_dense

    height, width = (int(value) for value in arguments.size.split("x"))
    inputs = scene(height, width, arguments.channels, arguments.seed)
    cams = torch.from_numpy(inputs["cams"])
    boundary = torch.from_numpy(inputs["boundary"])
    warm = scene(12, 14, 1, 0)  # one-time library/BLAS/sparse initialisation outside the timing
    report: dict[str, object] = {"threads": torch.get_num_threads()}
    if arguments.worker in ("sparse", "dense", "exact"):
        if arguments.worker == "sparse":
            propagate(torch.from_numpy(warm["cams"]), torch.from_numpy(warm["boundary"]))
            function = lambda: propagate(cams, boundary)  # noqa: E731
        else:
            dtype = torch.float32 if arguments.worker == "dense" else torch.float64
            flush = not arguments.denormals
            propagate_dense(torch.from_numpy(warm["cams"]), torch.from_numpy(warm["boundary"]), dtype=dtype)
            function = lambda: propagate_dense(cams, boundary, dtype=dtype, flush_denormal=flush)  # noqa: E731
        times, peak, result = _measure(function, arguments.repeats)
        np.save(arguments.out, result.numpy())
    else:  # labels
        image_size = (height * 4 - 1, width * 4)
        displacement = inputs["displacement"]
        class_ids = np.arange(arguments.channels) * 3
        semantic_and_instance_labels(warm["cams"], [0], warm["boundary"], warm["displacement"], (48, 56))
        times, peak, (semantic, instances) = _measure(
            lambda: semantic_and_instance_labels(cams, class_ids, boundary, displacement, image_size),
            arguments.repeats,
        )
        separate, _, _ = _measure(
            lambda: (
                semantic_label(cams, class_ids, boundary, image_size),
                instance_labels(cams, class_ids, boundary, displacement, image_size),
            ),
            arguments.repeats,
        )
        report.update(
            separate_times=separate,
            instances=len(instances),
            semantic_classes=sorted(int(value) for value in np.unique(semantic)),
        )
    report.update(times=times, peak_mib=peak)
    Path(arguments.report).write_text(json.dumps(report), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- parent
def run_worker(
    kind: str, size: str, options: argparse.Namespace, directory: Path, *, threads: int = 0, repeats: int = 1
) -> dict:
    out = directory / f"{kind}-{size}-{threads}.npy"
    report = directory / f"{kind}-{size}-{threads}.json"
    channels = options.label_classes if kind == "labels" else options.channels
    command = [
        sys.executable, __file__, "--worker", kind, "--size", size, "--channels", str(channels),
        "--seed", str(options.seed), "--out", str(out), "--report", str(report), "--repeats", str(repeats),
        "--threads", str(threads),
    ] + (["--denormals"] if options.denormals else [])
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{kind} worker at {size} failed:\n{completed.stderr[-3000:]}")
    result = json.loads(report.read_text(encoding="utf-8"))
    if out.exists():
        result["output"] = np.load(out)
    return result


def available_mib() -> float:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def dense_estimate_mib(height: int, width: int, radius: int = 5) -> float:
    """Peak of the reference formulation: the padded dense matrix plus ~3 N×N float32 matrices."""
    pixels = height * width
    padded = (height + radius) * (width + 2 * radius)
    return (padded * padded + 3 * pixels * pixels) * 4 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated HxW stride-4 map sizes")
    parser.add_argument("--quick", action="store_true", help="sizes 48x64 and 64x80 only, labels at 94x125")
    parser.add_argument("--skip-dense-above", type=int, default=94 * 125,
                        help="run the dense reference only up to this many pixels (default 11750 = 94x125)")
    parser.add_argument("--exact-up-to", type=int, default=48 * 64,
                        help="also run the dense formulation in float64 up to this many pixels")
    parser.add_argument("--channels", type=int, default=3, help="score maps walked at once (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the sparse walk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["sparse", "dense", "exact", "labels"], help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--denormals", action="store_true",
                        help="run the dense reference with subnormal floats (default threads; ~50x slower on x86) "
                        "instead of one thread with subnormals flushed to zero")
    parser.add_argument("--label-classes", type=int, default=2,
                        help="classes of the pseudo-label timing image (two instances each; default 2)")
    options = parser.parse_args()
    if options.worker:
        worker(options)
        return
    sizes = "48x64,64x80" if options.quick else options.sizes
    import torch

    default_threads = torch.get_num_threads()
    dense_threads = default_threads if options.denormals else 1
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {default_threads} intra-op threads by default; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"channels walked: {options.channels}; sparse = propagate (CSR, float64), "
          f"dense = {REFERENCE_ORIGIN}, {dense_threads} thread(s), "
          + ("subnormals kept" if options.denormals else "subnormals flushed to zero (else ~50x slower on x86)")
          + "\n")
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        for size in sizes.split(","):
            height, width = (int(value) for value in size.split("x"))
            pixels = height * width
            sparse = run_worker("sparse", size, options, directory, threads=default_threads, repeats=options.repeats)
            single = run_worker("sparse", size, options, directory, threads=1, repeats=options.repeats)
            row = {
                "size": size, "pixels": pixels,
                "sparse_s": min(sparse["times"]), "sparse_median_s": statistics.median(sparse["times"]),
                "sparse_1t_s": min(single["times"]), "sparse_mib": sparse["peak_mib"],
                "sparse_1t_mib": single["peak_mib"],
            }
            estimate = dense_estimate_mib(height, width)
            if pixels <= options.skip_dense_above:
                started = time.perf_counter()
                dense = run_worker("dense", size, options, directory, threads=dense_threads)
                row.update(dense_s=dense["times"][0], dense_mib=dense["peak_mib"])
                reference = dense["output"]
                largest = float(np.abs(reference).max())
                row["max_diff_rel"] = float(np.abs(sparse["output"] - reference).max()) / largest
                logged = time.perf_counter() - started
                print(f"  {size}: dense {row['dense_s']:.1f} s (worker {logged:.1f} s)", flush=True)
                if pixels <= options.exact_up_to:
                    exact = run_worker("exact", size, options, directory, threads=dense_threads)["output"]
                    row["reference_error_rel"] = float(np.abs(reference - exact).max()) / largest
                    row["sparse_error_rel"] = float(np.abs(sparse["output"] - exact).max()) / largest
            else:
                fits = estimate < available_mib()
                row["dense_note"] = (
                    f"skipped (--skip-dense-above {options.skip_dense_above}); needs ≈{estimate / 1024:.1f} GiB, "
                    + ("which would fit in the memory available now" if fits
                       else "MORE than the memory available now")
                )
            row["dense_estimate_mib"] = estimate
            rows.append(row)
            print(f"  {size}: sparse {row['sparse_s'] * 1e3:.0f} ms (1 thread {row['sparse_1t_s'] * 1e3:.0f} ms)",
                  flush=True)
        labels = run_worker("labels", "94x125", options, directory, threads=default_threads, repeats=3)
        labels_single = run_worker("labels", "94x125", options, directory, threads=1, repeats=3)

    print("\n| map (stride 4) | pixels | dense time | sparse time (1 thread) | speed-up | dense peak | sparse peak "
          "(1 thread) | max diff / max | f32 reference error / sparse error vs f64 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "dense_s" in row:
            dense_time = f"{row['dense_s']:.2f} s"
            ratio = f"{row['dense_s'] / row['sparse_s']:.0f}× ({row['dense_s'] / row['sparse_1t_s']:.0f}×)"
            dense_peak = f"{row['dense_mib']:.0f} MiB"
            difference = f"{row['max_diff_rel']:.1e}"
        else:
            dense_time = ratio = difference = "—"
            dense_peak = f"— (est. {row['dense_estimate_mib'] / 1024:.1f} GiB)"
        errors = (
            f"{row['reference_error_rel']:.1e} / {row['sparse_error_rel']:.1e}"
            if "reference_error_rel" in row
            else "—"
        )
        print(f"| {row['size']} | {row['pixels']} | {dense_time} | {row['sparse_s'] * 1e3:.0f} ms "
              f"({row['sparse_1t_s'] * 1e3:.0f} ms) | {ratio} | {dense_peak} | {row['sparse_mib']:.1f} MiB "
              f"({row['sparse_1t_mib']:.1f} MiB) | {difference} | {errors} |")
    for row in rows:
        if "dense_note" in row:
            print(f"\n{row['size']}: dense {row['dense_note']}.")
    print(f"\nsparse time: best of {options.repeats} (median at default threads: "
          + ", ".join(f"{row['size']} {row['sparse_median_s'] * 1e3:.0f} ms" for row in rows) + ")")
    print(
        f"\nPseudo labels at 94x125 (image 375x500, {options.label_classes} classes, "
        f"{labels['instances']} instances found), per image, best of 3:\n"
        f"  semantic_and_instance_labels (one walk): {min(labels['times']):.3f} s "
        f"({min(labels_single['times']):.3f} s with 1 thread), peak +{labels['peak_mib']:.0f} MiB\n"
        f"  semantic_label + instance_labels (two walks): {min(labels['separate_times']):.3f} s "
        f"({min(labels_single['separate_times']):.3f} s with 1 thread)"
    )
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other processes share these cores)")


if __name__ == "__main__":
    main()
