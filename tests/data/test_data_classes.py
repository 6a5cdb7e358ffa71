"""Class tables and the dataset protocol/factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from irn_core.data.classes import VOC_CLASSES, load_class_names
from irn_core.data.coco import COCODataset
from irn_core.data.registry import SegmentationDataset, open_dataset
from irn_core.data.voc import VOCDataset
from irn_core.errors import ConfigError, DatasetError


def test_voc_classes_in_reference_order(repo_root: Path) -> None:
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[11] == "dog" and VOC_CLASSES[19] == "tvmonitor"
    assert load_class_names(repo_root / "resources" / "voc12_classes.txt") == list(VOC_CLASSES)


def test_load_class_names(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("# comment\n cat \n\ndog\n")
    assert load_class_names(path) == ["cat", "dog"]
    path.write_text("cat\ndog\ncat\n")
    with pytest.raises(DatasetError, match=r"classes\.txt:3: class name 'cat' listed twice"):
        load_class_names(path)
    path.write_text("\n")
    with pytest.raises(DatasetError, match="empty"):
        load_class_names(path)
    with pytest.raises(DatasetError, match="not found"):
        load_class_names(tmp_path / "absent.txt")


def test_open_dataset_and_protocol(real_samples: Path) -> None:
    voc = open_dataset("voc12", root=real_samples / "voc")
    assert isinstance(voc, VOCDataset) and isinstance(voc, SegmentationDataset)
    coco = open_dataset(
        "coco", image_dir=real_samples / "coco" / "images", annotation_file=real_samples / "coco" / "annotations.json"
    )
    assert isinstance(coco, COCODataset) and isinstance(coco, SegmentationDataset)
    with pytest.raises(ConfigError, match="unknown dataset kind 'cityscapes'"):
        open_dataset("cityscapes", root="x")
    with pytest.raises(ConfigError, match="unknown options"):
        open_dataset("voc12", root=real_samples / "voc", image_dir="x")
    with pytest.raises(ConfigError, match="missing options"):
        open_dataset("coco", image_dir="x")
