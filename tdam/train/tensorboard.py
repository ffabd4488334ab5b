"""Live training curves: TensorBoard event files in ``<run dir>/tb/`` and, optionally, Weights & Biases.

Rank 0 writes; every other rank holds a logger that does nothing. The x-axis of every curve is the optimizer update
(``step``), so per-update and per-epoch curves line up and a resumed run continues the same axis (events a killed run
wrote after its last checkpoint are purged on resume). Tags:

- every ``log_interval`` updates: ``train/loss`` (the last micro-batch's loss) and ``train/lr``;
- every epoch: ``epoch/train_loss``, ``epoch/lr``, ``val/loss``, ``val/top1``, ``val/top5`` (and ``val_ema/...`` with
  ``model_ema``), ``perf/images_per_s``, ``perf/data_wait`` (share of the epoch spent waiting for data),
  ``perf/epoch_time_s``, ``perf/peak_mem_mb``, ``perf/bad_images``;
- every epoch, for TD models trained on classification: ``val_steps/top1_t<k>`` and ``val_steps/top5_t<k>``, the
  accuracy with the last TD stage run at ``k = 1 .. t`` computation steps (the paper's step protocol; one
  ``forward_steps`` pass over the validation split, see :func:`accuracy_per_step`).

Open them with ``tensorboard --logdir runs/`` (every run below ``runs/``) or ``--logdir <run dir>/tb``.

Weights & Biases (``wandb: true``, the ``wandb`` extra: ``pip install 'tdam[wandb]'``) receives the same scalars. It
runs offline unless ``WANDB_MODE`` says otherwise; ``wandb sync <run dir>/wandb/offline-run-*`` uploads later.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from tdam.metrics.classification import topk_correct
from tdam.train.distributed import all_reduce_sum
from tdam.validation import check_bool

__all__ = ["RunLogger", "accuracy_per_step", "EPOCH_TAGS"]

# metrics row key -> TensorBoard tag, for the per-epoch scalars
EPOCH_TAGS = {
    "train_loss": "epoch/train_loss", "lr": "epoch/lr",
    "val_loss": "val/loss", "val_top1": "val/top1", "val_top5": "val/top5",
    "ema_val_loss": "val_ema/loss", "ema_val_top1": "val_ema/top1", "ema_val_top5": "val_ema/top5",
    "images_per_s": "perf/images_per_s", "data_wait": "perf/data_wait", "epoch_time_s": "perf/epoch_time_s",
    "peak_mem_mb": "perf/peak_mem_mb", "bad_images": "perf/bad_images",
}


class RunLogger:
    """Scalars of one training run to TensorBoard (``tensorboard``) and Weights & Biases (``wandb``).

    ``enabled`` is the same on every rank (so every rank takes part in the per-step evaluation); only ``is_main``
    writes. ``purge_step``: on resume, the update the checkpoint was taken at (later events are discarded).
    """

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, wandb: bool = False, is_main: bool = True,
                 purge_step: int | None = None, config: Mapping[str, Any] | None = None) -> None:
        check_bool("tensorboard", tensorboard)
        check_bool("wandb", wandb)
        self.run_dir = Path(run_dir)
        self.enabled = bool(tensorboard or wandb)
        self.writer = self.wandb_run = None
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise ImportError("wandb: true needs the optional Weights & Biases package; install the extra with "
                                  "pip install 'tdam[wandb]' (or set wandb: false)") from None
        if not is_main:
            return
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge_step or None)
        if wandb:
            os.environ.setdefault("WANDB_MODE", "offline")
            self.wandb_run = wandb_module.init(
                project="tdam", name=self.run_dir.name, id=self.run_dir.name, resume="allow", dir=str(self.run_dir),
                config=dict(config or {}), mode=os.environ["WANDB_MODE"])

    def scalars(self, values: Mapping[str, float | None], step: int) -> None:
        """Write ``{tag: value}`` at update ``step`` (None and non-numbers are skipped)."""
        values = {k: float(v) for k, v in values.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not values:
            return
        if self.writer is not None:
            for tag, v in values.items():
                self.writer.add_scalar(tag, v, global_step=step)
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def update(self, step: int, loss: float | None, lr: float) -> None:
        """The ``log_interval`` scalars: the latest loss and the learning rate."""
        self.scalars({"train/loss": loss, "train/lr": lr}, step)

    def epoch(self, row: Mapping[str, Any], per_step: Mapping[int, Mapping[str, float]] | None = None) -> None:
        """One metrics row (at its ``step``) and the per-step accuracy table ``{k: {'top1':..,'top5':..}}``."""
        values = {tag: row.get(key) for key, tag in EPOCH_TAGS.items()}
        for k, acc in (per_step or {}).items():
            values.update({f"val_steps/{name}_t{k}": v for name, v in acc.items()})
        self.scalars(values, int(row["step"]))
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


@torch.no_grad()
def accuracy_per_step(model: nn.Module, loader: Iterable, ctx: Any) -> dict[int, dict[str, float]]:
    """Top-1/top-5 (%) with the last TD stage run at each step count ``k = 1 .. t``, in ONE ``forward_steps`` pass.

    ``ctx`` is the trainer's :class:`~tdam.train.engine.EvalContext` (device, autocast, memory format, batch cap).
    Summed across ranks like the standard evaluation. Returns ``{}`` for a model without TD blocks (or without
    ``forward_steps``), where the standard evaluation already is the single step.
    """
    if getattr(model, "last_td_stage", None) is None or not hasattr(model, "forward_steps"):
        return {}
    was_training = model.training
    model.eval()
    sums = torch.zeros(model.td_steps * 2 + 1, dtype=torch.float64, device=ctx.device)   # top1/top5 per k, then n
    for images, targets in ctx.batches(loader):
        with ctx.autocast():
            per_k = model.forward_steps(images)
        hits = torch.stack([topk_correct(logits.float(), targets, (1, 5)).sum(dim=0) for logits in per_k])
        sums[:-1] += hits.reshape(-1).double()
        sums[-1] += targets.shape[0]
    model.train(was_training)
    all_reduce_sum(sums)
    n = float(sums[-1])
    if n == 0:
        return {}
    acc = (100.0 * sums[:-1] / n).reshape(-1, 2).tolist()
    return {k + 1: {"top1": a[0], "top5": a[1]} for k, a in enumerate(acc) if all(map(math.isfinite, a))}
