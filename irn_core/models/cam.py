"""The CAM network of the reference (``net/resnet50_cam.py``): backbone, global average pooling, 1x1 classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irn_core.models.backbones import Backbone


class CAMNet(nn.Module):
    """Multi-label classifier whose 1x1 classifier weights give class activation maps.

    ``classifier = Conv2d(backbone.channels[-1], num_classes, 1, bias=False)`` with PyTorch's default
    initialisation. The first ``frozen_stages`` backbone stages are run under ``torch.no_grad()`` in
    :meth:`forward` and their parameters get ``requires_grad = False`` (this changes the given backbone);
    they are also kept in eval mode by :meth:`train`. The reference freezes conv1...layer2, i.e.
    ``frozen_stages=3`` (stages 1-3 of :class:`Backbone`); ``frozen_stages=0`` trains everything
    (needed for a randomly initialised backbone).
    """

    def __init__(self, backbone: Backbone, num_classes: int, *, frozen_stages: int = 3) -> None:
        super().__init__()
        if not 0 <= frozen_stages <= len(backbone.stages):
            raise ValueError(f"frozen_stages must be in [0, {len(backbone.stages)}], got {frozen_stages}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.frozen_stages = int(frozen_stages)
        self.classifier = nn.Conv2d(backbone.channels[-1], self.num_classes, 1, bias=False)
        for stage in backbone.stages[: self.frozen_stages]:
            for parameter in stage.parameters():
                parameter.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> CAMNet:
        super().train(mode)
        for stage in self.backbone.stages[: self.frozen_stages]:
            stage.eval()
        return self

    def features(self, x: Tensor) -> Tensor:
        """``x``: (B, 3, H, W) -> last-stage features (B, C, ceil(H/16), ceil(W/16)); frozen stages without grad."""
        stages = self.backbone.stages
        with torch.no_grad():
            for stage in stages[: self.frozen_stages]:
                x = stage(x)
        if self.frozen_stages:
            x = x.detach()
        for stage in stages[self.frozen_stages :]:
            x = stage(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (B, 3, H, W) -> logits (B, num_classes): GAP of the features, then the classifier."""
        pooled = self.features(x).mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def class_activation_maps(self, x: Tensor) -> Tensor:
        """``x``: (B, 3, H, W) -> relu(conv2d(features, classifier.weight)): (B, num_classes, ceil(H/16), ceil(W/16)).

        Runs the full backbone under the caller's autograd mode (no stage is detached).
        """
        features = self.backbone(x)[-1]
        return F.relu(F.conv2d(features, self.classifier.weight))

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(trainable backbone parameters, classifier parameters): the 1x and 10x learning-rate groups."""
        backbone_parameters = [
            parameter
            for stage in self.backbone.stages[self.frozen_stages :]
            for parameter in stage.parameters()
            if parameter.requires_grad
        ]
        return backbone_parameters, list(self.classifier.parameters())
