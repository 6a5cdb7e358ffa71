"""Mask R-CNN training samples, bad input, empty images, a tiny training run, inference."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from irn_core.errors import DatasetError, TrainingError
from irn_core.maskrcnn.infer import predict_instances
from irn_core.maskrcnn.train import (
    GroundTruthInstances,
    MaskRCNNTrainingDataset,
    MaskRCNNTrainSettings,
    StoredInstances,
    mask_boxes,
    mask_rcnn_loss_step,
    train_mask_rcnn,
    unpack_batch,
)
from irn_core.models.maskrcnn import build_mask_rcnn
from irn_core.store import ShardWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from fake_dataset import TinyDataset  # noqa: E402

SMALL = {"fpn_channels": 16, "box_head_channels": 32, "mask_head_channels": 16, "min_size": 40, "max_size": 48,
         "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100,
         "rpn_post_nms_top_n_test": 50, "roi_batch_size_per_image": 32}


class FixedInstances:
    """An instance source with given masks and class ids per image (for bad-input tests)."""

    def __init__(self, items: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.items = items

    def read(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        return self.items[image_id]

    def count(self, image_id: str) -> int:
        return len(self.items[image_id][1])

    def describe(self, image_id: str) -> str:
        return "labels.h5"


def _tiny_model(num_classes: int = 3, **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_mask_rcnn(backbone="resnet18_fpn", num_classes=num_classes, weights="none", frozen_stages=0,
                           **{**SMALL, **options})


def test_mask_boxes_are_pixel_edge_boxes() -> None:
    mask = np.zeros((2, 6, 8), bool)
    mask[0, 1:4, 2:7] = True
    mask[1, 5, 0] = True
    np.testing.assert_array_equal(mask_boxes(mask), [[2, 1, 7, 4], [0, 5, 1, 6]])


def test_samples_pad_and_flip_images_masks_and_boxes_together() -> None:
    dataset = TinyDataset(4)
    ids = dataset.ids("train")
    flipped = MaskRCNNTrainingDataset(dataset, ids, GroundTruthInstances(dataset), num_classes=3, seed=0, flip=True)
    plain = MaskRCNNTrainingDataset(dataset, ids, GroundTruthInstances(dataset), num_classes=3, seed=0, flip=False)
    assert flipped.canvas == (40, 48) and flipped.max_instances == 2
    saw_flip = False
    for epoch in range(3):
        flipped.set_epoch(epoch)
        for index, image_id in enumerate(ids):
            sample = flipped[index]
            reference = plain[index]
            masks, class_ids = dataset.instance_masks(image_id)
            count = int(sample["count"])
            assert count == len(class_ids) and sample["masks"].shape == (2, 40, 48)
            np.testing.assert_array_equal(sample["labels"][:count].numpy(), class_ids + 1)
            image, mask = sample["image"].numpy(), sample["masks"][:count].numpy()
            if not np.array_equal(image, reference["image"].numpy()):
                saw_flip = True
                image, mask = image[:, :, ::-1], mask[:, :, ::-1]
            np.testing.assert_array_equal(image, dataset.image(image_id).transpose(2, 0, 1))
            np.testing.assert_array_equal(mask, masks)
            np.testing.assert_array_equal(sample["boxes"][:count].numpy(), mask_boxes(sample["masks"][:count].numpy()))
    assert saw_flip


def test_bad_instances_raise_an_error_naming_the_image() -> None:
    dataset = TinyDataset(2)
    first, second = dataset.ids("train")
    good = dataset.instance_masks(second)
    out_of_range = FixedInstances({first: (dataset.instance_masks(first)[0], np.array([7] * 2)[: len(
        dataset.instance_masks(first)[1])]), second: good})
    samples = MaskRCNNTrainingDataset(dataset, [first, second], out_of_range, num_classes=3, seed=0)
    with pytest.raises(DatasetError, match=f"labels.h5: image id '{first}': class id 7 outside 0..2"):
        samples[0]
    wrong_size = FixedInstances({first: (np.ones((1, 30, 48), bool), np.array([0])), second: good})
    samples = MaskRCNNTrainingDataset(dataset, [first, second], wrong_size, num_classes=3, seed=0)
    with pytest.raises(DatasetError, match=f"image id '{first}': instance masks have shape \\(1, 30, 48\\)"):
        samples[0]


def test_stored_pseudo_labels_leave_out_low_scores(tmp_path: Path) -> None:
    dataset = TinyDataset(2)
    path = tmp_path / "instances.h5"
    with ShardWriter(path, product="instances", config_hash="x", shard_index=0) as writer:
        for image_id in dataset.ids("train"):
            masks, class_ids = dataset.instance_masks(image_id)
            scores = np.zeros(len(class_ids), np.float32)
            scores[0] = 0.5  # the others are fragments (score 0)
            writer.add(image_id, {"masks_s1": masks, "class_ids": class_ids, "scores": scores})
    source = StoredInstances([path], min_score=1e-5)
    for image_id in dataset.ids("train"):
        masks, class_ids = source.read(image_id)
        assert source.count(image_id) == 1 == len(masks)
        np.testing.assert_array_equal(masks[0], dataset.instance_masks(image_id)[0][0])
    assert source.describe(dataset.ids("train")[0]) == str(path)


def test_images_without_instances_train_on_background_only() -> None:
    """torchvision accepts empty targets: an image without instances gives finite losses (no box or mask
    loss from it) and gradients."""
    dataset = TinyDataset(2)
    ids = dataset.ids("train")
    empty = FixedInstances({image_id: (np.zeros((0, 40, 48), bool), np.zeros(0, np.int64)) for image_id in ids})
    samples = MaskRCNNTrainingDataset(dataset, ids, empty, num_classes=3, seed=0)
    assert samples.max_instances == 0 and samples.empty_images == 2
    batch = torch.utils.data.default_collate([samples[0], samples[1]])
    images, targets = unpack_batch(batch)
    assert targets[0]["boxes"].shape == (0, 4) and targets[0]["masks"].shape == (0, 40, 48)
    model = _tiny_model()
    model.train()
    losses = mask_rcnn_loss_step(model)(model, batch)
    assert all(torch.isfinite(value) for value in losses.values())
    values = {name: float(value.detach()) for name, value in losses.items()}
    assert values["box_reg"] == 0.0 and values["mask"] == 0.0 and values["classifier"] > 0
    losses["total"].backward()
    assert any(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in model.parameters())


def test_a_tiny_training_run_lowers_the_loss_and_follows_the_step_schedule() -> None:
    dataset = TinyDataset(8)
    samples = MaskRCNNTrainingDataset(dataset, dataset.ids("train"), GroundTruthInstances(dataset), num_classes=3,
                                      seed=0)
    model = _tiny_model()
    settings = MaskRCNNTrainSettings(batch_size=4, learning_rate=0.02, lr_steps=(30,), steps=36, num_workers=0,
                                     seed=0, warmup_steps=6, warmup_factor=0.25, log_every=12)
    record = train_mask_rcnn(model, samples, settings, device=torch.device("cpu"))
    assert record.steps == 36 and set(record.loss_terms) == {
        "total", "classifier", "box_reg", "mask", "objectness", "rpn_box_reg"}
    def early_late(term: str) -> tuple[float, float]:
        values = record.loss_terms[term]
        return float(np.mean(values[:6])), float(np.mean(values[-6:]))

    for term, factor in (("total", 0.85), ("objectness", 0.8), ("rpn_box_reg", 0.5), ("mask", 0.6)):
        early, late = early_late(term)
        assert late < factor * early, (term, early, late)
    rates = record.learning_rates
    assert rates[0] == pytest.approx(0.02 * 0.25) and rates[3] == pytest.approx(0.02 * (0.25 + 0.75 * 3 / 6))
    assert rates[10] == pytest.approx(0.02) and rates[30] == pytest.approx(0.002)

    assert not model.training
    image = dataset.image("img000")
    found = predict_instances(model, image)
    assert found.masks.shape == (len(found.scores), 40, 48) and found.masks.dtype == bool
    assert found.class_ids.dtype == np.int64 and ((found.class_ids >= 0) & (found.class_ids < 3)).all()
    assert (np.diff(found.scores) <= 0).all() and (found.scores >= 0.05).all()
    unchanged = replace(settings, steps=36)
    assert unchanged.bias_lr_multiplier == 2.0 and unchanged.bias_weight_decay is False


def test_a_diverging_loss_stops_training_with_a_clear_error() -> None:
    dataset = TinyDataset(4)
    samples = MaskRCNNTrainingDataset(dataset, dataset.ids("train"), GroundTruthInstances(dataset), num_classes=3,
                                      seed=0)
    model = _tiny_model()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.fill_(float("nan"))
    model.train()
    batch = torch.utils.data.default_collate([samples[0], samples[1]])
    with pytest.raises(TrainingError, match="not finite.*sample indices \\[0, 1\\]"):
        mask_rcnn_loss_step(model)(model, batch)
