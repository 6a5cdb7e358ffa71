"""Run by tests/engine/test_distributed.py under torchrun: a few training steps, state saved by rank 0."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_dataset import TinyDataset  # noqa: E402

from irn_core.cam.train import CAMTrainSettings, train_cam  # noqa: E402
from irn_core.engine import distributed  # noqa: E402


def tiny_maskrcnn() -> torch.nn.Module:
    """The network of the parity test (also built by the test to check that training changed it)."""
    from irn_core.models.maskrcnn import build_mask_rcnn

    torch.manual_seed(0)
    return build_mask_rcnn(
        backbone="resnet18_fpn", num_classes=3, weights="none", frozen_stages=1, fpn_channels=16, box_head_channels=32,
        mask_head_channels=16, min_size=40, max_size=48, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
        # 4 proposals a image, one positive (its ground-truth boxes are proposals too): every process then
        # normalises its losses by the same counts per image, the condition for DDP parity
        roi_batch_size_per_image=4, roi_positive_fraction=0.25,
    )


def train_tiny_maskrcnn(dataset: TinyDataset, ids: list[str], context: distributed.DistributedContext):  # noqa: ANN201
    from irn_core.maskrcnn.train import (
        GroundTruthInstances,
        MaskRCNNTrainingDataset,
        MaskRCNNTrainSettings,
        train_mask_rcnn,
    )

    model = tiny_maskrcnn()
    samples = MaskRCNNTrainingDataset(dataset, ids, GroundTruthInstances(dataset), num_classes=3, seed=4)
    settings = MaskRCNNTrainSettings(batch_size=4, learning_rate=0.02, lr_steps=(), steps=3, warmup_steps=0,
                                     num_workers=0, seed=4)
    record = train_mask_rcnn(model, samples, settings, device=torch.device("cpu"), context=context)
    return model, record


def main(kind: str, output: str) -> None:
    torch.set_num_threads(1)
    context = distributed.setup("cpu")
    dataset = TinyDataset(8)
    ids = dataset.ids("train")
    if kind == "cam":
        settings = CAMTrainSettings(
            backbone="resnet18", weights="none", frozen_batchnorm=True, frozen_stages=0, batch_size=4, epochs=1,
            crop_size=32, resize_long=(32, 48), learning_rate=0.05, head_lr_multiplier=10.0, weight_decay=1e-4,
            momentum=0.9, poly_power=0.9, num_workers=0, seed=3,
        )
        model, record = train_cam(dataset, ids, settings, device=torch.device("cpu"), context=context)
    elif kind == "deeplab":
        from irn_core.deeplab.train import DeepLabTrainSettings, train_deeplab

        settings = DeepLabTrainSettings(
            backbone="resnet18", weights="none", batch_size=4, steps=2, crop_size=32, scales=(0.75, 1.25),
            input_scales=(0.75,), learning_rate=1e-3, seed=7,
        )
        model, record = train_deeplab(dataset, ids, dataset.semantic_mask, settings, device=torch.device("cpu"),
                                      context=context)
    elif kind == "maskrcnn":
        model, record = train_tiny_maskrcnn(dataset, ids, context)
    else:
        from irn_core.irnet.train import IRNetTrainSettings, train_irnet
        from irn_core.models.backbones import build_backbone
        from irn_core.models.irnet import IRNet

        torch.manual_seed(0)
        model = IRNet(build_backbone("resnet18", weights="none"))
        settings = IRNetTrainSettings(
            batch_size=4, epochs=1, crop_size=48, scale_range=(0.8, 1.2), radius=5, learning_rate=0.1,
            head_lr_multiplier=10.0, weight_decay=1e-4, momentum=0.9, poly_power=0.9, num_workers=0, seed=5,
        )
        record = train_irnet(model, dataset, ids, dataset.ir_label, settings, device=torch.device("cpu"), context=context)
    if context.is_main:
        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        # the logged losses of the global batch, compared between 1 and 2 processes like the weights
        state["recorded_losses"] = torch.tensor(record.losses, dtype=torch.float64)
        torch.save(state, output)
    distributed.barrier(context)
    distributed.teardown(context)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
