"""CAMNet: freezing, logits, CAMs; multiscale_cams against a direct restatement; select_classes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from irn_core.cam.infer import multiscale_cams, select_classes, train_range_base_scale
from irn_core.data.transforms import pil_resize
from irn_core.errors import InputError
from irn_core.models import CAMNet, backbones, build_backbone

from model_restatements import bilinear_resize, normalised_chw, pillow_bicubic


def _camnet(frozen_stages: int = 3, num_classes: int = 5, **backbone_options: object) -> CAMNet:
    torch.manual_seed(0)
    return CAMNet(build_backbone("resnet18", weights=None, **backbone_options), num_classes, frozen_stages=frozen_stages)


@pytest.mark.parametrize("frozen_stages", [3, 0])
def test_which_parameters_get_gradients(frozen_stages: int) -> None:
    model = _camnet(frozen_stages).train()
    logits = model(torch.randn(2, 3, 48, 40))
    assert logits.shape == (2, 5)
    torch.nn.functional.multilabel_soft_margin_loss(logits, torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 1]])).backward()
    for index, stage in enumerate(model.backbone.stages):
        for name, parameter in stage.named_parameters():
            frozen = index < frozen_stages
            assert parameter.requires_grad is not frozen, (index, name)
            if frozen:
                assert parameter.grad is None, (index, name)
            else:
                assert parameter.grad is not None and parameter.grad.abs().sum() > 0, (index, name)
    assert model.classifier.weight.grad is not None and model.classifier.bias is None

    backbone_group, classifier_group = model.parameter_groups()
    assert classifier_group == [model.classifier.weight]
    expected = [p for stage in model.backbone.stages[frozen_stages:] for p in stage.parameters()]
    assert [id(p) for p in backbone_group] == [id(p) for p in expected]
    if frozen_stages == 0:
        assert len(backbone_group) == len(list(model.backbone.parameters()))


def test_classifier_default_init_and_shape() -> None:
    model = _camnet(num_classes=20)
    weight = model.classifier.weight.detach()
    assert weight.shape == (20, 512, 1, 1)
    bound = 1 / math.sqrt(512)  # kaiming-uniform(a=sqrt 5) of a 1x1 conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert float(weight.abs().max()) <= bound and float(weight.abs().max()) > 0.9 * bound


def test_frozen_stages_stay_in_eval_mode() -> None:
    model = _camnet(3, frozen_batchnorm=False).train()
    assert [stage.training for stage in model.backbone.stages] == [False, False, False, True, True]
    stats = {name: buffer.clone() for name, buffer in model.backbone.named_buffers()}
    model(torch.randn(2, 3, 32, 32))
    changed = {name for name, buffer in model.backbone.named_buffers() if not torch.equal(buffer, stats[name])}
    assert changed and all(name.startswith(("stages.3.", "stages.4.")) for name in changed)


def test_logits_and_cams_match_restatement() -> None:
    model = _camnet().eval()
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        features = model.backbone(x)[-1]
        logits = model(x)
        cams = model.class_activation_maps(x)
    weight = model.classifier.weight[:, :, 0, 0]
    torch.testing.assert_close(logits, features.mean(dim=(2, 3)) @ weight.T)
    assert cams.shape == (2, 5, 3, 4)
    torch.testing.assert_close(cams, torch.einsum("bchw,kc->bkhw", features, weight).clamp(min=0))
    assert cams.min() >= 0 and cams.max() > 0


def _restated_multiscale(
    model: CAMNet, image: np.ndarray, scales: tuple[float, ...], base_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's make_cam, written out one image at a time with numpy resizing (the image first
    rescaled by ``base_scale``; the maps resized to the original image's grids)."""
    height, width = image.shape[:2]
    strided = np.zeros((model.num_classes, math.ceil(height / 4), math.ceil(width / 4)))
    high_res = np.zeros((model.num_classes, 16 * math.ceil(height / 16), 16 * math.ceil(width / 16)))
    for scale in scales:
        scaled = image if scale * base_scale == 1.0 else pillow_bicubic(image, scale * base_scale)
        with torch.no_grad():
            plain = model.class_activation_maps(torch.from_numpy(normalised_chw(scaled))[None])[0].numpy()
            mirrored_input = normalised_chw(np.ascontiguousarray(scaled[:, ::-1]))
            mirrored = model.class_activation_maps(torch.from_numpy(mirrored_input)[None])[0].numpy()
        summed = plain + mirrored[:, :, ::-1]
        strided += bilinear_resize(summed, strided.shape[1:])
        high_res += bilinear_resize(summed, high_res.shape[1:])
    return strided, high_res[:, :height, :width]


