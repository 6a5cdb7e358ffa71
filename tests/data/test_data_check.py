"""``irn data check`` on generated tiny VOC + SBD and COCO folders, and the check at the start of a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_data_voc import save_sbd, write_jpeg, write_list, write_xml

from irn_core.cli import main
from irn_core.config import RunConfig, load_config
from irn_core.data import check as check_module
from irn_core.data import synthetic
from irn_core.data.check import DatasetCheck, check_at_run_start, check_dataset
from irn_core.errors import DatasetError

DEMO = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
SBD_IDS = ["sbd_000100", "sbd_000101"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VOC-layout folder (the synthetic generator: 6 train + 4 val ids) and an SBD folder adding 2 ids."""
    folder = tmp_path_factory.mktemp("datasets")
    synthetic.generate(synthetic.SyntheticConfig(seed=3, num_train=6, num_val=4, image_size_range=(64, 72),
                                                 objects_per_image=(1, 2)), folder / "VOC", progress=False)
    segmentation = np.zeros((8, 10), dtype=np.uint8)
    segmentation[2:6, 3:8] = 2
    for image_id in SBD_IDS:
        write_jpeg(folder / "VOC" / "JPEGImages" / f"{image_id}.jpg")
        save_sbd(folder / "sbd", image_id, segmentation, (segmentation > 0).astype(np.uint8), [2])
    write_list(folder / "sbd" / "train.txt", SBD_IDS[:1])
    write_list(folder / "sbd" / "val.txt", SBD_IDS[1:])
    return folder


def _config(tmp_path: Path, dataset: dict) -> Path:
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump({"name": "checked", "dataset": {"synthetic": None, "downstream_split": None,
                                                                    "val_split": None, **dataset}}))
    return path


