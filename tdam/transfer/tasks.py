"""WS-DAN and ASL as trainer tasks (``tdam.train.engine.Task``): the shared engine runs them with its checkpointing,
AMP, EMA, gradient accumulation and DDP; the task says what the loss of a batch is and how to evaluate, and builds
what differs from an ImageNet run through three optional hooks of the trainer:

- ``build_model(num_classes)``: the transfer model on the ImageNet-trained backbone (instead of ``create_model``);
- ``build_optimizer(model, cfg, lr)``: WS-DAN's SGD decays every parameter (timm's factory would exempt norms/biases);
- ``build_scheduler(optimizer, cfg, updates_per_epoch)``: WS-DAN's x0.9 every 2 epochs; ASL's OneCycle.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from tdam.train.distributed import all_reduce_sum
from tdam.transfer.asl import asymmetric_loss, mean_average_precision, multilabel_prf
from tdam.transfer.models import build_asl_model, build_wsdan
from tdam.transfer.schedule import OneCycleSchedule
from tdam.transfer.wsdan import wsdan_refined_logits, wsdan_training_loss

__all__ = ["WSDANTask", "ASLTask"]


def _all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-rank tensor of any length along dim 0 (evaluation shards are unpadded)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, t.cpu())
    return torch.cat(parts).to(t.device)


class WSDANTask:
    """WS-DAN fine-grained classification (GuYuc/WS-DAN.PyTorch train.py / eval.py).

    Training: raw / crop / drop forwards, CE/3 each + center loss, center update (``wsdan_training_loss``).
    Evaluation: raw and refined (raw + crop around the mean attention map, averaged logits) top-1/top-5 and the raw
    CE loss; ``top1`` is the refined top-1, the metric WS-DAN keeps its best checkpoint by.
    """

    primary_metric = "top1"

    def __init__(self, backbone_fn: Callable[[], nn.Module] | None = None, *, num_attentions: int = 32,
                 beta: float = 5e-2, crop_theta: tuple[float, float] = (0.4, 0.6), crop_padding: float = 0.1,
                 drop_theta: tuple[float, float] = (0.2, 0.5), test_theta: float = 0.1, test_padding: float = 0.05,
                 combine: str = "logits", lr_decay_epochs: float = 2, lr_decay_rate: float = 0.9) -> None:
        self.backbone_fn, self.num_attentions, self.beta = backbone_fn, num_attentions, beta
        self.crop_theta, self.crop_padding, self.drop_theta = tuple(crop_theta), crop_padding, tuple(drop_theta)
        self.test_theta, self.test_padding, self.combine = test_theta, test_padding, combine
        self.lr_decay_epochs, self.lr_decay_rate = lr_decay_epochs, lr_decay_rate

    def build_model(self, num_classes: int) -> nn.Module:
        if self.backbone_fn is None:
            raise ValueError("WSDANTask.build_model needs backbone_fn (a callable returning the ImageNet backbone)")
        return build_wsdan(self.backbone_fn(), num_classes, num_attentions=self.num_attentions, beta=self.beta)

    def build_optimizer(self, model: nn.Module, cfg: Any, lr: float) -> torch.optim.Optimizer:
        """SGD (classical momentum, no Nesterov) with weight decay on every parameter (no parameter groups)."""
        from timm.optim import create_optimizer_v2

        return create_optimizer_v2(model, opt="momentum", lr=lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, filter_bias_and_bn=False)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, cfg: Any, updates_per_epoch: int) -> Any:
        """StepLR(step_size=2 epochs, gamma=0.9) as a per-update timm scheduler: lr * 0.9 ** (update // (2 U))."""
        from timm.scheduler import StepLRScheduler

        return StepLRScheduler(optimizer, decay_t=max(1, round(self.lr_decay_epochs * updates_per_epoch)),
                               decay_rate=self.lr_decay_rate, t_in_epochs=False)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, parts = wsdan_training_loss(model, images, targets, self.crop_theta, self.crop_padding,
                                          self.drop_theta)
        return loss, parts["logits_raw"]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, ctx) -> dict[str, float]:
        model.eval()
        sums = torch.zeros(6, dtype=torch.float64, device=ctx.device)  # loss, raw top1/5, refined top1/5, n
        for images, targets in ctx.batches(loader):
            with ctx.autocast():
                raw, refined = wsdan_refined_logits(model, images, self.test_theta, self.test_padding, self.combine)
            k = min(5, raw.shape[1])
            hit_raw = raw.topk(k, dim=1).indices.eq(targets[:, None])
            hit_ref = refined.topk(k, dim=1).indices.eq(targets[:, None])
            sums += torch.stack([F.cross_entropy(raw, targets, reduction="sum").double(),
                                 hit_raw[:, 0].sum().double(), hit_raw.any(1).sum().double(),
                                 hit_ref[:, 0].sum().double(), hit_ref.any(1).sum().double(),
                                 torch.tensor(float(targets.shape[0]), dtype=torch.float64, device=ctx.device)])
        loss, r1, r5, f1, f5, n = all_reduce_sum(sums).tolist()
        if n == 0:
            raise ValueError("evaluation saw no samples: the validation split is empty")
        return {"loss": loss / n, "top1": 100 * f1 / n, "top5": 100 * f5 / n, "top1_raw": 100 * r1 / n,
                "top5_raw": 100 * r5 / n, "top1_refined": 100 * f1 / n, "top5_refined": 100 * f5 / n,
                "samples": int(n)}


