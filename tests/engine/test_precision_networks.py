"""compute.precision on CPU for every network: a tiny training step under bfloat16 gives finite float32
losses within a bound of float32's; inference under bfloat16 stays close to float32; the float32
path is bit for bit the loop without the autocast context and the gradient scaler."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np
import pytest
import torch

from irn_core.cam.infer import multiscale_cams
from irn_core.cam.train import CAMTrainSettings, train_cam
from irn_core.deeplab.infer import ensemble_probabilities
from irn_core.deeplab.train import DeepLabTrainSettings, train_deeplab
from irn_core.engine import training
from irn_core.engine.runtime import autocast
from irn_core.irnet.infer import boundary_and_displacement
from irn_core.irnet.train import IRNetTrainSettings, train_irnet
from irn_core.maskrcnn.infer import predict_instances
from irn_core.maskrcnn.train import (
    GroundTruthInstances,
    MaskRCNNTrainingDataset,
    MaskRCNNTrainSettings,
    train_mask_rcnn,
)
from irn_core.models.backbones import build_backbone
from irn_core.models.irnet import IRNet
from irn_core.models.maskrcnn import build_mask_rcnn
from irn_core.relations.losses import affinity_displacement_loss
from irn_core.relations.path_index import path_index

from .fake_dataset import TinyDataset

CPU = torch.device("cpu")
CAM = CAMTrainSettings(
    backbone="resnet18", weights="none", frozen_batchnorm=True, frozen_stages=0, batch_size=4, epochs=1,
    crop_size=32, resize_long=(32, 48), learning_rate=0.05, head_lr_multiplier=10.0, weight_decay=1e-4,
    momentum=0.9, poly_power=0.9, num_workers=0, seed=3, max_steps=2,
)
IRNET = IRNetTrainSettings(
    batch_size=4, epochs=1, crop_size=48, scale_range=(0.8, 1.2), radius=5, learning_rate=0.1,
    head_lr_multiplier=10.0, weight_decay=1e-4, momentum=0.9, poly_power=0.9, num_workers=0, seed=5, max_steps=2,
)
DEEPLAB = DeepLabTrainSettings(
    backbone="resnet18", weights="none", batch_size=4, steps=2, crop_size=32, scales=(0.75, 1.25),
    input_scales=(0.75,), learning_rate=1e-3, seed=7,
)
MASKRCNN = MaskRCNNTrainSettings(batch_size=2, learning_rate=0.01, lr_steps=(30,), steps=2, num_workers=0, seed=0,
                                 warmup_steps=1, log_every=10)
MASKRCNN_SIZES = {"fpn_channels": 16, "box_head_channels": 32, "mask_head_channels": 16, "min_size": 40,
                  "max_size": 48, "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100,
                  "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50, "roi_batch_size_per_image": 32}


@pytest.fixture(scope="module")
def dataset() -> TinyDataset:
    return TinyDataset(8)


def _correlation(first: torch.Tensor, second: torch.Tensor) -> float:
    return float(np.corrcoef(first.flatten().double().numpy(), second.flatten().double().numpy())[0, 1])


def _check_first_loss(float32: list[float], bfloat16: list[float], *, tolerance: float) -> None:
    """Both runs start from the same weights and batch, so their first losses differ only by the
    arithmetic: finite, close, and not equal (bfloat16 really ran)."""
    assert np.isfinite(bfloat16).all()
    assert bfloat16[0] != float32[0]
    assert abs(bfloat16[0] - float32[0]) <= tolerance * abs(float32[0]), (float32[0], bfloat16[0])


def test_cam_network_under_bfloat16(dataset: TinyDataset) -> None:
    ids = dataset.ids("train")
    model32, record32 = train_cam(dataset, ids, CAM, device=CPU)
    model16, record16 = train_cam(dataset, ids, replace(CAM, precision="bfloat16"), device=CPU)
    _check_first_loss(record32.losses, record16.losses, tolerance=0.02)
    assert all(parameter.dtype == torch.float32 for parameter in model16.parameters())
    image = dataset.image("img001")
    cams32, high_res32 = multiscale_cams(model32, image, scales=(1.0, 0.5))
    with autocast("bfloat16", CPU):
        cams16, high_res16 = multiscale_cams(model32, image, scales=(1.0, 0.5))
    assert high_res16.dtype == torch.bfloat16  # what the step casts to float32 before storing
    assert _correlation(high_res32, high_res16.float()) > 0.99
    assert _correlation(cams32, cams16.float()) > 0.99
    peak = float(high_res32.abs().max())
    assert float((high_res32 - high_res16.float()).abs().max()) < 0.05 * peak


def test_irnet_under_bfloat16(dataset: TinyDataset) -> None:
    ids = dataset.ids("train")
    records = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = IRNet(build_backbone("resnet18", weights="none"))
        records[precision] = train_irnet(model, dataset, ids, dataset.ir_label, replace(IRNET, precision=precision),
                                         device=CPU)
    _check_first_loss(records["float32"].losses, records["bfloat16"].losses, tolerance=0.05)
    terms = records["bfloat16"].loss_terms
    assert {"pos_bg", "pos_fg", "neg", "displacement_fg", "displacement_bg"} <= set(terms)
    for term, values in terms.items():
        assert np.isfinite(values).all(), term
    image = dataset.image("img002")
    boundary32, displacement32 = boundary_and_displacement(model, image, pad_to=64)
    with autocast("bfloat16", CPU):
        boundary16, displacement16 = boundary_and_displacement(model, image, pad_to=64)
    assert boundary16.shape == boundary32.shape
    assert float((boundary16.float() - boundary32).abs().max()) < 0.02  # probabilities
    assert _correlation(displacement32, displacement16.float()) > 0.99


def test_irnet_pair_losses_stay_float32_under_autocast(dataset: TinyDataset) -> None:
    """The loss step casts IRNet's outputs to float32; the pair losses then run no autocast-listed
    operation, so under bfloat16 autocast they are the float32 losses exactly."""
    generator = torch.Generator().manual_seed(0)
    boundary_logits = torch.randn(2, 1, 10, 12, generator=generator)
    displacement = torch.randn(2, 2, 10, 12, generator=generator)
    labels = torch.from_numpy(np.stack([dataset.ir_label(f"img00{index}")[:40:4, :48:4] for index in range(2)]))
    index = path_index(5)
    plain = affinity_displacement_loss(boundary_logits, displacement, labels, index)
    with autocast("bfloat16", CPU):
        autocast_losses = affinity_displacement_loss(boundary_logits, displacement, labels, index)
    assert plain["total"] > 0
    for name, value in plain.items():
        assert autocast_losses[name].dtype == torch.float32 and torch.equal(autocast_losses[name], value), name


def test_deeplab_under_bfloat16(dataset: TinyDataset) -> None:
    ids = dataset.ids("train")
    model32, record32 = train_deeplab(dataset, ids, dataset.semantic_mask, DEEPLAB, device=CPU)
    _, record16 = train_deeplab(dataset, ids, dataset.semantic_mask, replace(DEEPLAB, precision="bfloat16"),
                                device=CPU)
    _check_first_loss(record32.losses, record16.losses, tolerance=0.02)
    image = dataset.image("img003")
    probabilities32 = ensemble_probabilities(model32, image, scales=(1.0, 0.5))
    with autocast("bfloat16", CPU):
        probabilities16 = ensemble_probabilities(model32, image, scales=(1.0, 0.5)).float()
    torch.testing.assert_close(probabilities16.sum(0), torch.ones_like(probabilities16[0]), atol=0.02, rtol=0)
    assert float((probabilities16 - probabilities32).abs().max()) < 0.02


def test_mask_rcnn_under_bfloat16(dataset: TinyDataset) -> None:
    samples = MaskRCNNTrainingDataset(dataset, dataset.ids("train"), GroundTruthInstances(dataset), num_classes=3,
                                      seed=0)
    records, models = {}, {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        models[precision] = build_mask_rcnn(backbone="resnet18_fpn", num_classes=3, weights="none", frozen_stages=0,
                                            **MASKRCNN_SIZES)
        records[precision] = train_mask_rcnn(models[precision], samples, replace(MASKRCNN, precision=precision),
                                             device=CPU)
    # the proposals are sampled from bfloat16 objectness scores: a looser bound than the dense networks'
    _check_first_loss(records["float32"].losses, records["bfloat16"].losses, tolerance=0.1)
    for term, values in records["bfloat16"].loss_terms.items():
        assert np.isfinite(values).all(), term
    with autocast("bfloat16", CPU):
        found = predict_instances(models["bfloat16"], dataset.image("img000"))
    assert found.scores.dtype == np.float32 and found.masks.dtype == bool
    assert found.masks.shape[1:] == (40, 48)


class _PlainScaler:
    """What the loop did before the gradient scaler: backward the loss, step the optimizer."""

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def update(self) -> None:
        pass


def test_float32_training_is_bit_identical_to_the_loop_without_autocast_and_scaler(
    dataset: TinyDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = dataset.ids("train")
    model, record = train_cam(dataset, ids, CAM, device=CPU)
    monkeypatch.setattr(training, "autocast", lambda precision, device: contextlib.nullcontext())
    monkeypatch.setattr(training, "gradient_scaler", lambda precision, device: _PlainScaler())
    plain_model, plain_record = train_cam(dataset, ids, CAM, device=CPU)
    assert record.losses == plain_record.losses
    for (name, value), plain in zip(model.state_dict().items(), plain_model.state_dict().values(), strict=True):
        assert torch.equal(value, plain), name


def test_channels_last_training_matches_the_contiguous_one(dataset: TinyDataset) -> None:
    ids = dataset.ids("train")
    model, record = train_cam(dataset, ids, CAM, device=CPU)
    channels_last, record_channels_last = train_cam(dataset, ids, replace(CAM, channels_last=True), device=CPU)
    assert channels_last.classifier.weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(record_channels_last.losses, record.losses, rtol=1e-4)
    for (name, value), other in zip(model.state_dict().items(), channels_last.state_dict().values(), strict=True):
        torch.testing.assert_close(other, value, atol=1e-4, rtol=1e-3, msg=name)
