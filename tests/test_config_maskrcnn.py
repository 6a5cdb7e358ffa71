"""The maskrcnn config section and COCO splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from irn_core.config import RunConfig, load_config, stage_hash
from irn_core.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "config"


def test_defaults_are_the_authors_detectron_recipe() -> None:
    section = RunConfig().maskrcnn
    train = section.train
    assert section.backbone == "resnet50_fpn" and (section.min_size, section.max_size) == (512, 800)
    assert (train.steps, train.batch_size, train.learning_rate, train.lr_steps, train.lr_gamma) == (
        18000, 4, 0.01, (12000, 16000), 0.1)
    assert (train.weight_decay, train.momentum, train.warmup_steps, train.warmup_factor) == (1e-4, 0.9, 500, 1 / 3)
    assert section.model.roi.batch_size_per_image == 512 and section.model.rpn.pre_nms_top_n_train == 2000
    assert (section.infer.nms_threshold, section.infer.rpn_pre_nms_top_n, section.infer.rpn_post_nms_top_n) == (
        0.5, 1000, 1000)
    voc = load_config(CONFIGS / "voc12.yaml")
    assert voc.maskrcnn.train.model_dump(exclude={"num_workers"}) == RunConfig().maskrcnn.train.model_dump(
        exclude={"num_workers"})
    assert voc.maskrcnn.model == section.model and voc.maskrcnn.infer == section.infer
    assert voc.dataset.downstream_split == "train_aug" and voc.dataset.val_split == "val"


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"maskrcnn": {"train": {"lr_steps": [16000, 12000]}}}, "increasing"),
        ({"maskrcnn": {"train": {"steps": 100, "lr_steps": [100]}}}, "before the last step"),
        ({"maskrcnn": {"min_size": 900}}, "max_size"),
        ({"maskrcnn": {"backbone": "vgg16_fpn"}}, "maskrcnn.backbone"),
        ({"dataset": {"kind": "coco", "annotation_file": "a.json", "coco_splits": {
            "train": {"annotation_file": "t.json", "image_dir": "t"}}}}, "coco_splits"),
        ({"dataset": {"kind": "voc12", "coco_splits": {"train": {"annotation_file": "t.json", "image_dir": "t"}}}},
         "coco_splits"),
    ],
)
def test_invalid_sections_are_refused(update: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config([], update)


def test_coco_splits_replace_the_annotation_file() -> None:
    config = load_config([], {"dataset": {"kind": "coco", "coco_splits": {
        "train": {"annotation_file": "a/train.json", "image_dir": "a/train"},
        "val": {"annotation_file": "a/val.json", "image_dir": "a/val"}}, "train_split": "train"}})
    assert sorted(config.dataset.coco_splits) == ["train", "val"]
    assert config.dataset.source_paths() == [Path(path) for path in ("a/train", "a/train.json", "a/val", "a/val.json")]
    voc = load_config([], {"dataset": {"kind": "voc12", "root": "v", "sbd_root": "s"}})
    assert voc.dataset.source_paths() == [Path("v"), Path("s")]


def test_stage_hashes_follow_their_sections() -> None:
    base = RunConfig()
    schedule = load_config([], {"maskrcnn": {"train": {"learning_rate": 0.02}}})
    threshold = load_config([], {"maskrcnn": {"infer": {"score_threshold": 0.3}}})
    assert stage_hash(schedule, "train_maskrcnn") != stage_hash(base, "train_maskrcnn")
    assert stage_hash(schedule, "maskrcnn_infer") == stage_hash(base, "maskrcnn_infer")
    assert stage_hash(threshold, "maskrcnn_infer") != stage_hash(base, "maskrcnn_infer")
    assert stage_hash(threshold, "train_maskrcnn") == stage_hash(base, "train_maskrcnn")
