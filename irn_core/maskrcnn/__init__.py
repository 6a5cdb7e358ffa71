"""Mask R-CNN trained on the instance pseudo labels (the paper's downstream instance segmentation)."""