@pytest.fixture()
def voc(generated: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the generated folders and a config using train_aug (VOC train + SBD) and train."""
    shutil.copytree(generated, tmp_path / "data")
    root = tmp_path / "data" / "VOC"
    config = _config(tmp_path, {"kind": "voc12", "root": str(root), "sbd_root": str(tmp_path / "data" / "sbd"),
                                "train_split": "train_aug", "infer_split": "train"})
    return root, config


def _check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["data", "check", "--config", str(DEMO), "--config", str(config), "--no-progress"])
    return code, capsys.readouterr().out


def test_a_correct_voc_sbd_dataset_passes(voc: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, config = voc
    code, text = _check(config, capsys)
    assert code == 0, text
    assert "OK: no problems found" in text
    report = check_dataset(load_config([DEMO, config]), progress=False)
    counts = report.image_counts
    assert counts == {"train_aug": 8, "train": 6}  # SBD's 2 ids + the 6 VOC train ids
    train = next(split for split in report.splits if split.split == "train")
    assert train.roles == ["infer"] and train.checked == 6 and train.without_labels == 0
    assert train.sizes is not None and 64 <= train.sizes.height_min <= train.sizes.height_max <= 72
    class_names = (root / "classes.txt").read_text().split()
    assert set(train.class_counts) <= set(class_names) and sum(train.class_counts.values()) >= 6
    augmented = next(split for split in report.splits if split.split == "train_aug")
    assert augmented.sizes is not None and augmented.sizes.height_min == 8  # the SBD images' JPEGs
    assert DatasetCheck.from_json(report.to_json()) == report


@pytest.mark.parametrize("damage", ["missing image", "truncated image", "missing label", "empty label"])
def test_a_damaged_file_gives_exit_2_naming_the_file_and_id(
    voc: tuple[Path, Path], capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    root, config = voc
    image_id = "syn_000002"  # a train id (so in train_aug and train)
    image = root / "JPEGImages" / f"{image_id}.jpg"
    if damage == "missing image":
        image.unlink()
        expected = ["image file is missing", str(image)]
    elif damage == "truncated image":
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 3])
        expected = ["truncated", str(image)]
    elif damage == "missing label":
        (root / "SegmentationClass" / f"{image_id}.png").unlink()
        expected = ["no class map found", "SegmentationClass"]
    else:
        write_xml(root / "Annotations" / f"{image_id}.xml", [])
        expected = ["no image-level label"]
    code, text = _check(config, capsys)
    assert code == 2, text
    problems = text[text.index("problem(s)"):]
    assert image_id in problems
    for fragment in expected:
        assert fragment in problems, (fragment, problems)


def test_a_wrong_root_gives_exit_2_naming_the_folder(
    voc: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = voc
    for wrong in (root.parent / "VOC2012", root / "JPEGImages"):  # absent; the wrong level of the devkit
        config = _config(tmp_path, {"kind": "voc12", "root": str(wrong), "train_split": "train",
                                    "infer_split": "train"})
        code, text = _check(config, capsys)
        assert code == 2 and str(wrong) in text, text


def test_official_voc_counts_apply_to_a_devkit_folder(
    real_samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    shutil.copytree(real_samples / "voc", root)
    config = _config(tmp_path, {"kind": "voc12", "root": str(root), "train_split": "val", "infer_split": "val"})
    code, text = _check(config, capsys)
    assert code == 2 and "4 ids, the official release has 1449" in text, text


def test_coco_layout_passes_and_flags_a_missing_image(
    real_samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(real_samples / "coco", tmp_path / "coco")
    config = _config(tmp_path, {"kind": "coco", "root": str(tmp_path / "coco" / "images"),
                                "annotation_file": str(tmp_path / "coco" / "annotations.json"),
                                "train_split": "all", "infer_split": "all"})
    code, text = _check(config, capsys)
    assert code == 0, text
    report = check_dataset(load_config([DEMO, config]), progress=False)
    (split,) = report.splits
    assert split.ids == 6 and split.without_labels == 1 and split.class_counts["person"] == 2
    (tmp_path / "coco" / "images" / "000000128372.jpg").unlink()
    code, text = _check(config, capsys)
    assert code == 2 and "000000128372" in text and "image file is missing" in text


def test_a_generated_synthetic_dataset_is_checked_like_a_voc_one(
    generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(generated / "VOC", tmp_path / "synthetic")
    overlay = tmp_path / "synthetic.yaml"
    overlay.write_text(yaml.safe_dump({"dataset": {"root": str(tmp_path / "synthetic"), "downstream_split": None,
                                                   "val_split": None}}))
    code, text = _check(overlay, capsys)
    assert code == 0 and "| train   | train+infer | 6" in text, text
    (tmp_path / "synthetic" / "SegmentationClass" / "syn_000004.png").unlink()
    code, text = _check(overlay, capsys)
    assert code == 2 and "syn_000004" in text and "no class map found" in text


def _run_config(config: Path) -> RunConfig:
    return load_config([DEMO, config])


def test_run_start_check_is_cached_until_a_file_changes(
    voc: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, config = voc
    run = _run_config(config).model_copy(update={"output_dir": tmp_path / "results"})
    calls = []
    real = check_module.check_dataset

    def counted(*arguments: object, **options: object) -> DatasetCheck:
        calls.append(1)
        return real(*arguments, **options)

    monkeypatch.setattr(check_module, "check_dataset", counted)
    first = check_at_run_start(run)
    assert first.ok and len(calls) == 1
    assert json.loads((tmp_path / "results" / "checked" / "data_check.json").read_text())["report"]["kind"] == "voc12"
    assert check_at_run_start(run) == first and len(calls) == 1  # cached
    image = root / "JPEGImages" / "syn_000001.jpg"
    image.write_bytes(image.read_bytes()[:200])  # one broken image: a warning, the run goes on
    assert not check_at_run_start(run).ok and len(calls) == 2
    for path in (root / "JPEGImages").glob("syn_*.jpg"):  # every image gone: the folder is wrong
        path.unlink()
    with pytest.raises(DatasetError, match="fails the check at the start of the run"):
        check_at_run_start(run)


def test_a_synthetic_dataset_not_generated_yet_is_not_flagged(tmp_path: Path) -> None:
    overlay = tmp_path / "later.yaml"
    overlay.write_text(yaml.safe_dump({"dataset": {"root": str(tmp_path / "not-yet")}}))
    run = load_config([DEMO, overlay])
    report = check_at_run_start(run.model_copy(update={"output_dir": tmp_path / "results"}))
    assert report.ok and report.splits == []


def test_a_run_with_a_wrong_root_fails_at_its_start(
    voc: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from irn_core.workflow_support import prepare

    root, _ = voc
    wrong = _config(tmp_path, {"kind": "voc12", "root": str(root / "JPEGImages"), "train_split": "train",
                               "infer_split": "train"})
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config", str(DEMO), "--config", str(wrong), "--dry-run"]) == 2
    assert "fails the check at the start of the run" in caplog.text and str(root / "JPEGImages") in caplog.text
    snakemake_config = load_config([DEMO, wrong]).model_dump(mode="json")
    with pytest.raises(DatasetError, match="fails the check at the start of the run"):  # what the Snakefile calls
        prepare(snakemake_config, DEMO)


def test_a_voc_folder_without_class_maps_reads_its_labels_and_passes_without_ground_truth(
    generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Your own photos in the VOC layout: JPEGImages, Annotations/*.xml and the id lists, no SegmentationClass."""
    root = tmp_path / "photos"
    shutil.copytree(generated / "VOC", root)
    for folder in ("SegmentationClass", "SegmentationObject"):
        shutil.rmtree(root / folder, ignore_errors=True)
    dataset = {"kind": "voc12", "root": str(root), "train_split": "train", "infer_split": "val"}
    config = _config(tmp_path, dataset)
    code, out = _check(config, capsys)
    assert code == 2 and "no class map found" in out  # evaluated by default: the val split's masks are missing
    with_option = yaml.safe_load(config.read_text())
    with_option["evaluation"] = {"ground_truth": False}
    config.write_text(yaml.safe_dump(with_option))
    code, out = _check(config, capsys)
    assert code == 0, out
    run = _run_config(config)
    from irn_core.steps.common import open_run_dataset

    voc = open_run_dataset(run)
    image_id = voc.ids("val")[0]
    assert len(voc.class_labels(image_id)) > 0  # from Annotations/<id>.xml
    with pytest.raises(DatasetError, match=rf"image id {image_id}: no class map found"):
        voc.semantic_mask(image_id)


def test_the_check_states_the_disk_of_the_run_products_from_its_own_figures(
    voc: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The disk table is the estimate's model fed with the checked split's median size and labels."""
    from irn_core.estimate import estimate_plan, product_disk_bytes, product_images

    _, config = voc
    code = main(["data", "check", "--config", str(DEMO), "--config", str(config), "--no-progress", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    run = load_config([DEMO, config])
    report = check_dataset(run, progress=False)
    largest = max((split for split in report.splits if split.sizes is not None), key=lambda split: split.checked)
    classes = sum(largest.class_counts.values()) / largest.checked
    plan, _ = estimate_plan(run)
    assert largest.split == "train_aug" and classes >= 1
    expected = product_disk_bytes(run, product_images(plan, run), (largest.sizes.height_median,
                                                                    largest.sizes.width_median), classes, classes)
    assert printed["disk_bytes"] == expected and expected["cam"] > expected["semantic"] > 0
    code, text = _check(config, capsys)
    assert code == 0 and "Disk of the run's products" in text and "| total" in text
