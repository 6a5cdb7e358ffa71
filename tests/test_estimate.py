"""The time and disk model of ``irn estimate`` (irn_core/estimate.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from irn_core.cli import main
from irn_core.config import dump_config, load_config
from irn_core.estimate import (
    DEMO_CPU_THROUGHPUT,
    disk_model_check,
    estimate,
    estimate_plan,
    format_estimate,
    measure_run_products,
    product_disk_bytes,
    run_throughputs,
    spread,
)
from irn_core.relations.path_index import path_index
from irn_core.store import ShardWriter

REPOSITORY = Path(__file__).resolve().parents[1]
VOC12 = REPOSITORY / "config" / "voc12.yaml"
DEMO = REPOSITORY / "config" / "config.yaml"


def test_voc12_without_data_counts_the_known_splits_and_shards() -> None:
    config = load_config(VOC12)
    plan, source = estimate_plan(config)
    assert "VOC" in source
    assert len(plan.train_ids) == 10582 and len(plan.infer_ids) == 1464 and len(plan.val_ids) == 1449
    assert plan.infer_ids <= plan.train_ids and not plan.val_ids & plan.train_ids
    result = estimate(config)
    stages = {stage.name: stage for stage in result.stages}
    # train_aug cut by roles: 1,464 train ids (ceil(1464/64) = 23 shards) + 9,118 (143 shards); val 23 shards
    assert stages["make_cam"].jobs == stages["irnet_infer"].jobs == stages["pseudo_labels"].jobs == 166
    assert stages["make_cam"].images == 10582 and stages["deeplab_infer_pseudo"].images == 1449
    assert stages["deeplab_infer_pseudo"].jobs == 23
    assert stages["train_cam"].processed == (10582 // 16) * 5 * 16  # the reference's max_step x batch
    assert stages["train_maskrcnn"].processed == 18000 * 4
    assert stages["train_cam"].seconds == pytest.approx(stages["train_cam"].processed / DEMO_CPU_THROUGHPUT["cam_train"])
    assert result.total_seconds(8) < result.total_seconds(1)
    # float32 CAMs under preset: paper: K (h w + H W) float32 per image
    assert result.disk_bytes["cam"] == round(10582 * 1.5 * (94 * 125 + 375 * 500) * 4 + 10582 * 1.5 * 8)


def test_spread_puts_the_longest_jobs_first() -> None:
    # longest first to the least busy device: 5 | 4, 4+3 = 7, 5+3 = 8, 7+3 = 10 (greedy; the optimum is 9)
    assert spread([3, 5, 3, 4, 3], 2) == 10
    assert spread([10, 1, 1], 8) == 10
    assert spread([2.0] * 6, 3) == 4.0


def test_gpu_check_report_sets_the_throughputs() -> None:
    stages = {key: {"images_per_second": 10.0 * (index + 1)} for index, key in enumerate(
        ["cam_train", "cam_infer", "irnet_train", "irnet_infer", "pseudo_labels", "deeplab_train", "deeplab_infer",
         "maskrcnn_train", "maskrcnn_infer"])}
    report = {"date": "2026-12-06", "tiny": False, "environment": {"device_name": "NVIDIA H100"},
              "stages": {"float32": stages}}
    result = estimate(load_config(VOC12), throughput_report=report)
    by_name = {stage.name: stage for stage in result.stages}
    assert by_name["make_cam"].throughput == 20.0 and "H100" in by_name["make_cam"].throughput_source
    assert by_name["ir_labels"].throughput_source == "README demo (CPU)"  # a CPU stage gpu_check does not time


def _write_run(run_dir: Path, config_path: Path) -> None:
    """A run folder with one shard of every product, arrays of the shapes the steps write."""
    config = load_config(config_path)
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    rng = np.random.default_rng(0)
    directions = path_index(config.random_walk.radius).directions
    images = {"a": (120, 160, 2, 3), "b": (128, 144, 1, 1), "c": (112, 180, 3, 4)}  # H, W, classes, instances
    writers = {}
    for product in ("cam", "ir_labels", "irnet", "semantic", "instances", "deeplab_pseudo", "maskrcnn"):
        (run_dir / product).mkdir()
        float16 = {"cam": ("cam_s4", "cam_s1") if config.cam_float16 else (), "irnet": ("affinity_s4_r5",)}
        writers[product] = ShardWriter(run_dir / product / "shard-00000.h5", product=product, config_hash="x",
                                       shard_index=0, float16=float16.get(product, ()))
    for writer in writers.values():
        writer.__enter__()
    for image_id, (height, width, classes, instances) in images.items():
        h, w = -(-height // 4), -(-width // 4)
        size = {"height": height, "width": width}
        labels = rng.integers(0, 3, (height, width), dtype=np.uint8)
        masks = rng.random((instances, height, width)) < 0.3
        found = {"masks_s1": masks, "class_ids": np.arange(instances, dtype=np.int64),
                 "scores": rng.random(instances).astype(np.float32)}
        writers["cam"].add(image_id, {"cam_s4": rng.random((classes, h, w), dtype=np.float32),
                                      "cam_s1": rng.random((classes, height, width), dtype=np.float32),
                                      "class_ids": np.arange(classes, dtype=np.int64)}, size)
        writers["ir_labels"].add(image_id, {"ir_label_s1": labels}, size)
        writers["irnet"].add(image_id, {"boundary_s4": rng.random((h, w), dtype=np.float32),
                                        "displacement_s4": rng.random((2, h, w), dtype=np.float32),
                                        "affinity_s4_r5": rng.random((len(directions), h, w), dtype=np.float32),
                                        "affinity_directions": directions}, size)
        writers["semantic"].add(image_id, {"semantic_s1": labels}, size)
        writers["instances"].add(image_id, found, size)
        writers["deeplab_pseudo"].add(image_id, {"semantic_s1": labels}, size)
        writers["maskrcnn"].add(image_id, found, size)
    for writer in writers.values():
        writer.__exit__(None, None, None)


@pytest.mark.parametrize("config_path", [DEMO, VOC12], ids=["float16 CAMs", "float32 CAMs"])
def test_disk_model_matches_written_products(tmp_path: Path, config_path: Path) -> None:
    """Tolerances: the model multiplies means (of image size, classes, instances), so on images of
    different sizes it is within 3% of the arrays' payload; the files, gzip-compressed, are at most the
    payload plus HDF5's metadata (at most 64 KiB a file here), and random maps do not compress below 50%."""
    run_dir = tmp_path / "run"
    _write_run(run_dir, config_path)
    measured = measure_run_products(run_dir)
    assert set(measured) == {"cam", "ir_labels", "irnet", "semantic", "instances", "deeplab_pseudo", "maskrcnn"}
    check = disk_model_check(load_config(run_dir / "config.yaml"), measured)
    for product, row in check.items():
        assert row["predicted"] == pytest.approx(row["payload"], rel=0.03), product
        assert row["file_bytes"] <= row["payload"] + 64 * 1024, product
    for product in ("cam", "irnet"):  # random floats: gzip + shuffle gains little
        assert check[product]["file_bytes"] > 0.5 * check[product]["predicted"], product