class ASLTask:
    """ASL multi-label classification (Alibaba-MIIL/ASL): ASL loss on the logits (float32); mAP over the whole split
    (all ranks gathered) plus CP/CR/CF1/OP/OR/OF1 at ``threshold`` on the sigmoid scores. ``loss`` in the metrics is
    the ASL loss per image."""

    primary_metric = "mAP"

    def __init__(self, backbone_fn: Callable[[], nn.Module] | None = None, *, gamma_neg: float = 4,
                 gamma_pos: float = 0, clip: float = 0.05, disable_torch_grad_focal_loss: bool = True,
                 threshold: float = 0.8, onecycle_epochs: int = 80, pct_start: float = 0.2) -> None:
        self.criterion = asymmetric_loss(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip,
                                         disable_torch_grad_focal_loss=disable_torch_grad_focal_loss)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.backbone_fn, self.threshold = backbone_fn, threshold
        self.onecycle_epochs, self.pct_start = onecycle_epochs, pct_start

    def build_model(self, num_classes: int) -> nn.Module:
        if self.backbone_fn is None:
            raise ValueError("ASLTask.build_model needs backbone_fn (a callable returning the ImageNet backbone)")
        return build_asl_model(self.backbone_fn(), num_classes)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, cfg: Any, updates_per_epoch: int) -> Any:
        """OneCycle over ``onecycle_epochs`` (80) with max lr = the optimizer's lr; training stops at cfg.epochs."""
        if cfg.epochs > self.onecycle_epochs:
            raise ValueError(f"epochs={cfg.epochs} runs past the OneCycle schedule of {self.onecycle_epochs} epochs")
        return OneCycleSchedule(optimizer, max_lr=float(optimizer.param_groups[0]["lr"]),
                                epochs=self.onecycle_epochs, steps_per_epoch=updates_per_epoch,
                                pct_start=self.pct_start)

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(images)
        return self.criterion(logits.float(), targets.float()), logits

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, ctx) -> dict[str, float]:
        model.eval()
        scores, labels, loss_sum = [], [], torch.zeros((), dtype=torch.float64, device=ctx.device)
        for images, targets in ctx.batches(loader):
            with ctx.autocast():
                logits = model(images)
            logits = logits.float()
            loss_sum += self.criterion(logits, targets.float()).double()
            scores.append(torch.sigmoid(logits))
            labels.append(targets.float())
        if not scores:
            raise ValueError("evaluation saw no samples: the validation split is empty")
        s, y = _all_gather_cat(torch.cat(scores)), _all_gather_cat(torch.cat(labels))
        loss = float(all_reduce_sum(loss_sum)) / s.shape[0]
        return {"loss": loss, "mAP": mean_average_precision(s, y), **multilabel_prf(s, y, self.threshold),
                "samples": int(s.shape[0])}
