"""The poly learning-rate SGD against a restatement of the reference schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from irn_core.engine.optim import PolySGD


def test_poly_schedule_matches_the_reference_formula_and_the_logged_value() -> None:
    backbone, head = nn.Linear(3, 3), nn.Linear(3, 1)
    frozen = nn.Parameter(torch.zeros(2), requires_grad=False)
    optimizer = PolySGD(
        [(list(backbone.parameters()) + [frozen], 1.0), (head.parameters(), 10.0)],
        learning_rate=0.1, weight_decay=1e-4, momentum=1e-4, max_step=3305, power=0.9,
    )
    assert sum(len(group["params"]) for group in optimizer.param_groups) == 4  # frozen one skipped
    seen = []
    for step in range(101):
        loss = head(backbone(torch.ones(1, 3))).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen.append([group["lr"] for group in optimizer.param_groups])
        assert seen[-1][0] == pytest.approx(0.1 * (1 - step / 3305) ** 0.9)
        assert seen[-1][1] == pytest.approx(1.0 * (1 - step / 3305) ** 0.9)
    # The author's log (irn#13) prints lr 0.0973 at step 100 of 3305.
    assert round(seen[100][0], 4) == 0.0973
    assert optimizer.param_groups[0]["momentum"] == 1e-4
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_momentum_1e4_is_practically_plain_sgd_and_0_9_is_not() -> None:
    def run(momentum: float) -> torch.Tensor:
        torch.manual_seed(0)
        layer = nn.Linear(2, 1, bias=False)
        optimizer = PolySGD([(layer.parameters(), 1.0)], learning_rate=0.1, weight_decay=0.0,
                            momentum=momentum, max_step=10**9)
        for _ in range(5):
            optimizer.zero_grad()
            layer(torch.ones(1, 2)).sum().backward()
            optimizer.step()
        return layer.weight.detach().clone()

    torch.manual_seed(0)
    start = nn.Linear(2, 1, bias=False).weight.detach().clone()
    # gradient of sum(w . 1) is 1 for both weights; plain SGD moves 5 * 0.1 = 0.5
    assert torch.allclose(run(1e-4), start - 0.5, atol=1e-3)
    assert not torch.allclose(run(0.9), start - 0.5, atol=1e-2)


def test_state_dict_round_trip_keeps_the_step() -> None:
    layer = nn.Linear(2, 1)
    optimizer = PolySGD([(layer.parameters(), 1.0)], learning_rate=0.1, weight_decay=0.0, momentum=0.9, max_step=10)
    for _ in range(3):
        optimizer.zero_grad()
        layer(torch.ones(1, 2)).sum().backward()
        optimizer.step()
    restored = PolySGD([(layer.parameters(), 1.0)], learning_rate=0.1, weight_decay=0.0, momentum=0.9, max_step=10)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.global_step == 3
    with pytest.raises(ValueError):
        PolySGD([(layer.parameters(), 1.0)], learning_rate=0.1, weight_decay=0.0, momentum=0.9, max_step=0)
