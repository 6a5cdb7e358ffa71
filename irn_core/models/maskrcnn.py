"""Mask R-CNN (torchvision's implementation) on a feature pyramid over one of our backbones.

The paper trains Detectron's Mask R-CNN with a ResNet-50-FPN on the instance pseudo labels. Here the
detector is torchvision's :class:`~torchvision.models.detection.MaskRCNN` (RPN, RoIAlign box head and
mask head, the losses) on a feature pyramid built by :class:`FeaturePyramidBackbone`:

* the body is a backbone of :func:`irn_core.models.backbones.build_backbone` (same ImageNet weights and
  fixed BatchNorm as the CAM network and IRNet) whose last stage gets back the stride 2 of the original
  network (:func:`restore_last_stride`), so its five stages have strides 4, 4, 8, 16, 32;
* torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork` reads stages 2-5 (strides 4, 8, 16, 32:
  ResNet ``layer1`` .. ``layer4`` as in ``maskrcnn_resnet50_fpn``; EfficientNet-Lite0 blocks 2, 3-4, 5-10
  and 11-15 + the 1280-channel head convolution, Lite2 blocks 2-3, 4-6, 7-14 and 15-20 + the head)
  and adds a max-pooled stride-64 level, the five maps
  ``"0", "1", "2", "3", "pool"`` that torchvision's RPN and RoI heads expect;
* stages below ``frozen_stages`` get no gradient (``frozen_stages=2``: ResNet ``conv1`` + ``layer1``,
  torchvision's ``trainable_backbone_layers=3`` and Detectron's ``FREEZE_AT: 2``);
* with ``frozen_batchnorm`` the body's BatchNorms use their running statistics *and* keep their affine
  parameters (torchvision's ``FrozenBatchNorm2d``, Detectron's ``AffineChannel``).

With ``backbone="resnet50_fpn"``, ``fpn_channels=256``, ``box_head_channels=1024``,
``mask_head_channels=256`` and the defaults of :func:`build_mask_rcnn`, the network is the
architecture of ``torchvision.models.detection.maskrcnn_resnet50_fpn`` (and of Detectron's
``e2e_mask_rcnn_R-50-FPN``). Smaller pyramid and head widths make it fit a CPU.

EfficientNet-Lite0's stage outputs are linear bottleneck projections with a standard deviation of
~8 (ResNet's post-ReLU maps are ~1); ``fpn_norm="group_norm"`` adds GroupNorm to the pyramid's
convolutions so that the heads see normalised features whatever the body.

:class:`KeyedSampler` replaces torchvision's balanced positive/negative samplers so that the anchors and
proposals sampled for an image depend only on a per-sample key (seed, epoch, index), not on the global
random state or on which process holds the image: one process and several (DDP) then draw the same
samples.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from irn_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from irn_core.errors import ConfigError
from irn_core.models.backbones import BACKBONE_NAMES, Backbone, build_backbone

logger = logging.getLogger(__name__)

MASKRCNN_BACKBONES: tuple[str, ...] = tuple(f"{name}_fpn" for name in BACKBONE_NAMES)
"""``<backbone>_fpn`` for every backbone of the registry (the paper: ``resnet50_fpn``)."""

PYRAMID_STAGES: tuple[int, ...] = (1, 2, 3, 4)
"""Backbone stages (0-based) the pyramid reads: strides 4, 8, 16, 32."""

FPN_GROUPS = 32
"""GroupNorm groups of ``fpn_norm="group_norm"`` (fewer when the channel count is not a multiple)."""


def restore_last_stride(backbone: Backbone) -> Backbone:
    """Give the backbone's last stage the stride 2 of the original network (in place).

    :func:`~irn_core.models.backbones.build_backbone` sets it to 1 (output stride 16, as the reference's
    CAM network); a feature pyramid wants strides 4, 8, 16, 32. ResNet: ``layer4``'s first block (3x3
    convolution of a bottleneck, first convolution of a basic block, and the shortcut); EfficientNet-Lite:
    the depthwise convolution of the stage's first block (Lite0: 11, Lite2: 15; its padding is computed
    from the stride, TensorFlow "SAME").
    """
    last_stage = backbone.stages[-1]
    first_block = last_stage[0]
    if backbone.name.startswith("efficientnet_lite"):
        first_block._depthwise_conv.stride = (2, 2)
    elif backbone.name.startswith("resnet"):
        convolution = first_block.conv2 if hasattr(first_block, "conv3") else first_block.conv1
        convolution.stride = (2, 2)
        first_block.downsample[0].stride = (2, 2)
    else:
        raise ConfigError(f"do not know how to restore the last stride of backbone {backbone.name!r}")
    backbone.strides = (4, 4, 8, 16, 32)
    return backbone


def freeze_normalisation(module: nn.Module) -> None:
    """No gradient for the affine weight and bias of every BatchNorm in ``module`` (in place): with
    fixed statistics this is torchvision's ``FrozenBatchNorm2d`` and Detectron's ``AffineChannel``."""
    for child in module.modules():
        if isinstance(child, nn.BatchNorm2d):
            for parameter in child.parameters():
                parameter.requires_grad_(False)


def _group_norm(channels: int) -> nn.Module:
    groups = FPN_GROUPS
    while channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, channels)


class FeaturePyramidBackbone(nn.Module):
    """A five-stage backbone (strides 4, 4, 8, 16, 32) under a feature pyramid.

    ``forward(x)`` with ``x``: (B, 3, H, W) normalised images returns an ``OrderedDict`` of five maps of
    ``out_channels`` channels: ``"0"`` .. ``"3"`` at strides 4, 8, 16, 32 (ceil division), ``"pool"`` at 64.
    """

    def __init__(self, body: Backbone, *, out_channels: int, frozen_stages: int = 0, norm: str = "none") -> None:
        super().__init__()
        if not 0 <= frozen_stages <= len(body.stages):
            raise ConfigError(f"frozen_stages must be in 0..{len(body.stages)}, got {frozen_stages}")
        if norm not in ("none", "group_norm"):
            raise ConfigError(f"fpn norm must be 'none' or 'group_norm', got {norm!r}")
        self.body = body
        self.frozen_stages = frozen_stages
        self.fpn = FeaturePyramidNetwork(
            [body.channels[stage] for stage in PYRAMID_STAGES],
            out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=_group_norm if norm == "group_norm" else None,
        )
        self.out_channels = out_channels
        for stage in body.stages[:frozen_stages]:
            for parameter in stage.parameters():
                parameter.requires_grad_(False)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        features = {}
        for index, stage in enumerate(self.body.stages):
            x = stage(x)
            if index in PYRAMID_STAGES:
                features[str(PYRAMID_STAGES.index(index))] = x
        return self.fpn(OrderedDict(features))


class KeyedSampler(BalancedPositiveNegativeSampler):
    """torchvision's balanced positive / negative sampling with a random draw per image from its key.

    Set ``keys`` (one int per image of the batch, e.g. drawn from (seed, epoch, sample index)) before a
    training forward; image i's positives and negatives are then drawn with a generator seeded by
    ``(keys[i], stream)``. With ``keys`` None it is torchvision's sampler (global random state).
    The sampling rule is the same: up to ``batch_size_per_image * positive_fraction`` positives (values
    >= 1), negatives (value 0) for the rest, values -1 ignored.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float, *, stream: int) -> None:
        super().__init__(batch_size_per_image, positive_fraction)
        self.stream = stream
        self.keys: list[int] | None = None

    def __call__(self, matched_idxs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        if self.keys is None:
            return super().__call__(matched_idxs)
        if len(self.keys) != len(matched_idxs):
            raise ValueError(f"{len(self.keys)} sampling keys for a batch of {len(matched_idxs)} images")
        positive_masks, negative_masks = [], []
        for key, matched in zip(self.keys, matched_idxs):
            generator = torch.Generator().manual_seed((int(key) * 2 + self.stream) % (2**63))
            positive = torch.where(matched >= 1)[0]
            negative = torch.where(matched == 0)[0]
            positive_count = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            negative_count = min(negative.numel(), self.batch_size_per_image - positive_count)
            chosen_positive = torch.randperm(positive.numel(), generator=generator)[:positive_count]
            chosen_negative = torch.randperm(negative.numel(), generator=generator)[:negative_count]
            positive_mask = torch.zeros_like(matched, dtype=torch.uint8)
            negative_mask = torch.zeros_like(matched, dtype=torch.uint8)
            positive_mask[positive[chosen_positive.to(positive.device)]] = 1
            negative_mask[negative[chosen_negative.to(negative.device)]] = 1
            positive_masks.append(positive_mask)
            negative_masks.append(negative_mask)
        return positive_masks, negative_masks


def set_sampling_keys(model: MaskRCNN, keys: Sequence[int] | None) -> None:
    """Set (or clear, with None) the per-image keys of the RPN's and the RoI heads' samplers."""
    for sampler in (model.rpn.fg_bg_sampler, model.roi_heads.fg_bg_sampler):
        if isinstance(sampler, KeyedSampler):
            sampler.keys = None if keys is None else [int(key) for key in keys]


def build_mask_rcnn(
    *,
    backbone: str,
    num_classes: int,
    weights: str | None = "imagenet",
    frozen_batchnorm: bool = True,
    frozen_stages: int = 2,
    fpn_channels: int = 256,
    fpn_norm: str = "none",
    box_head_channels: int = 1024,
    mask_head_channels: int = 256,
    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    min_size: int = 512,
    max_size: int = 800,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_nms_threshold: float = 0.7,
    rpn_fg_iou_threshold: float = 0.7,
    rpn_bg_iou_threshold: float = 0.3,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    roi_fg_iou_threshold: float = 0.5,
    roi_bg_iou_threshold: float = 0.5,
    roi_batch_size_per_image: int = 512,
    roi_positive_fraction: float = 0.25,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
) -> MaskRCNN:
    """torchvision's Mask R-CNN on a feature pyramid over backbone ``<name>_fpn`` (:data:`MASKRCNN_BACKBONES`).

    ``num_classes``: foreground classes (the network predicts ``num_classes + 1`` with background 0).
    ``weights``: the body's weights as :func:`~irn_core.models.backbones.build_backbone` takes them
    (``"imagenet"``, ``"none"`` or a file); the pyramid and heads start from torchvision's initialisation.
    The defaults are the paper's recipe (Detectron's R-50-FPN: anchors 32..512 at ratios 0.5/1/2, one
    size per pyramid level; RPN 256 anchors per image at IoU 0.7/0.3, pre/post-NMS top-N 2000/2000 in
    training, 1000/1000 at test, NMS 0.7; 512 RoIs per image, a quarter positive at IoU 0.5; test score
    threshold 0.05, NMS 0.5, 100 detections; short side 512, long side at most 800). Input images are
    float (3, H, W) in [0, 1]; the model normalises them with the ImageNet mean and deviation.
    """
    if backbone not in MASKRCNN_BACKBONES:
        raise ConfigError(f"unknown Mask R-CNN backbone {backbone!r}; choose one of {', '.join(MASKRCNN_BACKBONES)}")
    if num_classes < 1:
        raise ConfigError(f"Mask R-CNN needs at least one foreground class, got {num_classes}")
    body = build_backbone(backbone.removesuffix("_fpn"), weights=weights, frozen_batchnorm=frozen_batchnorm)
    if frozen_batchnorm:
        freeze_normalisation(body)
    pyramid = FeaturePyramidBackbone(
        restore_last_stride(body), out_channels=fpn_channels, frozen_stages=frozen_stages, norm=fpn_norm
    )
    levels = len(PYRAMID_STAGES) + 1
    if len(anchor_sizes) != levels:
        raise ConfigError(f"anchor_sizes needs one size per pyramid level ({levels}), got {list(anchor_sizes)}")
    anchors = AnchorGenerator(
        sizes=tuple((int(size),) for size in anchor_sizes),
        aspect_ratios=(tuple(float(ratio) for ratio in aspect_ratios),) * levels,
    )
    classes = num_classes + 1
    model = MaskRCNN(
        pyramid,
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        rpn_nms_thresh=rpn_nms_threshold,
        rpn_fg_iou_thresh=rpn_fg_iou_threshold,
        rpn_bg_iou_thresh=rpn_bg_iou_threshold,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        rpn_positive_fraction=rpn_positive_fraction,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_channels),
        box_predictor=FastRCNNPredictor(box_head_channels, classes),
        box_score_thresh=score_threshold,
        box_nms_thresh=nms_threshold,
        box_detections_per_img=detections_per_image,
        box_fg_iou_thresh=roi_fg_iou_threshold,
        box_bg_iou_thresh=roi_bg_iou_threshold,
        box_batch_size_per_image=roi_batch_size_per_image,
        box_positive_fraction=roi_positive_fraction,
        mask_head=MaskRCNNHeads(fpn_channels, (mask_head_channels,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask_head_channels, mask_head_channels, classes),
    )
    model.rpn.fg_bg_sampler = KeyedSampler(rpn_batch_size_per_image, rpn_positive_fraction, stream=0)
    model.roi_heads.fg_bg_sampler = KeyedSampler(roi_batch_size_per_image, roi_positive_fraction, stream=1)
    logger.info(
        "built Mask R-CNN %s (%d classes + background, pyramid %d channels, frozen stages %d)",
        backbone, num_classes, fpn_channels, frozen_stages,
    )
    return model


def parameter_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, biases) among the trainable parameters (Detectron trains biases at 2x lr, no decay).

    A parameter counts as a bias when its name ends in ``.bias`` (convolution, linear and the affine
    shift of normalisation layers)."""
    weights, biases = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (biases if name.endswith(".bias") else weights).append(parameter)
    return weights, biases
