"""SGD with scheduled learning rates: the reference's polynomial decay, and step decay with warm-up.

The reference's ``PolyOptimizer`` sets, before every step,
``lr_g = lr0_g * (1 - step / max_step) ** power`` (power 0.9) and — through a positional-argument
slip — runs SGD with momentum 1e-4. Here the momentum is an explicit argument (the ``paper``
preset passes 1e-4, the ``fixed`` preset 0.9); dampening 0, no Nesterov, weight decay per group.

Parameter groups are :class:`ParameterGroup` (parameters, learning-rate multiplier, optional
weight decay of their own: DeepLab v2 trains its classifier biases at 20x without weight decay)
or plain ``(parameters, multiplier)`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

Schedule = Callable[[int], float]
"""step (0-based, before the update) -> factor applied to every group's initial learning rate."""


@dataclass
class ParameterGroup:
    """Parameters trained at ``lr_multiplier`` x the base rate; ``weight_decay`` None: the optimizer's."""

    parameters: Iterable[nn.Parameter]
    lr_multiplier: float = 1.0
    weight_decay: float | None = None


GroupSpec = ParameterGroup | tuple[Iterable[nn.Parameter], float]


def poly_schedule(max_step: int, power: float = 0.9) -> Schedule:
    """``(1 - step / max_step) ** power`` (the reference's ``PolyOptimizer``; 0 from ``max_step`` on)."""
    if max_step < 1:
        raise ValueError(f"max_step must be >= 1, got {max_step}")

    def factor(step: int) -> float:
        return (1 - min(step, max_step) / max_step) ** power

    return factor


def step_schedule(
    milestones: Sequence[int], gamma: float = 0.1, *, warmup_steps: int = 0, warmup_factor: float = 1.0 / 3
) -> Schedule:
    """Detectron's ``steps_with_decay``: ``gamma ** (milestones passed)``, times a linear warm-up from
    ``warmup_factor`` to 1 over the first ``warmup_steps`` steps."""
    ordered = sorted(int(milestone) for milestone in milestones)

    def factor(step: int) -> float:
        decay = gamma ** sum(1 for milestone in ordered if step >= milestone)
        if step < warmup_steps:
            alpha = step / warmup_steps
            decay *= warmup_factor * (1 - alpha) + alpha
        return decay

    return factor


def _as_group(spec: GroupSpec) -> ParameterGroup:
    if isinstance(spec, ParameterGroup):
        return spec
    parameters, multiplier = spec
    return ParameterGroup(parameters, multiplier)


class ScheduledSGD(torch.optim.SGD):
    """SGD whose group learning rates are ``lr0_g * schedule(step)``, set before every step.

    ``groups``: :class:`ParameterGroup` or (parameters, multiplier) pairs; ``learning_rate`` is the
    base rate. Parameters with ``requires_grad=False`` are skipped, as are groups left empty.
    """

    def __init__(
        self,
        groups: Sequence[GroupSpec],
        *,
        learning_rate: float,
        weight_decay: float,
        momentum: float,
        schedule: Schedule,
    ) -> None:
        param_groups = []
        for spec in groups:
            group = _as_group(spec)
            trainable = [parameter for parameter in group.parameters if parameter.requires_grad]
            if trainable:
                decay = weight_decay if group.weight_decay is None else group.weight_decay
                param_groups.append(
                    {"params": trainable, "lr": learning_rate * group.lr_multiplier, "weight_decay": decay}
                )
        super().__init__(param_groups, lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
        self.initial_lrs = [group["lr"] for group in self.param_groups]
        self.global_step = 0
        self.schedule = schedule

    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        """Set this step's learning rates, then take an SGD step."""
        factor = self.schedule(self.global_step)
        for group, initial in zip(self.param_groups, self.initial_lrs, strict=True):
            group["lr"] = initial * factor
        loss = super().step(closure)
        self.global_step += 1
        return loss

    def state_dict(self):  # type: ignore[no-untyped-def]
        state = super().state_dict()
        state["global_step"] = self.global_step
        return state

    def load_state_dict(self, state_dict):  # type: ignore[no-untyped-def]
        state_dict = dict(state_dict)
        self.global_step = int(state_dict.pop("global_step", 0))
        super().load_state_dict(state_dict)


class PolySGD(ScheduledSGD):
    """:class:`ScheduledSGD` with the reference's poly schedule over ``max_step`` steps."""

    def __init__(
        self,
        groups: Sequence[GroupSpec],
        *,
        learning_rate: float,
        weight_decay: float,
        momentum: float,
        max_step: int,
        power: float = 0.9,
    ) -> None:
        super().__init__(
            groups,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            momentum=momentum,
            schedule=poly_schedule(max_step, power),
        )
        self.max_step = max_step
        self.power = power
