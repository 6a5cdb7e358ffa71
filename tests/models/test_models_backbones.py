"""Backbones: stage strides and channels, FixedBatchNorm, weight loading, EfficientNet-Lite0 and -Lite2."""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from irn_core.data.transforms import hwc_to_chw, normalize, pil_resize
from irn_core.errors import ConfigError
from irn_core.models import CAMNet, backbones
from irn_core.models.backbones import (
    BACKBONE_NAMES,
    EFFICIENTNET_LITE_VARIANTS,
    EfficientNetLite,
    FixedBatchNorm2d,
    SamePaddingConv2d,
    build_backbone,
)

STRIDES = (4, 4, 8, 16, 16)
EXPECTED_CHANNELS = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
    "resnet101": (64, 256, 512, 1024, 2048),
    "efficientnet_lite0": (24, 24, 40, 112, 1280),
    "efficientnet_lite2": (24, 24, 48, 120, 1280),
}
LITE_NAMES = ("efficientnet_lite0", "efficientnet_lite2")


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_stage_shapes_strides_and_no_dilation(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, weights=None)
    assert backbone.channels == EXPECTED_CHANNELS[name]
    height, width = 37, 53
    with torch.no_grad():
        outputs = backbone(torch.randn(2, 3, height, width))
    assert len(outputs) == 5
    for output, stride, channels in zip(outputs, STRIDES, backbone.channels, strict=True):
        assert tuple(output.shape) == (2, channels, math.ceil(height / stride), math.ceil(width / stride))
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            assert module.dilation == (1, 1)
    for module in backbone.stages[4].modules():  # the last stage never downsamples
        if isinstance(module, nn.Conv2d):
            assert module.stride == (1, 1)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0", "efficientnet_lite2"])
def test_random_init_is_deterministic_under_seed(name: str) -> None:
    torch.manual_seed(3)
    first = build_backbone(name, weights=None).state_dict()
    torch.manual_seed(3)
    second = build_backbone(name, weights="none").state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    torch.manual_seed(4)
    third = build_backbone(name, weights=None).state_dict()
    assert not all(torch.equal(first[key], third[key]) for key in first)


def test_fixed_batchnorm_uses_running_statistics_in_training_mode() -> None:
    torch.manual_seed(0)
    norm = FixedBatchNorm2d(3)
    norm.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    norm.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.5, 2.0, -1.0]))
        norm.bias.copy_(torch.tensor([0.1, 0.0, 3.0]))
    norm.train()
    x = torch.randn(4, 3, 5, 6) * 3 + 7  # batch statistics far from the running ones
    out = norm(x)
    mean = torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    var = torch.tensor([4.0, 0.25, 1.0]).view(1, 3, 1, 1)
    expected = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(1, 3, 1, 1) + norm.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)
    assert torch.equal(norm.running_mean, mean.flatten()) and torch.equal(norm.running_var, var.flatten())
    out.sum().backward()
    assert norm.weight.grad is not None and norm.bias.grad is not None
    # an ordinary BatchNorm in training mode would differ
    plain = nn.BatchNorm2d(3)
    plain.load_state_dict(norm.state_dict())
    assert not torch.allclose(plain.train()(x), out)


@pytest.mark.parametrize("frozen", [True, False])
def test_build_backbone_batchnorm_kind(frozen: bool) -> None:
    backbone = build_backbone("resnet18", weights=None, frozen_batchnorm=frozen)
    norms = [module for module in backbone.modules() if isinstance(module, nn.BatchNorm2d)]
    assert norms and all(isinstance(module, FixedBatchNorm2d) == frozen for module in norms)


