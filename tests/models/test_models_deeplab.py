"""DeepLab v2: output stride and shapes, the v2 ASPP head against a restatement, frozen parts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from irn_core.models.backbones import build_backbone
from irn_core.models.deeplab import ASPPv2, DeepLabV2


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0", "efficientnet_lite2"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_logits_have_the_output_stride(name: str, output_stride: int) -> None:
    torch.manual_seed(0)
    model = DeepLabV2(build_backbone(name, weights=None, output_stride=output_stride), 5).eval()
    assert model.output_stride == output_stride
    height, width = 45, 66
    with torch.no_grad():
        logits = model(torch.randn(2, 3, height, width))
    assert logits.shape == (2, 5, math.ceil(height / output_stride), math.ceil(width / output_stride))
    assert [branch.dilation for branch in model.aspp.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]


def test_resnet50_deeplab_has_the_papers_shape() -> None:
    torch.manual_seed(0)
    model = DeepLabV2(build_backbone("resnet50", weights=None, output_stride=8), 21).eval()
    assert [branch.in_channels for branch in model.aspp.branches] == [2048] * 4
    with torch.no_grad():
        assert model(torch.randn(1, 3, 65, 65)).shape == (1, 21, 9, 9)


def test_aspp_is_the_sum_of_four_dilated_classifiers() -> None:
    torch.manual_seed(1)
    head = ASPPv2(16, 3)
    for branch in head.branches:  # the recipe's initialisation: N(0, 0.01) weights, zero biases
        assert abs(float(branch.weight.detach().std()) - 0.01) < 0.003 and torch.equal(branch.bias, torch.zeros(3))
        nn.init.normal_(branch.bias)
    x = torch.randn(2, 16, 30, 27)
    expected = sum(
        F.conv2d(F.pad(x, (rate, rate, rate, rate)), branch.weight, branch.bias, dilation=rate)
        for rate, branch in zip((6, 12, 18, 24), head.branches, strict=True)
    )
    torch.testing.assert_close(head(x), expected)
    with pytest.raises(ValueError, match="dilation"):
        ASPPv2(16, 3, rates=())


def test_parameter_groups_and_frozen_batchnorm() -> None:
    torch.manual_seed(0)
    model = DeepLabV2(build_backbone("resnet18", weights=None), 4, frozen_stages=2)
    backbone, weights, biases = model.parameter_groups()
    norms = [module for module in model.backbone.modules() if isinstance(module, nn.BatchNorm2d)]
    assert all(not parameter.requires_grad for norm in norms for parameter in norm.parameters())
    assert len(weights) == len(biases) == 4 and all(weight.dim() == 4 for weight in weights)
    assert all(bias.dim() == 1 for bias in biases)
    frozen = {id(parameter) for stage in model.backbone.stages[:2] for parameter in stage.parameters()}
    assert backbone and all(parameter.requires_grad and id(parameter) not in frozen for parameter in backbone)
    assert all(parameter.dim() == 4 for parameter in backbone)  # convolution weights only, as the recipe
    model.train()
    assert not model.backbone.stages[1].training and model.backbone.stages[2].training
    # gradients reach the trainable stages and the head only
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    assert all(parameter.grad is not None for parameter in backbone + weights + biases)
    assert all(parameter.grad is None for stage in model.backbone.stages[:2] for parameter in stage.parameters())
    # plain BatchNorm stays trainable when BatchNorm is not frozen
    loose = DeepLabV2(build_backbone("resnet18", weights=None, frozen_batchnorm=False), 4, freeze_batchnorm=False)
    assert any(parameter.requires_grad for module in loose.modules() if isinstance(module, nn.BatchNorm2d)
               for parameter in module.parameters())
    with pytest.raises(ValueError, match="frozen_stages"):
        DeepLabV2(build_backbone("resnet18", weights=None), 4, frozen_stages=6)


@pytest.mark.parametrize("height, width", [(14, 14), (10, 20), (25, 13), (7, 5)])
def test_aspp_on_maps_no_larger_than_a_rate_leaves_out_only_taps_that_read_padding(height: int, width: int) -> None:
    """On small maps (224 px crops at stride 16: 14x14) the outer taps of rates >= the map size read only
    padding; leaving them out gives the full dilated convolutions' logits and gradients (those taps' 0)."""
    torch.manual_seed(2)
    head = ASPPv2(16, 3)
    for branch in head.branches:
        nn.init.normal_(branch.bias)
    x = torch.randn(2, 16, height, width, requires_grad=True)
    expected = sum(
        F.conv2d(F.pad(x, (rate, rate, rate, rate)), branch.weight, branch.bias, dilation=rate)
        for rate, branch in zip((6, 12, 18, 24), head.branches, strict=True)
    )
    actual = head(x)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(expected.shape)
    parameters = [x] + [parameter for branch in head.branches for parameter in (branch.weight, branch.bias)]
    expected_gradients = torch.autograd.grad(expected, parameters, upstream)
    actual_gradients = torch.autograd.grad(actual, parameters, upstream)
    for got, want in zip(actual_gradients, expected_gradients, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for rate, gradient in zip((6, 12, 18, 24), actual_gradients[1::2], strict=True):
        if rate >= height and rate >= width:  # only the middle tap ever saw the map
            assert float(gradient[:, :, 1, 1].abs().max()) > 0
            assert torch.count_nonzero(gradient) == torch.count_nonzero(gradient[:, :, 1, 1])
