"""Networks: backbones (ResNet, EfficientNet-Lite0), the CAM network and IRNet."""

from irn_core.models.backbones import BACKBONE_NAMES, Backbone, FixedBatchNorm2d, build_backbone
from irn_core.models.cam import CAMNet
from irn_core.models.irnet import IRNet, MeanShift

__all__ = ["BACKBONE_NAMES", "Backbone", "CAMNet", "FixedBatchNorm2d", "IRNet", "MeanShift", "build_backbone"]
