"""IRNet (``net/resnet50_irn.py`` of the reference): frozen backbone, class-boundary and displacement heads.

Every head layer is a 1x1 convolution without bias (except ``boundary6``), GroupNorm, and ReLU; the
blocks fed by coarser stages upsample bilinearly (align_corners=False) between GroupNorm and ReLU and
are cropped at the bottom/right to the stride-4 (or stride-8) map they are concatenated with. Channel
counts below are for ResNet-50; input channels come from ``backbone.channels``.

Boundary branch: boundary1 C1->32 (s4), boundary2 C2->32 (s4), boundary3 C3->32 x2 (s8->s4),
boundary4 C4->32 x4, boundary5 C5->32 x4 (s16->s4), all GroupNorm(4, 32); concatenation (160) ->
boundary6 conv 160->1 with bias -> boundary logits.

Displacement branch: displacement1 C1->64 GN(8) (s4), displacement2 C2->128 GN(16) (s4),
displacement3 C3->256 GN(16) (s8), displacement4 C4->256 GN(16) x2, displacement5 C5->256 GN(16) x2
(s16->s8), displacement6 concat(768)->256 GN(16) x2 (s8->s4), displacement7 concat(448)->256 GN(16),
ReLU, conv 256->2 without bias, then :class:`MeanShift`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from irn_core.models.backbones import Backbone


class MeanShift(nn.Module):
    """Subtracts a measured mean displacement in eval mode; identity in training mode.

    Buffer ``running_mean`` (num_features,), zeros at construction; the training procedure measures it
    after training and assigns it. ``x``: (B, num_features, h, w) -> same shape.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return x
        return x - self.running_mean.view(1, -1, 1, 1)


def _head_block(in_channels: int, out_channels: int, groups: int, upsample: int = 1) -> nn.Sequential:
    """conv 1x1 (no bias) -> GroupNorm -> [bilinear x upsample, align_corners=False] -> ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.GroupNorm(groups, out_channels)]
    if upsample != 1:
        layers.append(nn.Upsample(scale_factor=upsample, mode="bilinear", align_corners=False))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _crop_to(x: Tensor, reference: Tensor) -> Tensor:
    return x[..., : reference.shape[2], : reference.shape[3]]


class IRNet(nn.Module):
    """Inter-pixel relation network: boundary logits and displacement field at stride 4.

    The whole backbone is frozen: its parameters get ``requires_grad = False``, its stage outputs are
    computed without autograd, and it stays in eval mode even after ``.train()``. Only the heads train.
    ``forward(x)``: (B, 3, H, W) -> (boundary logits (B, 1, h, w), displacement (B, 2, h, w)) with
    h = ceil(H / 4), w = ceil(W / 4); displacement channel 0 is y, channel 1 is x, in stride-4 pixels.
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)
        c1, c2, c3, c4, c5 = backbone.channels

        self.boundary1 = _head_block(c1, 32, 4)
        self.boundary2 = _head_block(c2, 32, 4)
        self.boundary3 = _head_block(c3, 32, 4, upsample=2)
        self.boundary4 = _head_block(c4, 32, 4, upsample=4)
        self.boundary5 = _head_block(c5, 32, 4, upsample=4)
        self.boundary6 = nn.Conv2d(160, 1, 1, bias=True)

        self.displacement1 = _head_block(c1, 64, 8)
        self.displacement2 = _head_block(c2, 128, 16)
        self.displacement3 = _head_block(c3, 256, 16)
        self.displacement4 = _head_block(c4, 256, 16, upsample=2)
        self.displacement5 = _head_block(c5, 256, 16, upsample=2)
        self.displacement6 = _head_block(768, 256, 16, upsample=2)
        self.displacement7 = nn.Sequential(_head_block(448, 256, 16), nn.Conv2d(256, 2, 1, bias=False))
        self.mean_shift = MeanShift(2)
        self.train(self.training)

    def train(self, mode: bool = True) -> IRNet:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            x1, x2, x3, x4, x5 = (stage_output.detach() for stage_output in self.backbone(x))

        boundary2 = self.boundary2(x2)
        boundary_features = [
            self.boundary1(x1),
            boundary2,
            _crop_to(self.boundary3(x3), boundary2),
            _crop_to(self.boundary4(x4), boundary2),
            _crop_to(self.boundary5(x5), boundary2),
        ]
        boundary_logits = self.boundary6(torch.cat(boundary_features, dim=1))

        displacement2 = self.displacement2(x2)
        displacement3 = self.displacement3(x3)
        coarse = torch.cat(
            [
                displacement3,
                _crop_to(self.displacement4(x4), displacement3),
                _crop_to(self.displacement5(x5), displacement3),
            ],
            dim=1,
        )
        upsampled = _crop_to(self.displacement6(coarse), displacement2)
        fine = torch.cat([self.displacement1(x1), displacement2, upsampled], dim=1)
        displacement = self.mean_shift(self.displacement7(fine))
        return boundary_logits, displacement

    def boundary_modules(self) -> list[nn.Module]:
        return [self.boundary1, self.boundary2, self.boundary3, self.boundary4, self.boundary5, self.boundary6]

    def displacement_modules(self) -> list[nn.Module]:
        return [
            self.displacement1,
            self.displacement2,
            self.displacement3,
            self.displacement4,
            self.displacement5,
            self.displacement6,
            self.displacement7,
        ]

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(boundary-branch parameters, displacement-branch parameters): the 1x and 10x learning-rate groups."""
        boundary = [parameter for module in self.boundary_modules() for parameter in module.parameters()]
        displacement = [parameter for module in self.displacement_modules() for parameter in module.parameters()]
        return boundary, displacement
