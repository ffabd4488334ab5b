"""ASL: Asymmetric Loss for multi-label classification (Ben-Baruch, Ridnik et al., ICCV 2021,
https://arxiv.org/abs/2009.14119), and the COCO mAP exactly as the ASL repository computes it.

The multi-label transfer experiment of the TDAM supplement (§1.3) trains our backbones with ASL on MS-COCO 2014.
Spec: ``06-transfer.md`` §2. The loss is timm's ``AsymmetricLossMultiLabel`` configured like the original COCO
script (gamma_neg 4, gamma_pos 0, clip 0.05, focusing weights without gradient, loss summed over batch and classes).
"""
from __future__ import annotations

import torch
from timm.loss import AsymmetricLossMultiLabel

__all__ = [
    "asymmetric_loss",
    "average_precision_per_class",
    "mean_average_precision",
    "multilabel_prf",
]

AP_EPS = 1e-8


def asymmetric_loss(gamma_neg: float = 4, gamma_pos: float = 0, clip: float | None = 0.05, eps: float = 1e-8,
                    disable_torch_grad_focal_loss: bool = True, reduction: str = "sum") -> AsymmetricLossMultiLabel:
    """timm's ASL with the original COCO configuration as defaults (gamma_neg 4, gamma_pos 0, clip 0.05).

    ``reduction='sum'`` gives the original -sum over batch and classes (timm's own default 'batchmean' divides by
    B); the focusing weight (1 - pt)^gamma is a detached constant (``disable_torch_grad_focal_loss``). timm computes
    in float32, so the loss is safe under fp16 autocast.
    """
    valid = ("sum", "batchmean", "mean", "none")
    if reduction not in valid:
        raise ValueError(f"ASL reduction must be one of {valid}, got {reduction!r}")
    if gamma_neg < 0 or gamma_pos < 0:
        raise ValueError(f"ASL focusing parameters must be >= 0, got gamma_neg={gamma_neg}, gamma_pos={gamma_pos}")
    if clip is not None and not 0 <= clip < 1:
        raise ValueError(f"ASL clip (probability margin) must be in [0, 1) or None, got {clip}")
    return AsymmetricLossMultiLabel(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=eps,
                                    disable_torch_grad_focal_loss=disable_torch_grad_focal_loss, reduction=reduction)


def _check_multilabel(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores, targets = torch.as_tensor(scores), torch.as_tensor(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"expected scores and targets of the same shape (N, K), got {tuple(scores.shape)} and "
                         f"{tuple(targets.shape)}")
    t = targets.double()
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError("multi-label targets must be 0/1 (multi-hot)")
    return scores.double(), t


def average_precision_per_class(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Non-interpolated AP per class (K,), as ASL's ``helper_functions.average_precision``.

    Per class: rank the N scores in descending order, take precision@i at every rank i holding a positive, and divide
    their sum by (#positives + 1e-8); a class without positives gets 0. Ties are broken by sample index (a stable
    descending sort: the earlier sample first); the reference leaves the tie order to numpy's quicksort.
    """
    scores, targets = _check_multilabel(scores, targets)
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices
    hits = torch.gather(targets, 0, order)
    rank = torch.arange(1, scores.shape[0] + 1, dtype=torch.float64, device=scores.device)[:, None]
    precision_at_hits = hits.cumsum(dim=0) / rank * hits
    return precision_at_hits.sum(dim=0) / (hits.sum(dim=0) + AP_EPS)


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """mAP = 100 * mean over ALL K classes of the per-class AP (as ASL's validation); scores: sigmoid outputs or
    logits."""
    return 100.0 * float(average_precision_per_class(scores, targets).mean())


def multilabel_prf(scores: torch.Tensor, targets: torch.Tensor, threshold: float = 0.8) -> dict[str, float]:
    """Side metrics at a score threshold (ASL ``validate.py --thre``, default 0.8 on sigmoid probabilities), in %.

    A label is predicted when its score >= threshold. Per class k: Nc = correct positives, Np = predicted positives,
    Ng = ground-truth positives. CP = mean_k Nc/Np, CR = mean_k Nc/Ng, CF1 = 2 CP CR / (CP + CR) (per-class
    averages); OP = sum Nc / sum Np, OR = sum Nc / sum Ng, OF1 = 2 OP OR / (OP + OR) (overall). A ratio with a
    zero denominator counts as 0.
    """
    scores, targets = _check_multilabel(scores, targets)
    pred = (scores >= threshold).double()
    nc, np_, ng = (pred * targets).sum(0), pred.sum(0), targets.sum(0)

    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(b > 0, a / b.clamp(min=1e-300), torch.zeros_like(a))

    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    cp, cr = float(ratio(nc, np_).mean()), float(ratio(nc, ng).mean())
    op, or_ = float(ratio(nc.sum(), np_.sum())), float(ratio(nc.sum(), ng.sum()))
    out = dict(CP=cp, CR=cr, CF1=f1(cp, cr), OP=op, OR=or_, OF1=f1(op, or_))
    return {k: 100.0 * v for k, v in out.items()}
