"""The real Snakemake DAG, end to end, on a tiny synthetic configuration.

Checks every HDF5 product, the evaluation tables, that an unchanged re-run does nothing, that
changing one stage's parameters re-runs that stage and its descendants only, and that a run from
scratch with the same seed gives identical HDF5 datasets.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "workflow" / "Snakefile"

TINY_CONFIG = {
    "name": "tiny",
    "seed": 0,
    "shard_size": 6,
    "dataset": {
        "kind": "synthetic",
        "root": "data/synthetic-tiny",
        "train_split": "train",
        "infer_split": "train",
        "synthetic": {"seed": 5, "num_train": 10, "num_val": 2, "image_size_range": [72, 96],
                      "objects_per_image": [1, 3]},
    },
    "cam": {
        "backbone": {"name": "resnet18", "weights": "none", "frozen_batchnorm": False},
        "train": {"batch_size": 4, "epochs": 1, "crop_size": 64, "resize_long": [64, 96], "frozen_stages": 0,
                  "optimizer": {"learning_rate": 0.01}},
        "infer": {"scales": [1.0, 0.5]},
    },
    "irnet": {
        "backbone": {"name": "resnet18", "weights": "none", "frozen_batchnorm": False},
        "backbone_init": "cam",
        "train": {"batch_size": 4, "epochs": 1, "crop_size": 64, "radius": 5},
        "infer": {"pad_to": 96},
    },
    "compute": {"device": "cpu", "threads": 1},
}

PRODUCTS = {
    "cam": {"cam_s4", "cam_s1", "class_ids"},
    "ir_labels": {"ir_label_s1"},
    "irnet": {"boundary_s4", "displacement_s4", "affinity_s4_r5", "affinity_directions"},
    "semantic": {"semantic_s1"},
    "instances": {"masks_s1", "class_ids", "scores"},
}


def snakemake(workdir: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile", str(config),
        "--directory", str(workdir), "--cores", "2", *extra,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {log}\n{log.read_text()[-2000:]}" for log in sorted((workdir / "results").rglob("*.log"))
        )
        pytest.fail(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}\n{logs}")
    return result


def summary_value(summary: str, label: str) -> str:
    """The 'ours' column of the summary row ``label``."""
    rows = [line for line in summary.splitlines() if line.startswith(f"| {label} ")]
    assert len(rows) == 1, (label, summary)
    return rows[0].split("|")[3].strip()


def datasets_of(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as handle:
        def visit(name: str, item: object) -> None:
            if isinstance(item, h5py.Dataset):
                out[name] = item[()]
        handle.visititems(visit)
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("workflow")
    config = workdir / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    snakemake(workdir, config)
    return workdir, config


@pytest.mark.slow
def test_dag_writes_every_product(finished_run: tuple[Path, Path]) -> None:
    workdir, _ = finished_run
    run = workdir / "results" / "tiny"
    plan = json.loads((run / "shards.json").read_text())
    assert len(plan["shards"]) == 2 and sorted(plan["infer_ids"]) == [f"syn_{i:06d}" for i in range(10)]
    for product, names in PRODUCTS.items():
        files = sorted((run / product).glob("shard-*.h5"))
        assert [file.name for file in files] == ["shard-00000.h5", "shard-00001.h5"]
        seen = 0
        for file in files:
            with h5py.File(file) as handle:
                ids = json.loads(handle.attrs["image_ids"])
                assert handle.attrs["product"] == product and len(handle.attrs["config_hash"]) == 16
                for image_id in ids:
                    assert set(handle[image_id]) == names, (product, image_id)
                    height, width = handle[image_id].attrs["height"], handle[image_id].attrs["width"]
                    group = handle[image_id]
                    if product == "cam":
                        k = len(group["class_ids"])
                        assert group["cam_s1"].shape == (k, height, width)
                        assert group["cam_s4"].shape == (k, -(-height // 4), -(-width // 4))
                        assert 0 <= np.min(group["cam_s1"]) and np.max(group["cam_s1"]) <= 1
                    if product == "ir_labels":
                        assert set(np.unique(group["ir_label_s1"])) <= set(range(5)) | {255}
                    if product == "irnet":
                        assert group["boundary_s4"].shape == (-(-height // 4), -(-width // 4))
                        assert group["displacement_s4"].shape == (2, -(-height // 4), -(-width // 4))
                        assert group["affinity_s4_r5"].shape[0] == 34
                    if product == "semantic":
                        assert group["semantic_s1"].shape == (height, width)
                    if product == "instances":
                        n = len(group["scores"])
                        assert group["masks_s1"].shape == (n, height, width) and len(group["class_ids"]) == n
                seen += len(ids)
        assert seen == 10
    for name in ("cam", "semantic", "instances"):
        assert (run / "evaluation" / f"{name}.csv").exists() and (run / "evaluation" / f"{name}.md").exists()
    metrics = json.loads((run / "evaluation" / "instances.json").read_text())
    assert {"mAP@0.25", "mAP@0.5", "mAP@0.7", "mAP@0.75", "mAP_vol"} <= set(metrics)
    summary = (run / "evaluation" / "summary.md").read_text()
    for label, stage, metric in (
        ("CAM (background 0.15)", "cam", "mIoU"),
        ("semantic pseudo labels (random walk)", "semantic", "mIoU"),
        ("instance pseudo labels, mAP^r@0.5", "instances", "mAP@0.5"),
    ):
        value = json.loads((run / "evaluation" / f"{stage}.json").read_text())[metric]
        assert summary_value(summary, label) == f"{100 * value:.1f}", (label, summary)
    assert (run / "models" / "cam.pt").exists() and (run / "models" / "irnet.pt").exists()
    # diagnostics beside every output: statistics and warnings (JSON), loss curves (CSV)
    irnet_diagnostics = json.loads((run / "models" / "irnet.diagnostics.json").read_text())
    assert irnet_diagnostics["stage"] == "train_irnet" and isinstance(irnet_diagnostics["warnings"], list)
    assert {"displacement_centred_p99_magnitude", "displacement_fg_over_constant"} <= set(irnet_diagnostics["statistics"])
    curves = (run / "models" / "irnet.loss_curves.csv").read_text().splitlines()
    assert curves[0].startswith("step,learning_rate,") and "displacement_fg_constant" in curves[0] and len(curves) == 3
    assert (run / "models" / "cam.diagnostics.json").exists() and (run / "models" / "cam.loss_curves.csv").exists()
    for product, key in (("cam", "coverage_eval"), ("ir_labels", "accuracy"), ("irnet", "boundary_mean")):
        for index in (0, 1):
            statistics = json.loads((run / product / f"shard-0000{index}.diagnostics.json").read_text())["statistics"]
            assert key in statistics and statistics["images"] > 0, (product, index)
    # the images (long sides 72-96) lie inside cam.train.resize_long (64-96): none outside, none rescaled
    cam_statistics = json.loads((run / "cam" / "shard-00000.diagnostics.json").read_text())["statistics"]
    assert cam_statistics["outside_train_range"] == 0.0 and cam_statistics["rescaled_for_inference"] == 0.0


@pytest.mark.slow
def test_unchanged_rerun_does_nothing_and_a_stage_change_reruns_only_its_part(
    finished_run: tuple[Path, Path],
) -> None:
    workdir, config = finished_run
    result = snakemake(workdir, config, "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr

    changed = yaml.safe_load(config.read_text())
    changed["random_walk"] = {"beta": 8}
    changed_config = workdir / "changed.yaml"
    changed_config.write_text(yaml.safe_dump(changed))
    result = snakemake(workdir, changed_config, "--dry-run", "--quiet", "rules")
    text = result.stdout + result.stderr
    assert "pseudo_labels" in text and "evaluate_semantic" in text
    assert "train_cam" not in text and "make_cam" not in text and "train_irnet" not in text


@pytest.mark.slow
def test_a_run_from_scratch_gives_identical_datasets(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    workdir, config = finished_run
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy(config, second / "tiny.yaml")
    snakemake(second, second / "tiny.yaml")
    for product in PRODUCTS:
        for first_file in sorted((workdir / "results" / "tiny" / product).glob("*.h5")):
            a = datasets_of(first_file)
            b = datasets_of(second / "results" / "tiny" / product / first_file.name)
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"{product}/{first_file.name}/{name}")


@pytest.mark.slow
def test_exported_reference_cams_import_back_identically(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    workdir, config = finished_run
    run = workdir / "results" / "tiny"
    resolved = run / "config.yaml"
    npy_dir = tmp_path / "npy"
    base = [sys.executable, "-m", "irn_core.cli"]
    cams = sorted(str(path) for path in (run / "cam").glob("*.h5"))
    subprocess.run([*base, "export-cams", "--cams", *cams, "--out-dir", str(npy_dir)], check=True, cwd=workdir)
    assert len(list(npy_dir.glob("*.npy"))) == 10
    imported = tmp_path / "imported.h5"
    subprocess.run(
        [*base, "import-cams", "--config", str(resolved), "--shard", "0", "--npy-dir", str(npy_dir),
         "--out", str(imported)],
        check=True, cwd=workdir,
    )
    original = datasets_of(run / "cam" / "shard-00000.h5")
    again = datasets_of(imported)
    assert original.keys() == again.keys()
    for name in original:
        np.testing.assert_array_equal(original[name], again[name], err_msg=name)


@pytest.mark.slow
def test_dag_on_real_voc_photos_with_efficientnet_lite0(tmp_path: Path) -> None:
    """The VOC reader path end to end: real photos, XML / mask labels, ImageNet Lite0 weights; CAMs
    inferred at the training scale (``cam.infer.base_size: train_range``)."""
    config = {
        "name": "real",
        "shard_size": 2,
        "dataset": {"kind": "voc12", "root": str(ROOT / "tests" / "fixtures" / "real_samples" / "voc"),
                    "train_split": "val", "infer_split": "val"},
        "cam": {"backbone": {"name": "efficientnet_lite0", "weights": "imagenet"},
                "train": {"batch_size": 2, "epochs": 1, "crop_size": 128, "resize_long": [128, 160]},
                "infer": {"scales": [1.0, 0.5], "base_size": "train_range"}},
        "irnet": {"backbone": {"name": "efficientnet_lite0", "weights": "imagenet"},
                  "train": {"batch_size": 2, "epochs": 1, "crop_size": 128}},
        "compute": {"device": "cpu", "threads": 1},
    }
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(config))
    snakemake(tmp_path, path)
    run = tmp_path / "results" / "real"
    with h5py.File(run / "cam" / "shard-00000.h5") as handle:
        # 2007_000063 has an XML naming a dog (11) and a chair (8)
        assert handle["2007_000063/class_ids"][()].tolist() == [8, 11]
        assert handle["2007_000063/cam_s1"].shape == (2, 375, 500)
    # the photos (long side 500) are inferred at the training range's 160 px; the CAMs keep the photo's size
    cam_statistics = json.loads((run / "cam" / "shard-00000.diagnostics.json").read_text())["statistics"]
    assert cam_statistics["outside_train_range"] == 1.0 and cam_statistics["rescaled_for_inference"] == 1.0
    with h5py.File(run / "semantic" / "shard-00000.h5") as handle:
        assert handle["2007_000063/semantic_s1"].shape == (375, 500)
    assert summary_value((run / "evaluation" / "summary.md").read_text(), "instance pseudo labels, mAP^r@0.5")
    page = (run / "report" / "index.html").read_text()  # the report of real photos
    assert "images/2007_000063/cam-11.png" in page
    assert (run / "report" / "images" / "2007_000063" / "cam-11.png").exists()


@pytest.mark.slow
def test_report_and_status_of_the_finished_run(finished_run: tuple[Path, Path]) -> None:
    """The report rule ran last in the default target; irn status sees every job done."""
    from html.parser import HTMLParser

    from PIL import Image

    workdir, config = finished_run
    report = workdir / "results" / "tiny" / "report"
    page = (report / "index.html").read_text(encoding="utf-8")

    class Images(HTMLParser):
        sources: list[str] = []

        def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
            if tag == "img":
                self.sources.append(dict(attributes)["src"] or "")

    parser = Images()
    parser.feed(page)
    assert len(parser.sources) > 20
    for source in parser.sources:
        with Image.open(report / source) as image:
            pixels = np.asarray(image.convert("RGB"))
        # a tiny untrained model's maps may be uniform (all background, no boundary); these never are
        if source.startswith(("charts/", "figures/")) or source.endswith(("/image.png", "/ground-truth-semantic.png")):
            assert pixels.std() > 0, source
    assert "Pseudo labels (train split)" in page and "(best, semantic pseudo label mIoU" in page
    assert "Precision-recall curves: instances" in page and ">train_cam</td>" in page  # benchmarks read
    assert (workdir / "results" / "tiny" / "benchmarks" / "report.tsv").exists()
    status = subprocess.run(
        [sys.executable, "-m", "irn_core.cli", "status", "--config", str(config), "--directory", str(workdir)],
        capture_output=True, text=True, cwd=workdir, timeout=300,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "make_cam" in status.stdout and "report" in status.stdout and "failed" not in status.stdout


@pytest.mark.slow
def test_status_reports_a_deliberately_failed_shard(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    """A corrupt IRNet shard makes the forced pseudo-label job of that shard fail; irn status names
    it as failed with its log's last error, and the other shard as done."""
    workdir, config = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("locks"))
    shutil.copy(config, copy / "tiny.yaml")
    (copy / "results" / "tiny" / "irnet" / "shard-00000.h5").write_bytes(b"deliberately not an HDF5 file")
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile", str(copy / "tiny.yaml"),
        "--directory", str(copy), "--cores", "2", "--keep-going", "--forcerun", "pseudo_labels", "--",
        "results/tiny/semantic/shard-00000.h5", "results/tiny/semantic/shard-00001.h5",  # as the rules name them
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode != 0 and "Error in rule pseudo_labels" in result.stderr, result.stderr[-3000:]
    status = subprocess.run(
        [sys.executable, "-m", "irn_core.cli", "status", "--config", str(copy / "tiny.yaml"),
         "--directory", str(copy), "--json"],
        capture_output=True, text=True, cwd=copy, timeout=300,
    )
    assert status.returncode == 3, status.stdout + status.stderr
    items = {(item["stage"], item["shard"]): item for item in json.loads(status.stdout)["items"]}
    failed = items[("pseudo_labels", 0)]
    assert failed["state"] == "failed" and "not a readable HDF5 file" in failed["detail"], failed
    assert failed["log"].endswith("logs/pseudo_labels/00000.log")
    assert items[("pseudo_labels", 1)]["state"] == "done"
    assert items[("irnet_infer", 0)]["state"] == "failed"  # the corrupt file itself
