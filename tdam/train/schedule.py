"""The learning rate of every update of a run: :func:`lr_schedule`, and the scheduler the trainer steps with it.

The schedule is a function of the config and the updates per epoch alone, computed once for the whole run; the
trainer (:class:`ListScheduler`), ``--dry-run`` (:func:`tdam.train.recipe.describe_recipe`) and notebook 01's plot
read the same list. Four config fields shape it beyond ``sched``, ``warmup_epochs``, ``warmup_lr`` and ``min_lr``:

- ``lr_step: epoch`` -- the lr changes once per epoch, as in the authors' training script
  (``training_and_analysis_scripts/timm_td_train.py`` of shantanuj/TDAM_Top_down_attention_module, a copy of timm
  0.5's ``train.py``: ``create_scheduler`` at line 595 builds timm's scheduler in epochs, ``lr_scheduler.step(epoch
  + 1)`` at line 772 steps it after every epoch; its ``step_update`` at line 887 changes nothing for a scheduler in
  epochs). Update ``i`` of epoch ``e`` gets the timm scheduler's value at ``t = e``. ``lr_step: update``: timm's
  scheduler in updates (``t = i``), tdam's earlier behaviour.
- ``cooldown_epochs`` -- the schedule (warm-up included) spans ``epochs - cooldown_epochs`` epochs, then the lr
  stays at ``min_lr`` (timm's ``--cooldown-epochs``, line 155 of the script, default 10: ``create_scheduler``
  returns ``num_epochs = t_initial + cooldown_epochs`` and the cosine is at ``lr_min`` past ``t_initial``). tdam's
  ``epochs`` is the whole run: the script's ``--epochs 150`` with its 10 cool-down epochs is ``epochs: 160,
  cooldown_epochs: 10`` here.
- ``warmup_prefix: true`` -- ConvNeXt's ``utils.cosine_scheduler`` (facebookresearch/ConvNeXt ``utils.py`` lines
  428-445, called at ``main.py`` line 358), per update: ``W = warmup_epochs x N`` values
  ``np.linspace(warmup_lr, lr, W)`` (both ends included), then ``min_lr + (lr - min_lr)(1 + cos(pi j / J)) / 2``
  for ``j = 0 .. J - 1`` over the ``J`` remaining updates of the schedule. (timm's own ``warmup_prefix`` differs in
  the warm-up: ``warmup_lr + i (lr - warmup_lr) / W``, never reaching ``lr``.)
- ``sched: none`` -- the peak lr throughout, no warm-up.

Every other case (``warmup_prefix: false``) is timm's scheduler (``timm.scheduler.create_scheduler_v2``) evaluated at
every step: the authors' script used timm's ``CosineLRScheduler``, so its formula is timm's, not restated here.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from tdam.train.config import TrainConfig

__all__ = ["lr_schedule", "epoch_start_lrs", "ListScheduler"]


def lr_schedule(config: TrainConfig, updates_per_epoch: int, world_size: int = 1) -> list[float]:
    """The learning rate of every optimizer update of the whole run (``config.epochs x updates_per_epoch`` floats,
    update 0 first), at the peak ``config.resolved_lr(world_size)``; see the module docstring."""
    if not isinstance(updates_per_epoch, int) or isinstance(updates_per_epoch, bool) or updates_per_epoch < 1:
        raise ValueError(f"updates_per_epoch={updates_per_epoch!r}: expected an integer >= 1")
    cfg, n = config, updates_per_epoch
    peak = cfg.resolved_lr(world_size)
    total = cfg.epochs * n
    if cfg.sched == "none":
        return [peak] * total
    per_epoch = cfg.lr_step == "epoch"
    unit = 1 if per_epoch else n                         # schedule steps per epoch
    steps = cfg.epochs * unit
    if cfg.warmup_prefix:
        values = _convnext_cosine(peak, cfg.min_lr, (cfg.epochs - cfg.cooldown_epochs) * unit,
                                  round(cfg.warmup_epochs * unit), cfg.warmup_lr)
        values += [cfg.min_lr] * (steps - len(values))
    else:
        values = _timm_values(cfg, peak, unit, steps)
    return [v for v in values for _ in range(n)] if per_epoch else values


def _convnext_cosine(base: float, final: float, steps: int, warmup: int, warmup_start: float) -> list[float]:
    """ConvNeXt's ``utils.cosine_scheduler`` (utils.py lines 428-445), in plain Python."""
    ramp = ([warmup_start + (base - warmup_start) * i / (warmup - 1) for i in range(warmup)] if warmup > 1
            else [warmup_start] * warmup)         # np.linspace(start, base, warmup): both ends included
    rest = steps - warmup
    return ramp + [final + 0.5 * (base - final) * (1 + math.cos(math.pi * j / rest)) for j in range(rest)]


def _timm_values(cfg: TrainConfig, peak: float, unit: int, steps: int) -> list[float]:
    """timm's scheduler for ``cfg`` (``unit`` steps per epoch) evaluated at ``t = 0 .. steps - 1``."""
    from timm.scheduler import create_scheduler_v2

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    per_update = unit > 1
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs - cfg.cooldown_epochs, warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=not per_update,
        updates_per_epoch=unit if per_update else 0)
    group = optimizer.param_groups[0]
    values = []
    for t in range(steps):
        if per_update:
            scheduler.step_update(num_updates=t)
        else:
            scheduler.step(t)
        values.append(float(group["lr"]))
    return values


def epoch_start_lrs(schedule: list[float], updates_per_epoch: int) -> list[float]:
    """The lr of each epoch's first update (the lr at each epoch boundary)."""
    return schedule[::updates_per_epoch]


class ListScheduler:
    """Sets the optimizer's lr from a precomputed schedule (:func:`lr_schedule`): ``step_update(num_updates=k)``
    after update ``k`` gives update ``k`` (0-based) its value, as timm's schedulers are stepped. A param group whose
    lr differs from the peak keeps its ratio to it. The schedule is a function of the config and the update count,
    so the state dict is empty: a resume rebuilds it from the (possibly changed) config."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: list[float], peak: float) -> None:
        if not schedule:
            raise ValueError("an empty learning-rate schedule: the run has no update")
        self.optimizer, self.schedule = optimizer, schedule
        self.scales = [g["lr"] / peak if peak > 0 else 1.0 for g in optimizer.param_groups]
        self.step_update(0)

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        lr = self.schedule[min(num_updates, len(self.schedule) - 1)]
        for group, scale in zip(self.optimizer.param_groups, self.scales):
            group["lr"] = lr * scale

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (a timm scheduler's state of an older checkpoint included): see the class doc."""
