"""Networks: backbones (ResNet, EfficientNet-Lite0), the CAM network, IRNet and DeepLab v2."""

from irn_core.models.backbones import BACKBONE_NAMES, Backbone, FixedBatchNorm2d, build_backbone
from irn_core.models.cam import CAMNet
from irn_core.models.deeplab import DeepLabV2
from irn_core.models.irnet import IRNet, MeanShift

__all__ = [
    "BACKBONE_NAMES", "Backbone", "CAMNet", "DeepLabV2", "FixedBatchNorm2d", "IRNet", "MeanShift", "build_backbone",
]
