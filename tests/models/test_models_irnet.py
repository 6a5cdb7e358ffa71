"""IRNet heads, frozen backbone, MeanShift, and boundary_and_displacement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irn_core.irnet.infer import boundary_and_displacement, padded_canvas_size
from irn_core.models import IRNet, MeanShift, build_backbone
from irn_core.models.backbones import Backbone

from model_restatements import normalised_chw


def _irnet(**backbone_options: object) -> IRNet:
    torch.manual_seed(0)
    return IRNet(build_backbone("resnet18", weights=None, **backbone_options))


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (17, 90)])
def test_output_shapes_at_stride_4(size: tuple[int, int]) -> None:
    model = _irnet().train()
    boundary, displacement = model(torch.randn(2, 3, *size))
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    assert boundary.shape == (2, 1, h, w)
    assert displacement.shape == (2, 2, h, w)


def test_head_layout_follows_reference_for_resnet50() -> None:
    model = IRNet(build_backbone("resnet50", weights=None))
    boundary_inputs = [model.boundary_modules()[i][0].in_channels for i in range(5)]
    displacement_inputs = [model.displacement_modules()[i][0].in_channels for i in range(5)]
    assert boundary_inputs == [64, 256, 512, 1024, 2048]
    assert displacement_inputs == [64, 256, 512, 1024, 2048]
    groups = [(m[1].num_groups, m[1].num_channels) for m in model.boundary_modules()[:5]]
    assert groups == [(4, 32)] * 5
    groups = [(m[1].num_groups, m[1].num_channels) for m in model.displacement_modules()[:6]]
    assert groups == [(8, 64), (16, 128), (16, 256), (16, 256), (16, 256), (16, 256)]
    assert model.displacement7[0][0].in_channels == 448 and model.displacement6[0].in_channels == 768
    assert model.boundary6.in_channels == 160 and model.boundary6.bias is not None
    assert model.displacement7[1].out_channels == 2 and model.displacement7[1].bias is None
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and not _inside(m, model.backbone)]
    assert all(c.kernel_size == (1, 1) for c in convs)
    assert sum(c.bias is not None for c in convs) == 1


def _inside(module: nn.Module, container: nn.Module) -> bool:
    return any(module is other for other in container.modules())


def _block(block: nn.Sequential, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """conv -> GroupNorm -> (bilinear to ``size``) -> ReLU, from the block's weights."""
    conv, norm = block[0], block[1]
    x = F.group_norm(F.conv2d(x, conv.weight), norm.num_groups, norm.weight, norm.bias, norm.eps)
    if size is not None:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return F.relu(x)


def test_forward_matches_restatement() -> None:
    """Heads written out with functional ops (upsampling to explicit sizes, then cropping)."""
    model = _irnet().eval()
    model.mean_shift.running_mean.copy_(torch.tensor([0.3, -0.2]))
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        boundary, displacement = model(x)
        f1, f2, f3, f4, f5 = model.backbone(x)
        h, w = f2.shape[2:]
        h8, w8 = f3.shape[2:]
        b = [
            _block(model.boundary1, f1),
            _block(model.boundary2, f2),
            _block(model.boundary3, f3, (2 * h8, 2 * w8))[..., :h, :w],
            _block(model.boundary4, f4, (4 * f4.shape[2], 4 * f4.shape[3]))[..., :h, :w],
            _block(model.boundary5, f5, (4 * f5.shape[2], 4 * f5.shape[3]))[..., :h, :w],
        ]
        expected_boundary = F.conv2d(torch.cat(b, 1), model.boundary6.weight, model.boundary6.bias)
        d3 = _block(model.displacement3, f3)
        d4 = _block(model.displacement4, f4, (2 * f4.shape[2], 2 * f4.shape[3]))[..., :h8, :w8]
        d5 = _block(model.displacement5, f5, (2 * f5.shape[2], 2 * f5.shape[3]))[..., :h8, :w8]
        d6 = _block(model.displacement6, torch.cat([d3, d4, d5], 1), (2 * h8, 2 * w8))[..., :h, :w]
        fine = torch.cat([_block(model.displacement1, f1), _block(model.displacement2, f2), d6], 1)
        expected_displacement = F.conv2d(_block(model.displacement7[0], fine), model.displacement7[1].weight)
        expected_displacement = expected_displacement - torch.tensor([0.3, -0.2]).view(1, 2, 1, 1)
    torch.testing.assert_close(boundary, expected_boundary)
    torch.testing.assert_close(displacement, expected_displacement)


def test_backbone_is_frozen_and_stays_in_eval_mode() -> None:
    model = _irnet(frozen_batchnorm=False)  # ordinary BatchNorm: eval mode is what keeps it fixed
    model.train()
    assert model.training and model.boundary1.training and model.displacement7.training
    assert not any(module.training for module in model.backbone.modules())
    stats = {name: buffer.clone() for name, buffer in model.backbone.named_buffers()}
    boundary, displacement = model(torch.randn(2, 3, 40, 40))
    (boundary.sum() + displacement.square().sum()).backward()
    assert all(parameter.grad is None and not parameter.requires_grad for parameter in model.backbone.parameters())
    assert all(torch.equal(buffer, stats[name]) for name, buffer in model.backbone.named_buffers())
    edge_parameters, displacement_parameters = model.parameter_groups()
    for parameter in edge_parameters + displacement_parameters:
        assert parameter.grad is not None
    assert len(edge_parameters) == 5 * 3 + 2 and len(displacement_parameters) == 6 * 3 + 4
    head = {id(p) for p in model.parameters()} - {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in edge_parameters} | {id(p) for p in displacement_parameters} == head
    assert not {id(p) for p in edge_parameters} & {id(p) for p in displacement_parameters}
    # boundary loss alone gives no gradient to the displacement branch
    model.zero_grad(set_to_none=True)
    model(torch.randn(1, 3, 40, 40))[0].sum().backward()
    assert all(parameter.grad is None for parameter in displacement_parameters)


