"""Mask R-CNN inference: one image in, instances at the image's full resolution out."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.models.detection import MaskRCNN

from irn_core.errors import InputError
from irn_core.instances import InstanceLabels


def image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> float (3, H, W) in [0, 1] on ``device`` (what the model takes)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(device).float() / 255.0


@torch.inference_mode()
def predict_instances(model: MaskRCNN, image: np.ndarray, *, mask_threshold: float = 0.5) -> InstanceLabels:
    """Detections of ``model`` (in eval mode) on ``image`` (H, W, 3) uint8, on the model's device.

    Returns ``masks`` (N, H, W) bool (mask probability, pasted at full resolution, > ``mask_threshold``),
    ``class_ids`` (N,) int64 0-based, ``scores`` (N,) float32, by decreasing score (at most the model's
    ``detections_per_img``, scores above its ``score_thresh``).
    """
    if model.training:
        raise InputError("predict_instances needs the model in eval mode (model.eval())")
    device = next(model.parameters()).device
    (output,) = model([image_tensor(image, device)])
    scores = output["scores"].float().cpu().numpy()
    order = np.argsort(-scores, kind="stable")
    masks = (output["masks"][:, 0] > mask_threshold).cpu().numpy()[order]
    class_ids = (output["labels"].cpu().numpy().astype(np.int64) - 1)[order]
    return InstanceLabels(masks=masks.astype(bool), class_ids=class_ids, scores=scores[order].astype(np.float32))
