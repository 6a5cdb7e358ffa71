"""Measure IRNet's training dynamics: loss terms, gradient norms per branch, dead units, field statistics.

A diagnostic of issue 10 (the displacement field collapses on real photos). Trains IRNet's heads for a
few steps on confident-region labels and prints, every ``--every`` steps, per step:

* the loss terms and ``displacement_fg`` / its constant-field value;
* the gradient norm of the boundary branch, of the displacement branch's hidden layers and of its
  last convolution;
* the fraction of zero (dead) activations entering the last convolution, and the spatial spread of
  the displacement output;
* the numbers of foreground / background / negative pairs in the batch.

Labels: ``--labels gt`` uses the ground-truth class map with an unknown band of ``--band`` pixels
around every region boundary (clean labels, to separate label noise from optimisation); ``--labels
PATH...`` reads ``ir_label_s1`` from IR-label shard files of a run.

    python benchmarks/real_photos/diagnose_irnet.py --config config/config.yaml real.yaml --steps 60
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch

from irn_core.config import load_config
from irn_core.irnet.train import IRNetTrainingDataset
from irn_core.engine.optim import ScheduledSGD, poly_schedule
from irn_core.relations.losses import affinity_displacement_loss
from irn_core.relations.pair_labels import pair_labels
from irn_core.relations.path_index import path_index
from irn_core.steps.common import open_run_dataset, split_ids
from irn_core.steps.irnet import build_irnet
from irn_core.store import ShardedStore


def gt_label_source(dataset, band: int):  # noqa: ANN001, ANN201
    def labels(image_id: str) -> np.ndarray:
        semantic = dataset.semantic_mask(image_id).copy()
        edges = np.zeros(semantic.shape, bool)
        edges[:-1] |= semantic[:-1] != semantic[1:]
        edges[1:] |= semantic[:-1] != semantic[1:]
        edges[:, :-1] |= semantic[:, :-1] != semantic[:, 1:]
        edges[:, 1:] |= semantic[:, :-1] != semantic[:, 1:]
        if band > 0:
            edges = scipy.ndimage.binary_dilation(edges, iterations=band)
        semantic[edges] = 255
        return semantic

    return labels


def grad_norm(parameters) -> float:  # noqa: ANN001
    total = 0.0
    for parameter in parameters:
        if parameter.grad is not None:
            total += float(parameter.grad.detach().pow(2).sum())
    return total**0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True)
    parser.add_argument("--labels", nargs="+", default=["gt"])
    parser.add_argument("--band", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--head-multiplier", type=float)
    parser.add_argument("--momentum", type=float)
    parser.add_argument("--displacement-scale", type=float, default=1.0, help="multiply the displacement output")
    parser.add_argument("--bg-weight", type=float, default=1.0, help="weight of displacement_bg in the total")
    parser.add_argument("--bg-warmup", type=int, default=0, help="steps over which the bg weight ramps from 0")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(arguments.config)
    train = config.irnet.train
    dataset = open_run_dataset(config)
    image_ids = split_ids(config, config.dataset.train_split)
    if arguments.labels == ["gt"]:
        labels = gt_label_source(dataset, arguments.band)
        store = None
    else:
        store = ShardedStore([Path(path) for path in arguments.labels], product="ir_labels")

        def labels(image_id: str) -> np.ndarray:
            return store.read(image_id, ["ir_label_s1"])["ir_label_s1"]

    torch.manual_seed(arguments.seed)
    model = build_irnet(config, cam_checkpoint=None, pretrained=True)
    learning_rate = arguments.learning_rate or train.optimizer.learning_rate
    multiplier = arguments.head_multiplier or train.optimizer.head_lr_multiplier
    momentum = arguments.momentum if arguments.momentum is not None else config.momentum(train.optimizer)
    boundary_parameters, displacement_parameters = model.parameter_groups()
    optimizer = ScheduledSGD(
        [(boundary_parameters, 1.0), (displacement_parameters, multiplier)],
        learning_rate=learning_rate, weight_decay=train.optimizer.weight_decay, momentum=momentum,
        schedule=poly_schedule(arguments.steps, train.optimizer.poly_power),
    )
    last_conv = model.displacement7[1]
    hidden = [parameter for parameter in displacement_parameters if parameter is not last_conv.weight]
    captured: dict[str, torch.Tensor] = {}
    last_conv.register_forward_hook(lambda module, inputs, output: captured.__setitem__("features", inputs[0].detach()))
    training_set = IRNetTrainingDataset(
        dataset, image_ids, labels, crop_size=train.crop_size, scale_range=train.scale_range, seed=arguments.seed
    )
    batch_size = arguments.batch_size or train.batch_size
    loader = torch.utils.data.DataLoader(training_set, batch_size=batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(arguments.seed))
    index = path_index(train.radius)
    target = np.abs(index.directions).sum(axis=1) / 2.0
    model.train()
    rows = []
    step = 0
    print(f"images {len(image_ids)}, lr {learning_rate}, head x{multiplier}, momentum {momentum}, batch {batch_size}, "
          f"crop {train.crop_size}, displacement scale {arguments.displacement_scale}, bg weight {arguments.bg_weight}", flush=True)
    while step < arguments.steps:
        training_set.set_epoch(step)
        for batch in loader:
            if step >= arguments.steps:
                break
            boundary_logits, displacement = model(batch["image"])
            displacement = displacement * arguments.displacement_scale
            losses = affinity_displacement_loss(boundary_logits, displacement, batch["label"], index)
            optimizer.zero_grad(set_to_none=True)
            ramp = min(1.0, step / arguments.bg_warmup) if arguments.bg_warmup else 1.0
            weight = arguments.bg_weight * ramp
            (losses["total"] - (1 - weight) * losses["displacement_bg"] / 2).backward()
            pairs = pair_labels(batch["label"], index)
            fg_per_direction = pairs.fg_pos.sum(dim=(0, 2, 3)).double().numpy()
            constant = float((fg_per_direction * target).sum() / max(fg_per_direction.sum(), 1))
            row = {
                "step": step + 1,
                **{name: float(value.detach()) for name, value in losses.items()},
                "displacement_fg_constant": constant,
                "grad_boundary": grad_norm(boundary_parameters),
                "grad_displacement_hidden": grad_norm(hidden),
                "grad_displacement_last": grad_norm([last_conv.weight]),
                "dead_fraction": float((captured["features"] == 0).float().mean()),
                "feature_spatial_std": float(captured["features"].std(dim=(2, 3)).mean()),
                "displacement_spatial_std": float(displacement.detach().std(dim=(2, 3)).mean()),
                "displacement_mean_abs": float(displacement.detach().abs().mean()),
                "pairs_fg": int(pairs.fg_pos.sum()),
                "pairs_bg": int(pairs.bg_pos.sum()),
                "pairs_neg": int(pairs.neg.sum()),
            }
            optimizer.step()
            rows.append(row)
            step += 1
            if step % arguments.every == 0 or step == 1:
                print(" ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                               for key, value in row.items()), flush=True)
    if arguments.json:
        arguments.json.write_text(json.dumps(rows))
    if store is not None:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
