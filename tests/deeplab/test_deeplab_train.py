"""DeepLab v2 training: the recipe's sample, loss at the logit resolution, schedule, bad labels, a tiny run."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from irn_core.deeplab.train import (
    DeepLabTrainingDataset,
    DeepLabTrainSettings,
    MultiScaleInputs,
    build_deeplab,
    cross_entropy_terms,
    labels_at,
    pad_and_crop,
    parameter_groups,
    stepped_poly_schedule,
    train_deeplab,
)
from irn_core.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from fake_dataset import TinyDataset  # noqa: E402

TINY = DeepLabTrainSettings(
    backbone="resnet18", weights="none", batch_size=4, steps=16, crop_size=32, scales=(0.75, 1.0, 1.25),
    input_scales=(), learning_rate=1e-3, seed=0, log_every=100,
)


def test_labels_at_the_logit_resolution_follow_pillow_nearest() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (2, 37, 53)).astype(np.uint8)
    labels[0, :5] = 255
    for size in [(5, 7), (10, 14), (41, 41), (37, 53)]:
        expected = np.stack([np.asarray(Image.fromarray(label).resize(size[::-1], Image.Resampling.NEAREST))
                             for label in labels])
        np.testing.assert_array_equal(labels_at(torch.from_numpy(labels), size).numpy(), expected)


def test_pad_and_crop_pads_bottom_right_with_the_mean_and_ignore() -> None:
    rng = np.random.default_rng(0)
    image = np.ones((10, 50, 3), np.float32)
    label = np.full((10, 50), 3, np.uint8)
    cropped_image, cropped_label = pad_and_crop(image, label, 20, rng)
    assert cropped_image.shape == (20, 20, 3) and cropped_label.shape == (20, 20)
    # the image keeps its top rows (padding only below), the window moves along x only
    assert (cropped_image[:10] == 1).all() and (cropped_image[10:] == 0).all()
    assert (cropped_label[:10] == 3).all() and (cropped_label[10:] == 255).all()


def test_training_samples_are_augmented_crops_with_their_labels() -> None:
    dataset = TinyDataset(4)
    samples = DeepLabTrainingDataset(dataset, dataset.ids("train"), dataset.semantic_mask, crop_size=64,
                                     scales=(1.0,), flip=False, seed=0)
    sample = samples[1]
    assert sample["image"].shape == (3, 64, 64) and sample["label"].shape == (64, 64)
    assert sample["label"].dtype == torch.uint8
    # 40x48 at scale 1 padded to 64: the image sits top-left, the rest is mean colour / ignore
    np.testing.assert_array_equal(sample["label"][:40, :48].numpy(), dataset.semantic_mask("img001"))
    assert (sample["label"][40:] == 255).all() and (sample["label"][:, 48:] == 255).all()
    assert (sample["image"][:, 40:] == 0).all()
    # the same (seed, epoch, index) gives the same sample; another epoch another one
    jittered = DeepLabTrainingDataset(dataset, dataset.ids("train"), dataset.semantic_mask, crop_size=32,
                                      scales=(0.5, 1.5), flip=True, seed=0)
    first = jittered[2]
    assert torch.equal(first["image"], jittered[2]["image"])
    draws = set()
    for epoch in range(6):
        jittered.set_epoch(epoch)
        draws.add(int((jittered[2]["label"] != 255).sum()))
    assert len(draws) > 1
    # labels follow the image: bright squares of channel k are class k + 1 after any augmentation
    for epoch in range(4):
        jittered.set_epoch(epoch)
        sample = jittered[0]
        label = sample["label"].numpy()
        for class_id in range(3):
            inside = label == class_id + 1
            if inside.sum() > 4:
                assert float(sample["image"][class_id][torch.from_numpy(inside)].median()) > 1.5


def test_bad_label_maps_raise_errors_naming_the_image() -> None:
    dataset = TinyDataset(2)

    def out_of_range(image_id: str) -> np.ndarray:
        label = dataset.semantic_mask(image_id)
        label[0, 0] = 7
        return label

    samples = DeepLabTrainingDataset(dataset, ["img001"], out_of_range, crop_size=32, scales=(1.0,), flip=False,
                                     seed=0, label_description=lambda image_id: f"labels.h5 ({image_id})")
    with pytest.raises(InputError, match=r"labels\.h5 \(img001\) of image id 'img001' holds class ids \[7\]"):
        samples[0]

    def wrong_size(image_id: str) -> np.ndarray:
        return dataset.semantic_mask(image_id)[:30]

    samples = DeepLabTrainingDataset(dataset, ["img000"], wrong_size, crop_size=32, scales=(1.0,), flip=False, seed=0)
    with pytest.raises(InputError, match=r"image id 'img000' is 30x48, the image is 40x48"):
        samples[0]


def test_cross_entropy_ignores_255_and_handles_empty_batches() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    labels = torch.randint(0, 4, (2, 20, 24))
    labels[0, :8] = 255
    (term,) = cross_entropy_terms([logits], labels)
    expected = F.cross_entropy(logits, labels_at(labels, (5, 6)), ignore_index=255)
    torch.testing.assert_close(term, expected)
    (empty,) = cross_entropy_terms([logits], torch.full_like(labels, 255))
    assert float(empty.detach()) == 0.0
    empty.backward()
    assert torch.isfinite(logits.grad).all()


def test_multi_scale_inputs_give_every_scale_and_their_maximum() -> None:
    torch.manual_seed(0)
    model = build_deeplab(replace(TINY, input_scales=(0.5, 0.75)), 3, pretrained=False).eval()
    wrapper = MultiScaleInputs(model, (0.5, 0.75))
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        outputs = wrapper(x)
        assert [tuple(output.shape[2:]) for output in outputs] == [(8, 6), (4, 3), (6, 5), (8, 6)]
        small = F.interpolate(model(F.interpolate(x, size=(32, 24), mode="bilinear", align_corners=False)),
                              size=(8, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(outputs[1], model(F.interpolate(x, size=(32, 24), mode="bilinear",
                                                                align_corners=False)).detach())
    assert bool((outputs[3] >= outputs[0]).all() and (outputs[3] >= small - 1e-6).all())
    assert wrapper.term_names() == ["scale_1", "scale_0.5", "scale_0.75", "scale_max"]


def test_stepped_poly_schedule_and_parameter_groups() -> None:
    schedule = stepped_poly_schedule(100, 0.9, 10)
    assert [schedule(step) for step in (0, 9)] == [1.0, 1.0]
    assert schedule(10) == schedule(19) == pytest.approx(0.9**0.9)
    assert schedule(95) == pytest.approx(0.1**0.9) and schedule(100) == 0.0
    assert stepped_poly_schedule(100, 0.9, 1)(37) == pytest.approx(0.63**0.9)
    model = build_deeplab(TINY, 3, pretrained=False)
    groups = parameter_groups(model, TINY)
    assert [group.lr_multiplier for group in groups] == [1.0, 10.0, 20.0]
    assert [group.weight_decay for group in groups] == [None, None, 0.0]


def test_a_tiny_training_run_lowers_the_loss_and_handles_images_without_foreground() -> None:
    dataset = TinyDataset(8)

    def labels(image_id: str) -> np.ndarray:  # two images with no foreground at all
        label = dataset.semantic_mask(image_id)
        return np.zeros_like(label) if image_id in ("img000", "img004") else label

    model, record = train_deeplab(dataset, dataset.ids("train"), labels, TINY, device=torch.device("cpu"))
    assert record.steps == 16 and len(record.losses) == 16 and not model.training
    assert all(np.isfinite(record.losses))
    assert np.mean(record.losses[-4:]) < 0.6 * np.mean(record.losses[:4])
    assert record.learning_rates[0] == pytest.approx(1e-3) and record.learning_rates[9] == pytest.approx(1e-3)
    assert record.learning_rates[10] == pytest.approx(1e-3 * (1 - 10 / 16) ** 0.9)