def test_multiscale_cams_match_restatement() -> None:
    model = _camnet()
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    scales = (1.0, 0.5, 1.5)
    cam_s4, high_res = multiscale_cams(model, image, scales=scales)
    assert cam_s4.shape == (5, 10, 14) and high_res.shape == (5, 37, 53)
    assert cam_s4.dtype == torch.float32 and high_res.dtype == torch.float32
    expected_s4, expected_high_res = _restated_multiscale(model, image, scales)
    np.testing.assert_allclose(cam_s4.numpy(), expected_s4, rtol=1e-4, atol=1e-4 * expected_s4.max())
    np.testing.assert_allclose(high_res.numpy(), expected_high_res, rtol=1e-4, atol=1e-4 * expected_high_res.max())
    assert expected_s4.max() > 0


def test_multiscale_cams_relative_to_a_base_scale() -> None:
    """``base_scale`` b: every scale s runs on the image rescaled by s b; the maps keep the image's size."""
    model = _camnet()
    image = np.random.default_rng(2).integers(0, 256, (75, 101, 3), dtype=np.uint8)
    cam_s4, high_res = multiscale_cams(model, image, scales=(1.0, 0.5), base_scale=0.5)
    assert cam_s4.shape == (5, 19, 26) and high_res.shape == (5, 75, 101)
    expected_s4, expected_high_res = _restated_multiscale(model, image, (1.0, 0.5), base_scale=0.5)
    np.testing.assert_allclose(cam_s4.numpy(), expected_s4, rtol=1e-4, atol=1e-4 * expected_s4.max())
    np.testing.assert_allclose(high_res.numpy(), expected_high_res, rtol=1e-4, atol=1e-4 * expected_high_res.max())
    # the image as stored is the base 1 (the reference); s b = 1 runs on it unchanged
    reference_s4, _ = multiscale_cams(model, image, scales=(1.0,))
    doubled_s4, _ = multiscale_cams(model, image, scales=(2.0,), base_scale=0.5)
    torch.testing.assert_close(doubled_s4, reference_s4)
    assert not torch.allclose(cam_s4, multiscale_cams(model, image, scales=(1.0, 0.5))[0])
    with pytest.raises(InputError, match="base_scale"):
        multiscale_cams(model, image, base_scale=0.0)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [(300, 200, 1.0), (240, 100, 1.0), (320, 320, 1.0), (480, 640, 0.5), (100, 120, 2.0), (640, 427, 0.5)],
)
def test_train_range_base_scale(height: int, width: int, expected: float) -> None:
    assert train_range_base_scale(height, width, (240, 320)) == pytest.approx(expected)


def test_train_range_base_scale_refuses_bad_sizes() -> None:
    with pytest.raises(InputError, match="range"):
        train_range_base_scale(0, 10, (240, 320))
    with pytest.raises(InputError, match="range"):
        train_range_base_scale(10, 10, (320, 240))


