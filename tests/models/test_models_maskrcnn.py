"""Mask R-CNN builder: pyramid strides, the paper architecture = torchvision's maskrcnn_resnet50_fpn,
keyed sampling."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

from irn_core.errors import ConfigError
from irn_core.models.backbones import build_backbone
from irn_core.models.maskrcnn import (
    FeaturePyramidBackbone,
    KeyedSampler,
    build_mask_rcnn,
    parameter_groups,
    restore_last_stride,
)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0", "efficientnet_lite2"])
def test_pyramid_strides_4_to_64(name: str) -> None:
    torch.manual_seed(0)
    pyramid = FeaturePyramidBackbone(restore_last_stride(build_backbone(name, weights="none")), out_channels=16)
    with torch.no_grad():
        features = pyramid(torch.randn(1, 3, 64, 96))
    assert list(features) == ["0", "1", "2", "3", "pool"]
    assert [tuple(value.shape[2:]) for value in features.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert all(value.shape[1] == 16 for value in features.values())


def test_frozen_stages_and_batchnorm_get_no_gradient() -> None:
    model = build_mask_rcnn(backbone="resnet18_fpn", num_classes=3, weights="none", frozen_stages=2,
                            fpn_channels=16, box_head_channels=32, mask_head_channels=16)
    body = model.backbone.body
    assert not any(parameter.requires_grad for stage in body.stages[:2] for parameter in stage.parameters())
    assert any(parameter.requires_grad for parameter in body.stages[2].parameters())
    batchnorms = [module for module in body.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert batchnorms and not any(parameter.requires_grad for module in batchnorms for parameter in module.parameters())
    weights, biases = parameter_groups(model)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    assert all(names[id(parameter)].endswith(".bias") for parameter in biases) and biases
    assert not any(names[id(parameter)].endswith(".bias") for parameter in weights)


def _torchvision_name(name: str) -> str:
    """Our state-dict key -> torchvision maskrcnn_resnet50_fpn's."""
    stages = {"0.0": "conv1", "0.1": "bn1", "1": "layer1", "2": "layer2", "3": "layer3", "4": "layer4"}
    prefix = "backbone.body.stages."
    if not name.startswith(prefix):
        return name
    rest = name[len(prefix):]
    for ours, theirs in stages.items():
        if rest.startswith(ours + "."):
            return f"backbone.body.{theirs}.{rest[len(ours) + 1:]}"
    raise AssertionError(name)


def test_resnet50_fpn_is_torchvisions_maskrcnn_resnet50_fpn() -> None:
    """Same parameters and buffers (names mapped), and with torchvision's weights the same pyramid and
    the same detections."""
    torch.manual_seed(0)
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=21, min_size=128, max_size=160,
                                      box_score_thresh=0.0).eval()
    ours = build_mask_rcnn(backbone="resnet50_fpn", num_classes=20, weights="none", min_size=128, max_size=160,
                           score_threshold=0.0).eval()
    reference_state = {key: value for key, value in reference.state_dict().items() if "num_batches_tracked" not in key}
    our_state = {_torchvision_name(key): value for key, value in ours.state_dict().items()
                 if "num_batches_tracked" not in key}
    assert set(our_state) == set(reference_state)
    assert all(our_state[key].shape == reference_state[key].shape for key in reference_state)
    inverse = {_torchvision_name(key): key for key in ours.state_dict()}
    ours.load_state_dict({inverse[key]: value for key, value in reference.state_dict().items() if key in inverse},
                         strict=False)
    image = torch.rand(3, 120, 150)
    with torch.no_grad():
        batch, _ = reference.transform([image])
        expected = reference.backbone(batch.tensors)
        found = ours.backbone(batch.tensors)
        for key in expected:
            torch.testing.assert_close(found[key], expected[key], rtol=1e-4, atol=1e-4)
        (expected_detections,), (found_detections,) = reference([image]), ours([image])
    assert len(found_detections["scores"]) > 0
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(found_detections[key], expected_detections[key], rtol=1e-3, atol=1e-3)


def test_keyed_sampler_depends_only_on_the_image_key() -> None:
    sampler = KeyedSampler(16, 0.25, stream=0)
    generator = torch.Generator().manual_seed(1)
    first = torch.randint(-1, 3, (200,), generator=generator)
    second = torch.randint(-1, 3, (150,), generator=generator)
    sampler.keys = [11, 12]
    positives, negatives = sampler([first, second])
    sampler.keys = [12]
    alone_positives, alone_negatives = sampler([second])
    assert torch.equal(positives[1], alone_positives[0]) and torch.equal(negatives[1], alone_negatives[0])
    assert int(positives[0].sum()) == 4 and int(negatives[0].sum()) == 12
    assert bool((first[positives[0].bool()] >= 1).all()) and bool((first[negatives[0].bool()] == 0).all())
    sampler.keys = [13, 12]
    other, _ = sampler([first, second])
    assert not torch.equal(other[0], positives[0])
    scarce = torch.tensor([1, 0, 0, -1, 0])  # fewer candidates than asked for: take them all
    sampler.keys = [5]
    positives, negatives = sampler([scarce])
    assert positives[0].tolist() == [1, 0, 0, 0, 0] and negatives[0].tolist() == [0, 1, 1, 0, 1]
    sampler.keys = [1, 2, 3]
    with pytest.raises(ValueError, match="3 sampling keys"):
        sampler([first, second])


def test_unknown_backbone_and_anchor_levels_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown Mask R-CNN backbone"):
        build_mask_rcnn(backbone="vgg16_fpn", num_classes=2)
    with pytest.raises(ConfigError, match="one size per pyramid level"):
        build_mask_rcnn(backbone="resnet18_fpn", num_classes=2, weights="none", anchor_sizes=(32, 64))