def test_backbone_forward_in_train_mode_keeps_running_stats() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", weights=None).train()
    before = {key: value.clone() for key, value in backbone.state_dict().items()}
    backbone(torch.randn(2, 3, 32, 32))
    after = backbone.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_load_torchvision_layout_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    for module in reference.modules():  # make running stats distinctive
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", weights=path)
    assert torch.equal(backbone.stages[0][0].weight, reference.conv1.weight)
    assert torch.equal(backbone.stages[4][1].bn2.running_var, reference.layer4[1].bn2.running_var)
    # the same numbers: stage outputs equal torchvision's modules run by hand (layer4 with stride 1)
    reference.eval()
    reference.layer4[0].conv1.stride = (1, 1)
    reference.layer4[0].downsample[0].stride = (1, 1)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        actual = backbone.train()(x)[-1]  # train mode: FixedBatchNorm still uses running stats
    torch.testing.assert_close(actual, expected)

    # the backbone's own layout round-trips
    own = tmp_path / "own.pth"
    torch.save(backbone.state_dict(), own)
    reloaded = build_backbone("resnet18", weights=own)
    assert all(torch.equal(value, reloaded.state_dict()[key]) for key, value in backbone.state_dict().items())
    # so does the backbone part of a CAMNet state dict (wrapped as a checkpoint payload)
    camnet = CAMNet(backbone, 3)
    wrapped = tmp_path / "camnet.pth"
    torch.save({"model": camnet.state_dict()}, wrapped)
    from_camnet = build_backbone("resnet18", weights=wrapped)
    assert all(torch.equal(value, from_camnet.state_dict()[key]) for key, value in backbone.state_dict().items())


def test_load_mismatched_or_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ConfigError, match="resnet34.pth.*unexpected keys"):
        build_backbone("resnet18", weights=path)
    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone("resnet18", weights=tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="garbage.pth"):
        build_backbone("resnet18", weights=garbage)
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_backbone("vgg16", weights=None)


def _hashed_weight_file(folder: Path, seed: int) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision ResNet-18 state dict saved as ``resnet18-<sha256 prefix>.pth`` (as torchvision names files)."""
    torch.manual_seed(seed)
    state = torchvision.models.resnet18(weights=None).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    unnamed = folder / "unnamed.pth"
    torch.save(state, unnamed)
    digest = hashlib.sha256(unnamed.read_bytes()).hexdigest()
    named = folder / f"resnet18-{digest[:8]}.pth"
    unnamed.rename(named)
    return named, state


def test_imagenet_resnet_from_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(backbones, "download_weights", _no_download)
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(2)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    backbone = build_backbone("resnet18", weights="imagenet")
    assert torch.equal(backbone.stages[3][0].conv1.weight, reference.layer3[0].conv1.weight)
    # the older torchvision file name of the same weights is accepted too
    (tmp_path / "checkpoints" / "resnet18-f37072fd.pth").rename(tmp_path / "checkpoints" / "resnet18-5c106cde.pth")
    assert backbones.resnet_imagenet_file("resnet18").name == "resnet18-5c106cde.pth"


def _no_download(url: str, destination: Path, *, progress: bool | None = None) -> None:
    raise AssertionError(f"nothing should be downloaded, asked for {url}")


def test_imagenet_resnet_is_downloaded_into_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network needed: the weights enum's URL is replaced by a file:// URL of a hashed file."""
    source, state = _hashed_weight_file(tmp_path / "server", seed=4)
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(backbones, "resnet_imagenet_url", lambda name: source.as_uri())
    path = backbones.resnet_imagenet_file("resnet18")
    assert path == hub / "checkpoints" / source.name and path.read_bytes() == source.read_bytes()
    assert [file.name for file in path.parent.iterdir()] == [source.name]  # no temporary file left
    backbone = build_backbone("resnet18", weights="imagenet")  # now from the cache
    assert torch.equal(backbone.stages[1][0].conv1.weight, state["layer1.0.conv1.weight"])
    # the real URL comes from torchvision's weights enum
    monkeypatch.undo()
    assert backbones.resnet_imagenet_url("resnet50") == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url


