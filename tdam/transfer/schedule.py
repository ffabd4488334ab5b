"""ASL's learning-rate schedule: torch's ``OneCycleLR`` stepped per iteration (as ASL's train.py), for the trainer.

:class:`OneCycleSchedule` gives the values of ``torch.optim.lr_scheduler.OneCycleLR`` (two cosine phases: from
max_lr / div_factor up to max_lr over pct_start of the steps, then down to initial_lr / final_div_factor; Adam's
beta1 / SGD's momentum cycled inversely between base_momentum and max_momentum) through the trainer's timm-style
calls (``step_update(num_updates)`` after every optimizer update, ``step(epoch)`` per epoch, ``state_dict``). It is
a pure function of the update counter, so resuming needs no state. ASL schedules 80 epochs and stops after 41 (epochs
0..40): ``epochs`` here is the schedule length, the trainer's epoch count is where training stops.
"""
from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["OneCycleSchedule"]


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class OneCycleSchedule:
    """OneCycleLR(max_lr, total_steps = epochs * steps_per_epoch, pct_start, cos, three_phase=False)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_lr: float, epochs: int, steps_per_epoch: int,
                 pct_start: float = 0.2, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 cycle_momentum: bool = True, base_momentum: float = 0.85, max_momentum: float = 0.95) -> None:
        if max_lr <= 0 or epochs < 1 or steps_per_epoch < 1 or not 0 < pct_start < 1:
            raise ValueError(f"OneCycle needs max_lr > 0, epochs >= 1, steps_per_epoch >= 1, 0 < pct_start < 1; got "
                             f"{max_lr}, {epochs}, {steps_per_epoch}, {pct_start}")
        self.optimizer = optimizer
        self.total_steps = epochs * steps_per_epoch
        self.max_lr, self.initial_lr = max_lr, max_lr / div_factor
        self.min_lr = self.initial_lr / final_div_factor
        self.up_end = float(pct_start * self.total_steps) - 1
        self.cycle_momentum = cycle_momentum
        self.base_momentum, self.max_momentum = base_momentum, max_momentum
        if cycle_momentum:
            for group in optimizer.param_groups:
                if "momentum" not in group and "betas" not in group:
                    raise ValueError("cycle_momentum needs an optimizer with 'momentum' or 'betas' (SGD, Adam, AdamW)")
        self.step_update(0)

    def values(self, step: int) -> tuple[float, float]:
        """(lr, momentum) at optimizer update ``step`` (torch's OneCycleLR at last_epoch = step). ``step`` may be
        ``total_steps``, the value after the last update, which the trainer sets and torch allows too."""
        if not 0 <= step <= self.total_steps:
            raise ValueError(f"update {step} is outside the OneCycle schedule of {self.total_steps} updates: raise "
                             f"the schedule epochs")
        if step <= self.up_end:
            pct = step / self.up_end
            return _cos(self.initial_lr, self.max_lr, pct), _cos(self.max_momentum, self.base_momentum, pct)
        pct = (step - self.up_end) / (self.total_steps - 1 - self.up_end)
        return _cos(self.max_lr, self.min_lr, pct), _cos(self.base_momentum, self.max_momentum, pct)

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        """Set the lr (and momentum) that optimizer update number ``num_updates`` (0-based) uses."""
        lr, momentum = self.values(num_updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if self.cycle_momentum:
                if "betas" in group:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum

    def step(self, epoch: int, metric: Any = None) -> None:
        """Per-epoch hook of timm schedulers: OneCycle moves per iteration only."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: the values follow from the update counter the trainer restores."""
