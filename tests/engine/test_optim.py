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


def test_step_schedule_decays_at_milestones_after_a_linear_warmup() -> None:
    from irn_core.engine.optim import step_schedule

    factor = step_schedule([12000, 16000], 0.1, warmup_steps=500, warmup_factor=1 / 3)
    assert factor(0) == pytest.approx(1 / 3)
    assert factor(250) == pytest.approx(1 / 3 * 0.5 + 0.5)
    assert factor(500) == 1.0 and factor(11999) == 1.0
    assert factor(12000) == pytest.approx(0.1) and factor(16000) == pytest.approx(0.01)


def test_parameter_group_weight_decay_and_multiplier() -> None:
    from irn_core.engine.optim import ParameterGroup, ScheduledSGD

    weights, biases = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    optimizer = ScheduledSGD(
        [ParameterGroup([weights], 10.0), ParameterGroup([biases], 20.0, weight_decay=0.0)],
        learning_rate=0.01, weight_decay=5e-4, momentum=0.9, schedule=lambda step: 0.5,
    )
    (weights.sum() + biases.sum()).backward()
    optimizer.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.05, 0.1])
    assert [group["weight_decay"] for group in optimizer.param_groups] == [5e-4, 0.0]


def test_schedule_length_from_epochs_steps_and_minimum() -> None:
    from irn_core.engine.training import schedule_length

    assert schedule_length(10582, 16, epochs=5) == 3305  # the reference's CAM schedule
    assert schedule_length(100, 16, epochs=8) == 48
    assert schedule_length(100, 16, epochs=8, min_steps=240) == 240
    assert schedule_length(100, 16, epochs=8, steps=30) == 30
    assert schedule_length(100, 16, epochs=8, steps=30, min_steps=50) == 50
    with pytest.raises(ValueError, match="fewer than one batch"):
        schedule_length(3, 4, epochs=1)


def test_train_loop_cycles_a_small_dataset_to_reach_min_steps() -> None:
    from dataclasses import dataclass

    from irn_core.engine.distributed import DistributedContext
    from irn_core.engine.training import train_loop

    class Samples(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.epochs_seen: list[int] = []

        def set_epoch(self, epoch: int) -> None:
            self.epochs_seen.append(epoch)

        def __len__(self) -> int:
            return 6

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            return {"x": torch.full((2,), float(index)), "y": torch.tensor([float(index)])}

    @dataclass
    class Settings:
        batch_size: int = 4
        epochs: int = 1
        num_workers: int = 0
        seed: int = 0
        learning_rate: float = 0.01
        weight_decay: float = 0.0
        momentum: float = 0.9
        poly_power: float = 0.9
        log_every: int = 2
        max_steps: int | None = None
        steps: int | None = None
        min_steps: int = 5
        precision: str = "float32"
        channels_last: bool = False

    layer = nn.Linear(2, 1)
    samples = Samples()

    def loss_step(network: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        error = network(batch["x"]) - batch["y"]
        return {"total": (error**2).mean(), "abs": error.abs().mean().detach()}

    record = train_loop(layer, samples, [(layer.parameters(), 1.0)], loss_step, Settings(),
                        device=torch.device("cpu"), context=DistributedContext(), name="t")
    assert record.steps == 5 and record.epochs == 5 and samples.epochs_seen == [0, 1, 2, 3, 4]
    assert set(record.loss_terms) == {"total", "abs"} and len(record.loss_terms["abs"]) == 5
    assert record.learning_rates[0] == pytest.approx(0.01) and record.learning_rates[-1] < 0.01