def test_imagenet_resnet_download_failures_raise_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    absent = tmp_path / "server" / "resnet18-f37072fd.pth"  # no such file: the download fails as offline
    monkeypatch.setattr(backbones, "resnet_imagenet_url", lambda name: absent.as_uri())
    expected = r"could not be downloaded.*place resnet18-f37072fd\.pth \(from file://.*\) in "
    with pytest.raises(ConfigError, match=expected + re.escape(str(hub / "checkpoints"))):
        build_backbone("resnet18")
    # a corrupted download (hash mismatch) is refused and leaves nothing in the cache
    source, _ = _hashed_weight_file(tmp_path / "server", seed=5)
    corrupted = source.with_name("resnet18-00000000.pth")
    source.rename(corrupted)
    monkeypatch.setattr(backbones, "resnet_imagenet_url", lambda name: corrupted.as_uri())
    with pytest.raises(ConfigError, match="invalid hash value"):
        backbones.resnet_imagenet_file("resnet18")
    assert not any((hub / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match="not in the torch hub cache"):
        backbones.resnet_imagenet_file("resnet18", download=False)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", *LITE_NAMES])  # basic, bottleneck, MBConv blocks
def test_output_stride_8_keeps_parameters_and_gives_stride_8_features(name: str) -> None:
    torch.manual_seed(0)
    standard = build_backbone(name, weights=None)
    torch.manual_seed(0)
    dilated = build_backbone(name, weights=None, output_stride=8)
    assert dilated.strides == (4, 4, 8, 8, 8) and dilated.output_stride == 8 and standard.output_stride == 16
    assert {key: value.shape for key, value in standard.state_dict().items()} == {
        key: value.shape for key, value in dilated.state_dict().items()
    }
    height, width = 37, 53
    with torch.no_grad():
        outputs = dilated(torch.randn(1, 3, height, width))
    for output, stride, channels in zip(outputs, dilated.strides, dilated.channels, strict=True):
        assert tuple(output.shape) == (1, channels, math.ceil(height / stride), math.ceil(width / stride))
    for stage in dilated.stages[3:]:  # no stride in stages 4-5 any more, dilation instead
        convolutions = [module for module in stage.modules() if isinstance(module, nn.Conv2d)]
        assert all(module.stride == (1, 1) for module in convolutions)
    rates = {module.dilation[0] for module in dilated.stages[4].modules() if isinstance(module, nn.Conv2d)}
    assert rates >= {4}
    with pytest.raises(ConfigError, match="output_stride"):
        build_backbone(name, weights=None, output_stride=32)


def _resnet_features(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = network.maxpool(network.relu(network.bn1(network.conv1(x))))
    return network.layer4(network.layer3(network.layer2(network.layer1(x))))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_dilated_resnet_is_the_a_trous_form_of_the_imagenet_network(name: str) -> None:
    """At output stride 8 every fourth feature is exactly the original stride-32 network's feature."""
    torch.manual_seed(0)
    original = getattr(torchvision.models, name)(weights=None)
    for module in original.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    original.eval()
    dilated = backbones._build_resnet(name, FixedBatchNorm2d, 8)
    backbones.load_exact(dilated, original.state_dict(), source=name, ignore_prefixes=("fc.",))
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        expected = _resnet_features(original, x)
        actual = _resnet_features(dilated.eval(), x)
    assert actual.shape[2:] == (12, 8) and expected.shape[2:] == (3, 2)
    torch.testing.assert_close(actual[:, :, ::4, ::4], expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("name", LITE_NAMES)
def test_dilated_efficientnet_lite_is_the_a_trous_form_of_the_imagenet_network(name: str) -> None:
    state = _lite_file(name)
    variant = EFFICIENTNET_LITE_VARIANTS[name]
    original = EfficientNetLite(variant, FixedBatchNorm2d, stride32_stride=2).eval()
    dilated = EfficientNetLite(variant, FixedBatchNorm2d, stride32_stride=1, stride16_stride=1, dilate=True).eval()
    for network in (original, dilated):
        backbones.load_exact(network, state, source=name, ignore_prefixes=("_fc.",))
    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = original(x)
        actual = dilated(x)
    # "SAME" padding centres a stride-2 output on input 2i + 1: the grids meet at offset 3 = 2 * 1 + 1
    torch.testing.assert_close(actual[:, :, 3::4, 3::4], expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(actual[:, :, ::4, ::4], expected, atol=1e-2)


def test_same_padding_conv_matches_tensorflow_rule() -> None:
    torch.manual_seed(0)
    for kernel, stride, size in [(3, 2, 7), (3, 2, 8), (5, 2, 9), (5, 2, 10), (5, 1, 6), (1, 1, 5)]:
        conv = SamePaddingConv2d(2, 3, kernel, stride=stride)
        x = torch.randn(1, 2, size, size + 1)
        out = conv(x)
        # TensorFlow SAME: output ceil(n / s); total padding split with the extra pixel at the bottom/right
        pads = []
        for n in (size + 1, size):
            total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
            pads += [total // 2, total - total // 2]
        expected = F.conv2d(F.pad(x, pads), conv.weight, stride=stride)
        assert out.shape[2:] == (math.ceil(size / stride), math.ceil((size + 1) / stride))
        torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("channels, kernel, stride, size", [(8, 3, 1, 13), (8, 5, 1, 14), (6, 3, 2, 12), (6, 5, 2, 11)])
def test_same_padding_conv_pads_inside_the_convolution_as_the_padded_copy_did(
    channels: int, kernel: int, stride: int, size: int
) -> None:
    """Depthwise convolutions as Lite0's: the convolution's own padding (symmetric cases) or F.pad
    (stride 2, odd total) give the values and gradients of convolving the padded copy."""
    torch.manual_seed(0)
    conv = SamePaddingConv2d(channels, channels, kernel, stride=stride, groups=channels)
    x = torch.randn(2, channels, size, size + 3, requires_grad=True)
    pads = []
    for n in (size + 3, size):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    expected = F.conv2d(F.pad(x, pads), conv.weight, stride=stride, groups=channels)
    actual = conv(x)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    upstream = torch.randn(expected.shape)
    expected_gradients = torch.autograd.grad(expected, (x, conv.weight), upstream)
    actual_gradients = torch.autograd.grad(actual, (x, conv.weight), upstream)
    for got, want in zip(actual_gradients, expected_gradients, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_steps_without_resnets_do_not_import_torchvision() -> None:
    """torchvision (and the torch._dynamo it pulls in) costs seconds per job; only ResNets and Mask R-CNN need it."""
    modules = ["irn_core.steps.cam", "irn_core.steps.irnet", "irn_core.steps.deeplab", "irn_core.steps.pseudo_labels"]
    code = "import sys\n" + "".join(f"import {name}\n" for name in modules) + "print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    assert backbones.build_backbone("resnet18", weights=None).channels[-1] == 512  # imported when needed


def _lite_file(name: str) -> dict[str, torch.Tensor]:
    return backbones.read_state_dict(backbones.efficientnet_lite_imagenet_file(name))


@pytest.mark.parametrize(
    ("name", "tensor_count", "block_count", "stride32_block"),
    [("efficientnet_lite0", 296, 16, 11), ("efficientnet_lite2", 386, 21, 15)],
)
def test_efficientnet_lite_loads_every_tensor_of_the_weight_file(
    name: str, tensor_count: int, block_count: int, stride32_block: int
) -> None:
    state = _lite_file(name)
    assert len(state) == tensor_count
    file_blocks = {int(match.group(1)) for key in state if (match := re.match(r"_blocks\.(\d+)\.", key))}
    assert file_blocks == set(range(block_count)) == set(range(EFFICIENTNET_LITE_VARIANTS[name].block_count))
    network = EfficientNetLite(EFFICIENTNET_LITE_VARIANTS[name], FixedBatchNorm2d, stride32_stride=2)
    backbones.load_exact(network, state, source=name, ignore_prefixes=("_fc.",))
    loaded = network.state_dict()
    assert set(loaded) == {key for key in state if not key.startswith("_fc.")}
    assert all(torch.equal(loaded[key], state[key]) for key in loaded)

    backbone = build_backbone(name)
    assert len(backbone.state_dict()) == len(state) - 2  # everything but _fc.weight/_fc.bias
    assert torch.equal(backbone.stages[0][0].conv.weight, state["_conv_stem.weight"])
    assert torch.equal(backbone.stages[4][-1].norm.running_var, state["_bn1.running_var"])
    first = f"_blocks.{stride32_block}._depthwise_conv.weight"
    assert torch.equal(backbone.stages[4][0]._depthwise_conv.weight, state[first])
    assert backbone.stages[4][0]._depthwise_conv.stride == (1, 1)  # the stride-32 stage made stride 1
    with pytest.raises(ConfigError, match="missing keys"):
        backbones.load_exact(network, {k: v for k, v in state.items() if k != "_bn1.bias"}, source=name)


@pytest.mark.parametrize("name", LITE_NAMES)
def test_efficientnet_lite_block_table_is_that_of_the_weight_file(name: str) -> None:
    """Per block: kernel, expansion, input and output width as read from the file's tensors. The strides
    are not in the file: the ImageNet test below checks them (wrong strides misclassify)."""
    state = _lite_file(name)
    variant = EFFICIENTNET_LITE_VARIANTS[name]
    from_table = [
        (kernel, expansion, in_channels if repeat == 0 else out_channels, out_channels)
        for repeats, kernel, _stride, expansion, in_channels, out_channels in variant.stages
        for repeat in range(repeats)
    ]
    from_file = []
    for block in range(variant.block_count):
        depthwise = state[f"_blocks.{block}._depthwise_conv.weight"]  # (hidden, 1, k, k)
        project = state[f"_blocks.{block}._project_conv.weight"]  # (out, hidden, 1, 1)
        expand = state.get(f"_blocks.{block}._expand_conv.weight")  # (hidden, in, 1, 1) or absent
        in_channels = depthwise.shape[0] if expand is None else expand.shape[1]
        from_file.append((depthwise.shape[-1], depthwise.shape[0] // in_channels, in_channels, project.shape[0]))
    assert from_table == from_file
    assert state["_conv_head.weight"].shape[:2] == (variant.head_channels, variant.stages[-1][5])


def test_efficientnet_lite_split_follows_the_stride_two_blocks() -> None:
    lite0 = EFFICIENTNET_LITE_VARIANTS["efficientnet_lite0"]
    lite2 = EFFICIENTNET_LITE_VARIANTS["efficientnet_lite2"]
    assert lite0.downsampling_blocks == (1, 3, 5, 11) and lite2.downsampling_blocks == (1, 4, 7, 15)
    assert lite0.split == ((0, 2), (2, 3), (3, 5), (5, 11), (11, 16))  # the split Lite0 always had
    assert lite2.split == ((0, 2), (2, 4), (4, 7), (7, 15), (15, 21))


def _real_images(real_samples: Path, names: list[str], size: int) -> torch.Tensor:
    images = []
    for name in names:
        image = np.asarray(Image.open(real_samples / name).convert("RGB"))
        images.append(torch.from_numpy(hwc_to_chw(normalize(pil_resize(image, (size, size), 3)))))
    return torch.stack(images)


@pytest.mark.parametrize(("name", "least_confidence"), [("efficientnet_lite0", 0.3), ("efficientnet_lite2", 0.15)])
def test_efficientnet_lite_is_the_real_imagenet_network(real_samples: Path, name: str, least_confidence: float) -> None:
    state = _lite_file(name)
    variant = EFFICIENTNET_LITE_VARIANTS[name]
    network = EfficientNetLite(variant, FixedBatchNorm2d, stride32_stride=2).eval()  # the original strides
    backbones.load_exact(network, state, source=name, ignore_prefixes=("_fc.",))
    names = ["voc/JPEGImages/2011_000025.jpg", "coco/images/000000343934.jpg", "coco/images/000000128372.jpg"]
    size = variant.input_size  # 224 (Lite0), 260 (Lite2)
    x = _real_images(real_samples, names, size)
    with torch.no_grad():
        features = network(x)
        logits = features.mean(dim=(2, 3)) @ state["_fc.weight"].T + state["_fc.bias"]  # the ImageNet head
    assert features.shape == (3, 1280, math.ceil(size / 32), math.ceil(size / 32))
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    top = [categories[index] for index in logits.argmax(dim=1).tolist()]
    assert top == ["school bus", "motor scooter", "streetcar"]
    assert float(logits.softmax(dim=1).amax(dim=1).min()) > least_confidence


@pytest.mark.parametrize("name", LITE_NAMES)
def test_efficientnet_lite_input_adapter_matches_stem_batchnorm_statistics(real_samples: Path, name: str) -> None:
    """The stem's BatchNorm running statistics describe the inputs the network was trained on:
    with the TensorFlow-Lite input map, real images give stem activations of the recorded variance."""
    state = _lite_file(name)
    names = [f"voc/JPEGImages/{name}.jpg" for name in ("2007_000063", "2011_000003", "2011_000006", "2011_000025")]
    names += [f"coco/images/{name}.jpg" for name in ("000000000089", "000000128372", "000000194216", "000000343934")]
    x = _real_images(real_samples, names, 224)
    log_variance_ratio = {}
    for adapter in ("tensorflow_lite", "none"):
        network = EfficientNetLite(EFFICIENTNET_LITE_VARIANTS[name], FixedBatchNorm2d, input_adapter=adapter)
        backbones.load_exact(network, state, source=name, ignore_prefixes=("_fc.",))
        with torch.no_grad():
            stem = network._conv_stem(network.input_adapter(x))
        live = network._bn0.running_var > 1e-3
        ratio = stem.var(dim=(0, 2, 3))[live] / network._bn0.running_var[live]
        log_variance_ratio[adapter] = float(ratio.log().median())
    assert abs(log_variance_ratio["tensorflow_lite"]) < 0.3
    assert log_variance_ratio["none"] > 1.0  # ImageNet-normalised input is ~2.2x too wide


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_fixed_batchnorm_matches_the_unfolded_network_in_float64(channels_last: bool) -> None:
    """EfficientNet-Lite's fixed BatchNorms are folded into their convolutions (and ReLU6 and the residual sums
    run in place): outputs and gradients must be those of the plain conv -> BatchNorm (eval) -> ReLU6 network,
    restated here by ``nn.BatchNorm2d`` in eval mode, which runs unfolded. In float64 they agree to rounding;
    in float32 the folded network is as close to the float64 result as the unfolded one is."""
    torch.manual_seed(0)
    folded = backbones.build_backbone("efficientnet_lite0", weights=None, frozen_batchnorm=True)
    for module in folded.modules():  # non-trivial statistics (a random network's are 0 and 1)
        if isinstance(module, FixedBatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    plain = backbones.build_backbone("efficientnet_lite0", weights=None, frozen_batchnorm=False)
    plain.load_state_dict(folded.state_dict())
    plain.eval()
    truth = backbones.build_backbone("efficientnet_lite0", weights=None, frozen_batchnorm=False).double()
    truth.load_state_dict(folded.state_dict())
    truth.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    image = torch.randn(2, 3, 70, 52)

    def outputs_and_gradients(network: nn.Module, dtype: torch.dtype) -> list[torch.Tensor]:
        network.to(memory_format=memory_format)
        network.zero_grad(set_to_none=True)
        x = image.to(dtype).contiguous(memory_format=memory_format).requires_grad_()
        features = network(x)
        weights = [torch.randn(f.shape, generator=torch.Generator().manual_seed(i)) for i, f in enumerate(features)]
        sum((f * w.to(dtype)).sum() for f, w in zip(features, weights, strict=True)).backward()
        named = dict(network.named_parameters())
        return [f.detach().double() for f in features] + [x.grad.double()] + [
            named[name].grad.double() for name in sorted(named)
        ]

    def worst(values: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
        return max(float((v - r).norm() / r.norm()) for v, r in zip(values, reference, strict=True))

    reference = outputs_and_gradients(truth, torch.float64)
    assert worst(outputs_and_gradients(folded.double(), torch.float64), reference) < 1e-12
    folded.float()
    folded_error = worst(outputs_and_gradients(folded, torch.float32), reference)
    plain_error = worst(outputs_and_gradients(plain, torch.float32), reference)
    assert folded_error < 1e-4
    assert folded_error < 10 * plain_error


def test_fixed_batchnorm_fold_is_the_affine_map_of_its_statistics() -> None:
    norm = FixedBatchNorm2d(3, eps=1e-3)
    norm.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    norm.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    norm.weight.data.copy_(torch.tensor([2.0, 1.0, -1.0]))
    norm.bias.data.copy_(torch.tensor([0.0, 1.0, 3.0]))
    weight = torch.ones(3, 1, 1, 1)
    folded_weight, folded_bias = norm.fold(weight)
    scale = torch.tensor([2.0, 1.0, -1.0]) / torch.sqrt(torch.tensor([4.0, 0.25, 1.0]) + 1e-3)
    torch.testing.assert_close(folded_weight.view(-1), scale)
    torch.testing.assert_close(folded_bias, torch.tensor([0.0, 1.0, 3.0]) - torch.tensor([0.5, -1.0, 2.0]) * scale)
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(F.conv2d(x, folded_weight, folded_bias, groups=3), norm(F.conv2d(x, weight, groups=3)))
