"""The typed config: shipped files validate, presets resolve, bad values fail clearly, schema in sync."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irn_core.config import (
    RunConfig,
    load_config,
    schema,
    stage_config,
    stage_hash,
    validate_config,
)
from irn_core.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@pytest.mark.parametrize("name", ["config.yaml", "voc12.yaml", "coco.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    config = load_config(CONFIG_DIR / name)
    assert isinstance(config, RunConfig)


def test_voc12_config_holds_the_papers_settings() -> None:
    config = load_config(CONFIG_DIR / "voc12.yaml")
    assert config.dataset.train_split == "train_aug" and config.dataset.infer_split == "train"
    assert config.cam.train.crop_size == 512 and config.irnet.train.crop_size == 512
    assert (config.cam.train.batch_size, config.irnet.train.batch_size) == (16, 32)
    assert (config.cam.train.epochs, config.irnet.train.epochs) == (5, 3)
    assert (config.irnet.train.radius, config.random_walk.radius) == (10, 5)
    assert config.random_walk.beta == 10 and config.random_walk.exp_times == 8
    assert config.cam.infer.scales == (1.0, 0.5, 1.5, 2.0)
    assert (config.ir_labels.fg_threshold, config.ir_labels.bg_threshold) == (0.30, 0.05)
    assert config.cam.eval_threshold == 0.15
    assert config.random_walk.semantic_bg_threshold == config.random_walk.instance_bg_threshold == 0.25
    assert config.instances.cluster_threshold == 2.5 and config.instances.centroid_iterations == 300
    assert config.cam.backbone.name == config.irnet.backbone.name == "resnet50"


def test_voc12_config_holds_the_deeplab_recipe() -> None:
    config = load_config(CONFIG_DIR / "voc12.yaml")
    deeplab = config.deeplab
    assert deeplab.enabled and config.dataset.downstream_split == "train_aug" and config.dataset.val_split == "val"
    assert (deeplab.backbone.name, deeplab.backbone.output_stride) == ("resnet50", 8)
    assert deeplab.atrous_rates == (6, 12, 18, 24)
    train = deeplab.train
    assert (train.steps, train.batch_size, train.crop_size) == (20000, 10, 321)
    assert train.scales == (0.5, 0.75, 1.0, 1.25, 1.5) and train.input_scales == (0.5, 0.75) and train.flip
    optimizer = train.optimizer
    assert (optimizer.learning_rate, optimizer.momentum, optimizer.weight_decay, optimizer.poly_power) == (
        2.5e-4, 0.9, 5e-4, 0.9)
    assert (optimizer.aspp_weight_lr_multiplier, optimizer.aspp_bias_lr_multiplier) == (10, 20)
    assert optimizer.aspp_bias_weight_decay == 0 and optimizer.lr_decay_every == 10
    assert deeplab.infer.scales == (0.5, 1.0, 1.5, 2.0) and deeplab.infer.flip
    crf = deeplab.infer.crf
    assert (crf.iterations, crf.pos_w, crf.pos_xy_std, crf.bi_w, crf.bi_xy_std, crf.bi_rgb_std) == (10, 3, 1, 4, 67, 3)
    # the shipped file spells out the defaults (the recipe), only the data loader workers differ
    shipped = config.deeplab.model_dump()
    shipped["train"]["num_workers"] = 0
    assert shipped == {**RunConfig().deeplab.model_dump(), "enabled": True}


def test_presets_resolve_the_momentum_quirk() -> None:
    paper = validate_config({"preset": "paper"})
    fixed = validate_config({"preset": "fixed"})
    assert paper.momentum(paper.cam.train.optimizer) == 1e-4
    assert fixed.momentum(fixed.irnet.train.optimizer) == 0.9
    explicit = validate_config({"preset": "paper", "cam": {"train": {"optimizer": {"momentum": 0.5}}}})
    assert explicit.momentum(explicit.cam.train.optimizer) == 0.5


def test_presets_resolve_the_cam_storage_precision() -> None:
    assert validate_config({"preset": "paper"}).cam_float16 is False
    assert validate_config({"preset": "fixed"}).cam_float16 is True
    assert validate_config({"preset": "paper", "cam": {"infer": {"float16": True}}}).cam_float16 is True


def test_files_merge_left_to_right(tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text("name: other\ncam:\n  train:\n    epochs: 2\n")
    config = load_config([CONFIG_DIR / "voc12.yaml", override])
    assert config.name == "other" and config.cam.train.epochs == 2
    assert config.cam.train.batch_size == 16  # kept from voc12.yaml


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cam": {"train": {"batch_size": 0}}}, "cam.train.batch_size"),
        ({"random_walk": {"betaa": 10}}, "random_walk.betaa"),
        ({"preset": "papr"}, "preset"),
        ({"irnet": {"train": {"crop_size": 510}}}, "multiple of 4"),
        ({"dataset": {"kind": "coco"}}, "annotation_file"),
        ({"cam": {"train": {"resize_long": [640, 320]}}}, "resize_long"),
        ({"name": "a/b"}, "name"),
    ],
)
def test_bad_values_are_reported_with_their_location(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(data)


def test_unreadable_files_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listing)


def test_stage_hashes_change_only_with_their_sections() -> None:
    base = validate_config({})
    walk = validate_config({"random_walk": {"beta": 8}})
    assert stage_hash(base, "pseudo_labels") != stage_hash(walk, "pseudo_labels")
    assert stage_hash(base, "train_cam") == stage_hash(walk, "train_cam")
    assert stage_hash(base, "ir_labels") == stage_hash(walk, "ir_labels")
    assert set(stage_config(base, "irn_infer")) == {"shard_size", "irnet.infer", "random_walk.radius"}
    # a shard file of the same name holds other ids under another shard size: per-shard stages re-run
    resharded = validate_config({"shard_size": 7})
    for stage in ("make_cam", "ir_labels", "irn_infer", "pseudo_labels", "plan"):
        assert stage_hash(base, stage) != stage_hash(resharded, stage), stage
    assert stage_hash(base, "train_cam") == stage_hash(resharded, "train_cam")


def test_shipped_schema_file_is_in_sync() -> None:
    shipped = json.loads((CONFIG_DIR / "schema.json").read_text())
    assert shipped == json.loads(json.dumps(schema())), "regenerate: irn show-config --schema > config/schema.json"


def test_imported_cams_cannot_lend_their_backbone() -> None:
    with pytest.raises(ConfigError, match="backbone_init 'cam'"):
        validate_config({"cam": {"import_dir": "npy"}, "irnet": {"backbone_init": "cam"}})


def test_cam_base_size_rescales_only_images_outside_the_training_range() -> None:
    from irn_core.steps.cam import cam_base_scale

    reference = validate_config({"cam": {"train": {"resize_long": [240, 320]}}})
    assert reference.cam.infer.base_size == "original"
    assert load_config(CONFIG_DIR / "voc12.yaml").cam.infer.base_size == "original"
    assert cam_base_scale(reference, 480, 640) == 1.0
    matched = validate_config({"cam": {"train": {"resize_long": [240, 320]}, "infer": {"base_size": "train_range"}}})
    assert cam_base_scale(matched, 480, 640) == 0.5  # the long side 640 brought to 320
    assert cam_base_scale(matched, 256, 300) == 1.0  # inside the range: as stored
    assert cam_base_scale(matched, 100, 120) == 2.0  # below: brought up to 240
    with pytest.raises(ConfigError, match="base_size"):
        validate_config({"cam": {"infer": {"base_size": "largest"}}})