def test_multiscale_cams_single_scale_without_flip() -> None:
    model = _camnet()
    image = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    cam_s4, high_res = multiscale_cams(model, image, scales=(1.0,), flip=False)
    with torch.no_grad():
        cams = model.class_activation_maps(torch.from_numpy(normalised_chw(image))[None])[0].numpy()
    # 32 x 48 is a multiple of 16: high_res is the 2 x 3 map upsampled x16, cam_s4 upsampled x4
    np.testing.assert_allclose(high_res.numpy(), bilinear_resize(cams, (32, 48)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cam_s4.numpy(), bilinear_resize(cams, (8, 12)), rtol=1e-5, atol=1e-6)
    flipped_s4, _ = multiscale_cams(model, image, scales=(1.0,), flip=True)
    assert not torch.allclose(flipped_s4, cam_s4)


def test_multiscale_cams_rejects_bad_images() -> None:
    model = _camnet()
    with pytest.raises(InputError, match="uint8 RGB"):
        multiscale_cams(model, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(InputError, match="uint8 RGB"):
        multiscale_cams(model, np.zeros((8, 8), np.uint8))


def test_select_classes_normalises_each_channel_by_its_max() -> None:
    generator = torch.Generator().manual_seed(0)
    cam_s4 = torch.rand(6, 4, 5, generator=generator) * torch.tensor([1.0, 2, 3, 4, 5, 6]).view(6, 1, 1)
    high_res = torch.rand(6, 13, 17, generator=generator) * 7
    cam_k, high_res_k = select_classes(cam_s4, high_res, [1, 4])
    assert cam_k.shape == (2, 4, 5) and high_res_k.shape == (2, 13, 17)
    for position, class_id in enumerate([1, 4]):
        torch.testing.assert_close(cam_k[position], cam_s4[class_id] / (cam_s4[class_id].max() + 1e-5))
        torch.testing.assert_close(high_res_k[position], high_res[class_id] / (high_res[class_id].max() + 1e-5))
    assert float(cam_k.max()) < 1.0 and float(cam_k.amax(dim=(1, 2)).min()) > 0.9999
    empty_s4, empty_high_res = select_classes(cam_s4, high_res, [])
    assert empty_s4.shape == (0, 4, 5) and empty_high_res.shape == (0, 13, 17)
    zeros_s4, _ = select_classes(torch.zeros(2, 3, 3), torch.zeros(2, 5, 5), torch.tensor([0]))
    assert torch.equal(zeros_s4, torch.zeros(1, 3, 3))
    with pytest.raises(InputError, match="ascending"):
        select_classes(cam_s4, high_res, [4, 1])
    with pytest.raises(InputError, match="out of range"):
        select_classes(cam_s4, high_res, [6])


def test_camnet_on_efficientnet_lite0_shapes() -> None:
    torch.manual_seed(0)
    model = CAMNet(build_backbone("efficientnet_lite0", weights=None), 3)
    assert isinstance(model.classifier, nn.Conv2d) and model.classifier.in_channels == 1280
    cam_s4, high_res = multiscale_cams(model, np.zeros((21, 30, 3), np.uint8), scales=(1.0, 0.5))
    assert cam_s4.shape == (3, 6, 8) and high_res.shape == (3, 21, 30)


def test_imagenet_cam_of_a_real_bus_lies_on_the_bus(real_samples: Path) -> None:
    """Lite0 ImageNet backbone + its ImageNet classifier as a CAM classifier: the 'school bus' map
    (class 779) of a real VOC image peaks inside the annotated bus (VOC label 6)."""
    state = backbones.read_state_dict(backbones.efficientnet_lite0_imagenet_file())
    model = CAMNet(build_backbone("efficientnet_lite0"), 1000)
    with torch.no_grad():
        model.classifier.weight.copy_(state["_fc.weight"][:, :, None, None])
    image = np.asarray(Image.open(real_samples / "voc/JPEGImages/2011_000025.jpg").convert("RGB"))
    label = np.asarray(Image.open(real_samples / "voc/SegmentationClass/2011_000025.png"))
    image, label = pil_resize(image, (188, 250), 3), pil_resize(label, (188, 250), 0)
    cam_s4, high_res = multiscale_cams(model, image, scales=(1.0,))
    _, bus_map = select_classes(cam_s4, high_res, [779])
    bus_map = bus_map[0].numpy()
    bus = label == 6
    assert bus[bus_map > 0.5].mean() > 0.95
    assert bus_map[bus].mean() > 2 * bus_map[~bus & (label != 255)].mean()
