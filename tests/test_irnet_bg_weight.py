"""The weight of IRNet's background displacement term (issue 10) and its preset resolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from irn_core.config import load_config
from irn_core.engine.distributed import DistributedContext
from irn_core.irnet.train import _loss_step
from irn_core.relations.losses import affinity_displacement_loss
from irn_core.relations.path_index import path_index


class _FixedOutputs(nn.Module):
    def __init__(self, logits: torch.Tensor, displacement: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.displacement = logits, displacement

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits, self.displacement


@pytest.mark.parametrize("weight", [1.0, 0.1, 0.0])
def test_loss_step_weights_the_background_term(weight: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 24, 28, generator=generator)
    displacement = torch.randn(2, 2, 24, 28, generator=generator, requires_grad=True)
    labels = torch.zeros(2, 24, 28, dtype=torch.uint8)
    labels[:, 4:20, 6:22] = 2
    labels[:, 10:12] = 255
    reference = affinity_displacement_loss(logits, displacement, labels, path_index(10))
    losses = _loss_step(10, DistributedContext(), weight)(
        _FixedOutputs(logits, displacement), {"image": torch.zeros(2, 3, 96, 112), "label": labels}
    )
    expected = (reference["pos_bg"] / 2 + reference["pos_fg"] / 2 + reference["neg"]) / 2 + (
        reference["displacement_fg"] + weight * reference["displacement_bg"]
    ) / 2
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["displacement_bg"].item() == pytest.approx(reference["displacement_bg"].item())  # recorded unweighted
    assert "displacement_fg_constant" in losses
    # the weight scales the background term's gradient and nothing else
    (gradient,) = torch.autograd.grad(losses["total"], displacement)
    fg_gradient, bg_gradient = (torch.autograd.grad(reference[name], displacement, retain_graph=True)[0]
                                for name in ("displacement_fg", "displacement_bg"))
    torch.testing.assert_close(gradient, (fg_gradient + weight * bg_gradient) / 2)


def test_preset_resolves_the_weight() -> None:
    assert load_config([], {"preset": "paper"}).displacement_bg_weight() == 1.0
    assert load_config([], {"preset": "fixed"}).displacement_bg_weight() == 0.1
    explicit = load_config([], {"preset": "fixed", "irnet": {"train": {"displacement_bg_weight": 1.0}}})
    assert explicit.displacement_bg_weight() == 1.0
