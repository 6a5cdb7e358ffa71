"""SGD with the reference's polynomial learning-rate decay.

The reference's ``PolyOptimizer`` sets, before every step,
``lr_g = lr0_g * (1 - step / max_step) ** power`` (power 0.9) and — through a positional-argument
slip — runs SGD with momentum 1e-4. Here the momentum is an explicit argument (the ``paper``
preset passes 1e-4, the ``fixed`` preset 0.9); dampening 0, no Nesterov, weight decay per group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn


class PolySGD(torch.optim.SGD):
    """SGD whose group learning rates follow ``lr0 * (1 - step / max_step) ** power``.

    ``groups``: (parameters, learning-rate multiplier) pairs; ``learning_rate`` is the base rate.
    Parameters with ``requires_grad=False`` are skipped.
    """

    def __init__(
        self,
        groups: Sequence[tuple[Iterable[nn.Parameter], float]],
        *,
        learning_rate: float,
        weight_decay: float,
        momentum: float,
        max_step: int,
        power: float = 0.9,
    ) -> None:
        if max_step < 1:
            raise ValueError(f"max_step must be >= 1, got {max_step}")
        param_groups = []
        for parameters, multiplier in groups:
            trainable = [parameter for parameter in parameters if parameter.requires_grad]
            if trainable:
                param_groups.append(
                    {"params": trainable, "lr": learning_rate * multiplier, "weight_decay": weight_decay}
                )
        super().__init__(param_groups, lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
        self.initial_lrs = [group["lr"] for group in self.param_groups]
        self.global_step = 0
        self.max_step = max_step
        self.power = power

    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        """Set this step's learning rates, then take an SGD step."""
        if self.global_step < self.max_step:
            factor = (1 - self.global_step / self.max_step) ** self.power
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
