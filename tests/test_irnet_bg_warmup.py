"""The background-displacement warm-up of IRNet's loss (issue 10) and its preset resolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from irn_core.config import load_config
from irn_core.engine.distributed import DistributedContext
from irn_core.irnet.train import _loss_step, displacement_bg_schedule
from irn_core.relations.losses import affinity_displacement_loss
from irn_core.relations.path_index import path_index


def test_schedule_ramps_then_holds() -> None:
    schedule = displacement_bg_schedule(10, 1.0, 0.5)
    assert [schedule(step) for step in range(7)] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert [displacement_bg_schedule(10, 0.5, 0.0)(step) for step in (0, 9)] == [0.5, 0.5]


class _FixedOutputs(nn.Module):
    def __init__(self, logits: torch.Tensor, displacement: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.displacement = logits, displacement

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits, self.displacement


def test_loss_step_weights_the_background_term_per_step() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 24, 28, generator=generator)
    displacement = torch.randn(2, 2, 24, 28, generator=generator)
    labels = torch.zeros(2, 24, 28, dtype=torch.uint8)
    labels[:, 4:20, 6:22] = 2
    labels[:, 10:12] = 255
    reference = affinity_displacement_loss(logits, displacement, labels, path_index(10))
    step = _loss_step(10, DistributedContext(), displacement_bg_schedule(4, 1.0, 0.5))
    network = _FixedOutputs(logits, displacement)
    batch = {"image": torch.zeros(2, 3, 96, 112), "label": labels}
    for weight in (0.0, 0.5, 1.0, 1.0):
        losses = step(network, batch)
        expected = reference["total"] - (1 - weight) * reference["displacement_bg"] / 2
        assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
        assert losses["displacement_bg"].item() == pytest.approx(reference["displacement_bg"].item())
        assert losses["displacement_bg_weight"].item() == pytest.approx(weight)
        assert "displacement_fg_constant" in losses


def test_preset_resolves_the_warmup() -> None:
    assert load_config([], {"preset": "paper"}).displacement_bg_warmup() == 0.0
    assert load_config([], {"preset": "fixed"}).displacement_bg_warmup() == 0.3
    explicit = load_config([], {"preset": "fixed", "irnet": {"train": {"displacement_bg_warmup": 0.0}}})
    assert explicit.displacement_bg_warmup() == 0.0
