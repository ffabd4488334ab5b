"""The training step: ``train_one_epoch`` and ``evaluate`` (ConvNeXt's engine.py shape), one engine for every backbone.

The whole optimisation step is in :func:`train_one_epoch` (read it top to bottom): micro-batch forward under
autocast -> loss / accum_steps -> backward (DDP gradient sync only on the last micro-batch) -> optional gradient
clipping -> optimizer step through the GradScaler -> EMA update -> per-iteration LR schedule.

Pluggable tasks
---------------
What is optimised and measured is a :class:`Task`; the default is :class:`ClassificationTask` (label smoothing,
timm Mixup/CutMix + SoftTargetCrossEntropy, top-1/top-5), which trains a TD model on the last computation step (the
public code) or, with ``train_on="most_confident"``, on each sample's most confident step (supplement §1.1).
Another objective (e.g. WS-DAN's attention-cropping loss, ASL's multi-label loss in ``tdam.transfer``) implements the
same two methods and runs through the same engine, checkpointing and distributed code::

    class MyTask:
        primary_metric = "mAP"                      # higher is better; selects best.pth
        def loss(self, model, images, targets):     # called under autocast, model in train mode
            outputs = model(images)
            return my_loss(outputs, targets), outputs
        def evaluate(self, model, loader, ctx: EvalContext) -> dict[str, float]:
            ...                                     # model in eval mode, no grad; reduce across ranks
                                                    # with tdam.train.distributed.all_reduce_sum
            return {"loss": ..., "mAP": ...}

    tdam.train.train(cfg, task=MyTask(), datasets=(train_set, val_set))

A task may also define, and the trainer then uses instead of its defaults: ``build_model(num_classes)`` (e.g. WS-DAN
around an ImageNet-trained backbone), ``build_optimizer(model, cfg, lr)`` and ``build_scheduler(optimizer, cfg,
updates_per_epoch)`` (a per-update scheduler with ``step_update``/``state_dict``).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from tdam.checkpoint import unwrap_model
from tdam.errors import NonFiniteLossError   # re-exported: tdam.train.NonFiniteLossError
from tdam.train.distributed import all_reduce_sum
from tdam.train.config import TRAIN_ON
from tdam.validation import check_choice

__all__ = [
    "Task", "ClassificationTask", "TRAIN_ON", "most_confident_logits", "EvalContext", "TrainState", "EpochMeter",
    "NonFiniteLossError", "train_one_epoch", "evaluate",
]


@dataclass
class EvalContext:
    """How to run a model for evaluation: device, autocast dtype (None: fp32), memory format, batch cap."""
    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    max_batches: int | None = None

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mf = torch.channels_last if self.channels_last and images.ndim == 4 else torch.contiguous_format
        return (images.to(self.device, non_blocking=True, memory_format=mf),
                targets.to(self.device, non_blocking=True))

    def batches(self, loader: Iterable) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The evaluation batches, on the device, at most ``max_batches`` of them."""
        for b, (images, targets) in enumerate(loader):
            if self.max_batches is not None and b >= self.max_batches:
                return
            yield self.to_device(images, targets)


@runtime_checkable
class Task(Protocol):
    """A training objective: a loss for training batches and an evaluation returning named metrics."""
    primary_metric: str

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]: ...


