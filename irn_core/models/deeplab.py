"""DeepLab v2 (Chen et al., TPAMI 2017): a dilated backbone and the v2 atrous spatial pyramid pooling head.

The backbone is one of :func:`irn_core.models.backbones.build_backbone`'s, normally at output stride 8
(ResNet-50/101 as DeepLab v2, EfficientNet-Lite0 for CPU runs). The v2 ASPP head is four parallel 3x3
classifiers on the last stage's features, dilated by 6, 12, 18 and 24 (padding = dilation, so the
feature size is kept), each with a bias, whose outputs are summed: the class logits at the backbone's
output stride. As in DeepLab v2 (and the PyTorch port kazuto1011/deeplab-pytorch) the classifier
weights start from N(0, 0.01) and the biases from 0.

BatchNorm is frozen as in that recipe: the backbone is built with fixed BatchNorm (running statistics
even in training mode) and :class:`DeepLabV2` also excludes the BatchNorm affine parameters from
training (``requires_grad = False``), since the recipe's optimiser holds only the convolution
weights. ``freeze_batchnorm=False`` leaves BatchNorm as the backbone has it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irn_core.models.backbones import Backbone

ATROUS_RATES: tuple[int, ...] = (6, 12, 18, 24)
"""Dilations of the v2 ASPP branches (DeepLab-LargeFOV's successor, "ASPP-L")."""
CLASSIFIER_INIT_STD = 0.01


class ASPPv2(nn.Module):
    """Sum of parallel 3x3 classifiers at ``rates`` (dilation = padding = rate), each with a bias.

    ``x``: (B, in_channels, h, w) -> logits (B, num_classes, h, w).
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = ATROUS_RATES) -> None:
        super().__init__()
        if len(rates) == 0 or any(int(rate) < 1 for rate in rates):
            raise ValueError(f"ASPP needs at least one dilation >= 1, got {tuple(rates)}")
        self.rates = tuple(int(rate) for rate in rates)
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate, bias=True) for rate in self.rates
        )
        for branch in self.branches:
            nn.init.normal_(branch.weight, mean=0.0, std=CLASSIFIER_INIT_STD)
            nn.init.zeros_(branch.bias)

    def forward(self, x: Tensor) -> Tensor:
        logits = _dilated_branch(self.branches[0], x)
        for branch in self.branches[1:]:
            logits = logits + _dilated_branch(branch, x)
        return logits


def _dilated_branch(branch: nn.Conv2d, x: Tensor) -> Tensor:
    """``branch(x)`` for a 3x3 convolution with padding = dilation = r, without the taps that only ever read
    padding: along an axis of size <= r the outer taps of every output pixel fall off the map, so only the
    middle row (column) of the kernel is applied (e.g. rates 18 and 24 on the 14x14 features of a 224 px
    crop at output stride 16 reduce to 1x1 convolutions). The same sums less terms that are exactly 0;
    the left-out weights get a zero gradient, as before. ``x``: (B, C, h, w) -> (B, classes, h, w).
    """
    rate = branch.dilation[0]
    height, width = x.shape[-2:]
    if rate < height and rate < width:
        return branch(x)
    rows = slice(1, 2) if rate >= height else slice(0, 3)
    columns = slice(1, 2) if rate >= width else slice(0, 3)
    padding = (0 if rate >= height else rate, 0 if rate >= width else rate)
    dilation = (1 if rate >= height else rate, 1 if rate >= width else rate)
    return F.conv2d(x, branch.weight[:, :, rows, columns], branch.bias, padding=padding, dilation=dilation)


class DeepLabV2(nn.Module):
    """Backbone + :class:`ASPPv2` on its last stage.

    ``num_classes`` counts the background (VOC: 21). The first ``frozen_stages`` backbone stages run
    without gradient and stay in eval mode (0, the recipe, trains them all; more is a speed option
    for CPU runs). ``freeze_batchnorm``: see the module docstring.

    ``forward(x)``: (B, 3, H, W) -> logits (B, num_classes, ceil(H / s), ceil(W / s)), s =
    ``backbone.output_stride``.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        atrous_rates: Sequence[int] = ATROUS_RATES,
        frozen_stages: int = 0,
        freeze_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= frozen_stages <= len(backbone.stages):
            raise ValueError(f"frozen_stages must be in [0, {len(backbone.stages)}], got {frozen_stages}")
        if num_classes < 2:
            raise ValueError(f"DeepLab needs at least 2 classes (background included), got {num_classes}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.frozen_stages = int(frozen_stages)
        self.aspp = ASPPv2(backbone.channels[-1], self.num_classes, atrous_rates)
        for stage in backbone.stages[: self.frozen_stages]:
            stage.requires_grad_(False)
        if freeze_batchnorm:
            for module in backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.requires_grad_(False)
        self.train(self.training)

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def train(self, mode: bool = True) -> DeepLabV2:
        super().train(mode)
        for stage in self.backbone.stages[: self.frozen_stages]:
            stage.eval()
        return self

    def features(self, x: Tensor) -> Tensor:
        """``x``: (B, 3, H, W) -> last-stage features (B, C, ceil(H / s), ceil(W / s))."""
        stages = self.backbone.stages
        if self.frozen_stages:
            with torch.no_grad():
                for stage in stages[: self.frozen_stages]:
                    x = stage(x)
            x = x.detach()
        for stage in stages[self.frozen_stages :]:
            x = stage(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.aspp(self.features(x))

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
        """(trainable backbone parameters, ASPP weights, ASPP biases): the recipe's 1x, 10x and 20x groups."""
        backbone_parameters = [parameter for parameter in self.backbone.parameters() if parameter.requires_grad]
        weights = [branch.weight for branch in self.aspp.branches]
        biases = [branch.bias for branch in self.aspp.branches]
        return backbone_parameters, weights, biases