def test_mean_shift_train_and_eval() -> None:
    shift = MeanShift(2)
    assert torch.equal(shift.running_mean, torch.zeros(2)) and "running_mean" in shift.state_dict()
    shift.running_mean.copy_(torch.tensor([1.5, -0.5]))
    x = torch.randn(3, 2, 4, 5)
    assert torch.equal(shift.train()(x), x)
    torch.testing.assert_close(shift.eval()(x), x - torch.tensor([1.5, -0.5]).view(1, 2, 1, 1))

    model = _irnet()
    model.mean_shift.running_mean.copy_(torch.tensor([0.25, 2.0]))
    image = torch.randn(1, 3, 24, 28)
    with torch.no_grad():
        train_boundary, train_displacement = model.train()(image)
        eval_boundary, eval_displacement = model.eval()(image)
    torch.testing.assert_close(eval_boundary, train_boundary)
    torch.testing.assert_close(eval_displacement, train_displacement - torch.tensor([0.25, 2.0]).view(1, 2, 1, 1))


class _SubsamplingModel(IRNet):
    """Predictable stand-in: boundary logits = channel 0 subsampled x4, displacement = channels 1, 2."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.anchor = nn.Parameter(torch.zeros(()))
        self.inputs: list[Tensor] = []

    def train(self, mode: bool = True) -> _SubsamplingModel:
        nn.Module.train(self, mode)
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.inputs.append(x.clone())
        return x[:, :1, ::4, ::4] * 3.0, x[:, 1:3, ::4, ::4]


@pytest.mark.parametrize(("size", "pad_to", "canvas"), [((22, 31), 64, (64, 64)), ((70, 37), 64, (80, 64))])
def test_boundary_and_displacement_flip_average_and_padding(
    size: tuple[int, int], pad_to: int, canvas: tuple[int, int]
) -> None:
    model = _SubsamplingModel()
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    boundary, displacement = boundary_and_displacement(model, image, pad_to=pad_to)
    h, w = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    assert boundary.shape == (h, w) and displacement.shape == (2, h, w)

    # the network saw [image, flipped image], each zero-padded at the bottom/right to the canvas
    (batch,) = model.inputs
    expected_batch = np.zeros((2, 3, *canvas), np.float32)
    expected_batch[0, :, : size[0], : size[1]] = normalised_chw(image)
    expected_batch[1, :, : size[0], : size[1]] = normalised_chw(np.ascontiguousarray(image[:, ::-1]))
    np.testing.assert_allclose(batch.numpy(), expected_batch, atol=1e-6)

    plain = 3.0 * expected_batch[0, 0, ::4, ::4][:h, :w]
    mirrored = (3.0 * expected_batch[1, 0, ::4, ::4][:h, :w])[:, ::-1]  # crop, then flip back
    expected_boundary = 1.0 / (1.0 + np.exp(-(plain / 2 + mirrored / 2)))
    np.testing.assert_allclose(boundary.numpy(), expected_boundary, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(displacement.numpy(), expected_batch[0, 1:3, ::4, ::4][:, :h, :w], atol=1e-6)


def test_padded_canvas_size() -> None:
    assert padded_canvas_size(375, 500) == (512, 512)
    assert padded_canvas_size(600, 333) == (608, 512)
    assert padded_canvas_size(513, 1000, pad_to=512, oversize_multiple=32) == (544, 1024)
    assert padded_canvas_size(37, 53, pad_to=None) == (37, 53)


def test_boundary_and_displacement_with_irnet() -> None:
    model = _irnet()
    model.mean_shift.running_mean.copy_(torch.tensor([0.1, 0.2]))
    image = np.random.default_rng(2).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    boundary, displacement = boundary_and_displacement(model, image, pad_to=48)
    assert not model.training
    canvas = torch.zeros(2, 3, 48, 48)
    canvas[0, :, :30, :45] = torch.from_numpy(normalised_chw(image))
    canvas[1, :, :30, :45] = torch.from_numpy(normalised_chw(np.ascontiguousarray(image[:, ::-1])))
    with torch.no_grad():
        logits, field = model(canvas)
    logits, field = logits[..., :8, :12], field[..., :8, :12]
    torch.testing.assert_close(boundary, torch.sigmoid((logits[0, 0] + logits[1, 0].flip(-1)) / 2))
    torch.testing.assert_close(displacement, field[0])
    assert float(boundary.min()) > 0 and float(boundary.max()) < 1
    # GroupNorm statistics see the padding: another canvas gives other numbers
    unpadded, _ = boundary_and_displacement(model, image, pad_to=None)
    assert not torch.allclose(unpadded, boundary)