class ClassificationTask:
    """Single-label classification: label-smoothed cross-entropy, or timm Mixup/CutMix with soft-target CE.

    ``train_on`` -- which logits of a TD model the loss sees:

    - ``"last"`` (default): the model's output, i.e. the last computation step. This is the authors' public code:
      its ``output_over_t`` is off in training and no training script uses the per-step outputs.
    - ``"most_confident"``: supplement §1.1 ("we only consider the most confident prediction during both training
      and evaluation"). Each sample's loss uses the logits of the step (1 .. t of the last TD stage) with the highest
      max-softmax, first one on ties (as the ``most_confident`` evaluation metric). The steps come from
      ``forward_steps``: the stem and earlier stages run once, the last TD stage and what follows once per step
      count k = 1 .. t (its recurrent layers 1 + 2 + .. + t times instead of t). The choice is made without
      gradient and the gradient flows through the chosen step's logits only. Label smoothing, Mixup/CutMix targets, AMP, accumulation, EMA and DDP are
      unchanged: the criterion just receives the selected logits. BatchNorm in train mode normalises with batch
      statistics, so the step logits and the gradients are those of separate forwards at t = 1 .. t. Its running
      statistics (used only at evaluation) differ from ``last`` training: a norm of the last TD stage that runs in
      n of the t passes (step j's norms: passes j .. t; norms outside the recurrence and after the stage: all t)
      is updated n times per batch with the same batch statistics (the shared steps compute the same values, barring
      drop-path, which draws new masks in every pass), i.e. an EMA with momentum 1 - (1 - momentum)^n: the same
      estimate over a shorter window. We accept that rather than re-implement ``forward_steps``.
      A model without TD blocks has a single step: ``most_confident`` is then a configuration error.
    """
    primary_metric = "top1"

    def __init__(self, num_classes: int, *, smoothing: float = 0.1, mixup: float = 0.0, cutmix: float = 0.0,
                 train_on: str = "last") -> None:
        from timm.data import Mixup

        self.num_classes = num_classes
        check_choice("train_on", train_on, TRAIN_ON)
        self.train_on = train_on
        self.mixup_fn = None
        if mixup > 0 or cutmix > 0:   # timm's defaults: on every batch, Mixup or CutMix with probability 1/2 each
            self.mixup_fn = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing,
                                  num_classes=num_classes)
            self.criterion: nn.Module = SoftTargetCrossEntropy()       # mixed targets carry the smoothing
        elif smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixup_fn is not None:
            images, targets = self.mixup_fn(images, targets)
        if self.train_on == "last":
            outputs = model(images)
        else:
            with _forward_steps(model):                  # through the DDP / compile wrappers: DDP's hooks see it
                outputs = most_confident_logits(torch.stack(model(images)))
        return self.criterion(outputs, targets), outputs

    def evaluate(self, model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
        return evaluate(model, loader, ctx)


def most_confident_logits(step_logits: torch.Tensor) -> torch.Tensor:
    """(B, C) logits of each sample's most confident step from (t, B, C) step logits: the step with the highest
    max-softmax (first one on ties, as :func:`tdam.metrics.most_confident_correct`), chosen without gradient; the
    gradient flows through the chosen step's logits only."""
    with torch.no_grad():
        best = step_logits.detach().float().softmax(dim=-1).amax(dim=-1).argmax(dim=0)      # (B,)
    return step_logits[best, torch.arange(step_logits.shape[1], device=best.device)]


@contextmanager
def _forward_steps(model: nn.Module) -> Iterator[None]:
    """Inside the ``with``, calling ``model`` (possibly DDP / torch.compile wrapped) returns ``forward_steps``'s
    list of step logits: the wrapped module's ``forward`` is ``forward_steps``, so DDP still prepares its gradient
    reduction (calling ``model.module.forward_steps`` directly would bypass it)."""
    net = unwrap_model(model)
    if getattr(net, "last_td_stage", None) is None:
        raise ValueError(f"train_on='most_confident' needs a model with TD blocks ({type(net).__name__} has none, "
                         "so it has a single computation step); use train_on='last'")
    own = net.__dict__.get("forward")                     # an instance-level forward, restored afterwards
    net.forward = net.forward_steps
    try:
        yield
    finally:
        if own is None:
            del net.forward
        else:
            net.forward = own


@dataclass
class EpochMeter:
    """Running sums of one training epoch (kept in mid-epoch checkpoints so resumed metrics are exact)."""
    loss_sum: float = 0.0
    samples: int = 0
    data_time: float = 0.0
    step_time: float = 0.0

    def state_dict(self) -> dict[str, float]:
        return dict(loss_sum=self.loss_sum, samples=self.samples, data_time=self.data_time,
                    step_time=self.step_time)


@dataclass
class TrainState:
    """Everything that changes while training; ``model`` may be wrapped (DDP, torch.compile)."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None                      # timm Scheduler (per-iteration) or None
    scaler: torch.amp.GradScaler | None = None
    ema: Any = None                            # timm ModelEmaV3 or None
    step: int = 0                              # optimizer updates done
    epoch: int = 0                             # current epoch (0-based)
    epoch_step: int = 0                        # updates done within the current epoch
    meter: EpochMeter = field(default_factory=EpochMeter)
    last_finite_loss: float | None = None

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def train_one_epoch(state: TrainState, task: Task, loader: Iterable, ctx: EvalContext, *, updates: int,
                    accum_steps: int = 1, on_update: Callable[[TrainState], bool] | None = None,
                    progress: Any = None) -> bool:
    """Train until ``state.epoch_step == updates`` or the loader ends. ``loader`` yields the REMAINING batches of
    the epoch (the sampler skips what a resumed checkpoint already consumed). ``on_update(state)`` runs after every
    optimizer update but the epoch's last and returns True to stop early (pre-emption); returns whether the epoch
    was cut short."""
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    t_mark = time.perf_counter()
    for i, (images, targets) in enumerate(loader):
        t_data = time.perf_counter()
        state.meter.data_time += t_data - t_mark
        images, targets = ctx.to_device(images, targets)
        last_micro = (i + 1) % accum_steps == 0
        with model.no_sync() if ddp and not last_micro else nullcontext():   # sync grads once per update
            with ctx.autocast():
                loss, _ = task.loss(model, images, targets)
            scaler.scale(loss / accum_steps).backward()
        loss_value = _global_mean(loss.detach(), ddp)                      # every rank sees the same value
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"non-finite loss ({loss_value}) at update {state.step + 1} (epoch {state.epoch + 1}, micro-batch "
                f"{i}), lr={state.lr:.6g}, last finite loss={state.last_finite_loss}; stopping, the last good "
                f"checkpoint is kept")
        state.last_finite_loss = loss_value
        state.meter.loss_sum += loss_value * images.shape[0]
        state.meter.samples += images.shape[0]
        if last_micro:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.epoch_step += 1
            if state.ema is not None:
                state.ema.update(unwrap_model(model))     # the configured decay from update 1 (build_ema)
            if state.scheduler is not None:
                state.scheduler.step_update(num_updates=state.step)
        t_mark = time.perf_counter()
        state.meter.step_time += t_mark - t_data
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{state.lr:.3g}", refresh=False)
        if last_micro and state.epoch_step >= updates:
            break
        if last_micro and on_update is not None and on_update(state):
            return True
    return False


def _global_mean(loss: torch.Tensor, ddp: bool) -> float:
    if not ddp:
        return float(loss)
    buf = loss.float().reshape(1).clone()
    all_reduce_sum(buf)
    return float(buf) / torch.distributed.get_world_size()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, ctx: EvalContext) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 accuracy (%) over the whole split, summed across ranks."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=ctx.device)      # loss, top1, top5, n
    for images, targets in ctx.batches(loader):
        with ctx.autocast():
            logits = model(images)
        logits = logits.float()
        correct = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets[:, None])
        sums += torch.stack([F.cross_entropy(logits, targets, reduction="sum").double(),
                             correct[:, :1].sum().double(), correct.any(dim=1).sum().double(),
                             torch.tensor(float(targets.shape[0]), dtype=torch.float64, device=ctx.device)])
    all_reduce_sum(sums)
    loss, top1, top5, n = sums.tolist()
    if n == 0:
        raise ValueError("evaluation saw no samples: the validation split is empty")
    return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "samples": int(n)}
