"""Write "oracle" CAMs from a dataset's ground truth, in the reference's ``<id>.npy`` format.

For isolating IRNet's displacement field on real photos: with ``cam.import_dir`` pointing at these
files the pipeline skips the CAM network, and the confident-region labels, IRNet and the pseudo labels
all run as usual. The instance pseudo labels then differ only by how well the displacement field
separates instances of one class (the class maps are already right), so before/after comparisons of
IRNet's training measure the displacement field alone. Not CAMs a method would produce: a diagnostic.

Per image: ``keys`` = the classes present; ``high_res`` (K, H, W) = the class masks of the semantic
ground truth (1 inside, 0 outside; void counts as outside); ``cam`` (K, ceil(H/4), ceil(W/4)) = their
mean over each 4 x 4 cell (area downsampling). Values in [0, 1], each channel's maximum 1 as the
reference's normalised CAMs.

    python benchmarks/real_photos/oracle_cams.py --config config/config.yaml real.yaml --out DIR
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from irn_core.config import load_config
from irn_core.interop import write_reference_cam
from irn_core.steps.common import open_run_dataset, split_ids


def oracle_cam(semantic: np.ndarray, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cam_s4 (K, ceil(H/4), ceil(W/4)), high_res (K, H, W)) float32 from a (H, W) semantic map."""
    height, width = semantic.shape
    high_res = np.stack([(semantic == class_id + 1) for class_id in class_ids]).astype(np.float32)
    padded_height, padded_width = 4 * math.ceil(height / 4), 4 * math.ceil(width / 4)
    padded = np.zeros((len(class_ids), padded_height, padded_width), np.float32)
    padded[:, :height, :width] = high_res
    cam = padded.reshape(len(class_ids), padded_height // 4, 4, padded_width // 4, 4).mean(axis=(2, 4))
    cam /= np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-5)
    return cam, high_res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True)
    parser.add_argument("--out", required=True, type=Path)
    arguments = parser.parse_args(argv)
    config = load_config(arguments.config)
    dataset = open_run_dataset(config)
    ids = sorted(set(split_ids(config, config.dataset.train_split)) | set(split_ids(config, config.dataset.infer_split)))
    for image_id in ids:
        class_ids = dataset.class_labels(image_id)
        cam, high_res = oracle_cam(dataset.semantic_mask(image_id), class_ids)
        write_reference_cam(arguments.out / f"{image_id}.npy", class_ids, cam, high_res)
    sys.stdout.write(f"wrote {len(ids)} oracle CAM files to {arguments.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