def test_product_disk_bytes_counts_per_product() -> None:
    config = load_config(DEMO)  # float16 CAMs (preset: fixed)
    sizes = product_disk_bytes(config, {"cam": 2, "semantic": 3, "maskrcnn": 1}, (100, 200), 2, 1, mean_detections=5)
    assert sizes == {"cam": round(2 * (2 * (25 * 50 + 100 * 200) * 2 + 16)), "semantic": 3 * 100 * 200,
                     "maskrcnn": 5 * (100 * 200 + 12)}
    banded = config.model_copy(update={"random_walk": config.random_walk.model_copy(
        update={"uncertain_band": (0.5, 1.0)})})
    assert product_disk_bytes(banded, 3, (100, 200), 2, 1)["semantic"] == 3 * 100 * 200 * 2  # + uncertain_s1


def test_run_throughputs_from_benchmark_files(tmp_path: Path) -> None:
    config = load_config(DEMO)
    run_dir = tmp_path / "run"
    (run_dir / "benchmarks" / "make_cam").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    plan, _ = estimate_plan(config)
    (run_dir / "shards.json").write_text(plan.to_json(), encoding="utf-8")
    header = "s\th:m:s\tmax_rss\n"
    (run_dir / "benchmarks" / "train_cam.tsv").write_text(header + "64.0\t0:01:04\t1000\n", encoding="utf-8")
    for shard in plan.product_shards("cam"):
        (run_dir / "benchmarks" / "make_cam" / f"{shard:05d}.tsv").write_text(header + "40.0\t0:00:40\t1\n")
    throughputs = run_throughputs(run_dir)
    assert throughputs["cam_train"][0] == pytest.approx(80 * 16 / 64.0)  # 8 epochs of 160 images, batch 16
    assert throughputs["cam_infer"][0] == pytest.approx(160 / (40.0 * len(plan.product_shards("cam"))))
    assert "irnet_train" not in throughputs


def test_cli_estimate_prints_the_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--config", str(VOC12), "--gpus", "4"]) == 0
    printed = capsys.readouterr().out
    assert "| make_cam | 10,582 | 10,582 | 166 |" in printed
    assert "4 devices (SLURM)" in printed and "| cam | 10,582 |" in printed and "uncompressed" in printed


def test_estimate_from_a_run_measures_compression_and_checks_the_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _write_run(run_dir, DEMO)
    config = load_config(DEMO)
    plan, _ = estimate_plan(config)
    (run_dir / "shards.json").write_text(plan.to_json(), encoding="utf-8")
    (run_dir / "benchmarks").mkdir()
    (run_dir / "benchmarks" / "train_irnet.tsv").write_text("s\th:m:s\n128.0\t0:02:08\n", encoding="utf-8")
    result = estimate(config, from_run=run_dir)
    by_name = {stage.name: stage for stage in result.stages}
    assert by_name["train_irnet"].throughput == pytest.approx(80 * 16 / 128.0)
    assert by_name["train_cam"].throughput_source == "README demo (CPU)"  # no benchmark file: the default
    assert set(result.compression) == set(result.model_check) and 0 < result.compression["semantic"] < 1
    printed = format_estimate(result, 2)
    assert "The disk model against the --from-run run's files" in printed and "| maskrcnn |" in printed
