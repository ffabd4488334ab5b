"""Classification correctness per image: top-k, the most-confident step, and the supplement's multi-step "unique box"
rule for TD models.

Unique box: for each image and each computation step k = 1 ... t of the last TD stage: the prediction c_k, its
confidence p_k (max softmax), and the box b_k of the class activation map of c_k (:mod:`tdam.cam`). A list of kept
entries (p, logits, box) is built step by step: step 1 is appended as is; for k >= 2 the current entry is compared, in order,
with every kept entry; where the two boxes overlap (IoU > 0.5) the more confident of the two wins -- if the current one
is more confident it REPLACES the kept entry, otherwise the current one TAKES the kept entry's values (and goes on
being compared with the next kept entries with those values) -- and finally the current entry is appended. The image
is top-k correct if ANY kept entry's top-k contains the label.

It is more lenient than the standard ``last`` metric (a second, spatially distinct prediction is a second chance), so it
is always reported next to ``last``, never alone. Ties in confidence keep the kept entry (strict ``>`` to replace).

Vectorised over images: the only Python loops are over steps and kept entries (at most t (t - 1) / 2 comparisons, each
a batched tensor op). A kept entry is tracked by the index of the step it came from, so "its logits" are the logits
of that step.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .boxes import box_iou_inclusive

__all__ = ["IOU_THRESHOLD", "topk_correct", "unique_box_sources", "unique_box_correct", "most_confident_correct"]

IOU_THRESHOLD = 0.5


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, topk: Sequence[int] = (1, 5)) -> torch.Tensor:
    """(..., N, len(topk)) bool: whether the label is among the top-k classes of ``logits`` (..., N, K).

    k larger than the number of classes is capped at it (then every image is correct).
    """
    kmax = min(max(topk), logits.shape[-1])
    pred = logits.topk(kmax, dim=-1).indices  # (..., N, kmax)
    hit = pred == targets.to(pred.device).unsqueeze(-1)
    cum = hit.cumsum(dim=-1) > 0  # (..., N, kmax): correct within the first j+1
    return torch.stack([cum[..., min(k, kmax) - 1] for k in topk], dim=-1)


def unique_box_sources(
    confidences: torch.Tensor, boxes: torch.Tensor, iou_threshold: float = IOU_THRESHOLD
) -> torch.Tensor:
    """Step index (0-based) behind each kept entry after the protocol: (N, t) long.

    ``confidences`` (t, N) max-softmax per step, ``boxes`` (t, N, 4) inclusive xyxy per step.
    """
    t = confidences.shape[0]
    if boxes.shape[:2] != confidences.shape or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (t, N, 4) matching confidences (t, N); got {tuple(boxes.shape)} "
                         f"and {tuple(confidences.shape)}")
    n = confidences.shape[1]
    dev = confidences.device
    boxes = boxes.to(dev)
    kept_src: list[torch.Tensor] = [torch.zeros(n, dtype=torch.long, device=dev)]
    kept_p: list[torch.Tensor] = [confidences[0]]
    kept_b: list[torch.Tensor] = [boxes[0]]
    for k in range(1, t):
        src = torch.full((n,), k, dtype=torch.long, device=dev)
        p, b = confidences[k], boxes[k]
        for j in range(len(kept_src)):
            overlap = box_iou_inclusive(b, kept_b[j]) > iou_threshold
            current_wins = overlap & (p > kept_p[j])
            kept_wins = overlap & ~current_wins
            old = kept_src[j], kept_p[j], kept_b[j]
            kept_src[j] = torch.where(current_wins, src, old[0])
            kept_p[j] = torch.where(current_wins, p, old[1])
            kept_b[j] = torch.where(current_wins[:, None], b, old[2])
            src = torch.where(kept_wins, old[0], src)
            p = torch.where(kept_wins, old[1], p)
            b = torch.where(kept_wins[:, None], old[2], b)
        kept_src.append(src)
        kept_p.append(p)
        kept_b.append(b)
    return torch.stack(kept_src, dim=1)


def unique_box_correct(
    step_logits: torch.Tensor,
    boxes: torch.Tensor,
    targets: torch.Tensor,
    topk: Sequence[int] = (1, 5),
    iou_threshold: float = IOU_THRESHOLD,
) -> torch.Tensor:
    """(N, len(topk)) bool: unique-box correctness from per-step logits (t, N, K) and boxes (t, N, 4)."""
    conf = step_logits.float().softmax(dim=-1).amax(dim=-1)  # (t, N)
    src = unique_box_sources(conf, boxes, iou_threshold)  # (N, t)
    step_hits = topk_correct(step_logits, targets, topk)  # (t, N, len(topk))
    n = step_hits.shape[1]
    kept_hits = step_hits[src, torch.arange(n, device=src.device)[:, None]]  # (N, t, len(topk))
    return kept_hits.any(dim=1)


def most_confident_correct(
    step_logits: torch.Tensor, targets: torch.Tensor, topk: Sequence[int] = (1, 5)
) -> torch.Tensor:
    """(N, len(topk)) bool: correctness of the step with the highest max-softmax (first one on ties)."""
    conf = step_logits.float().softmax(dim=-1).amax(dim=-1)  # (t, N)
    best = conf.argmax(dim=0)  # (N,)
    n = step_logits.shape[1]
    return topk_correct(step_logits[best, torch.arange(n, device=best.device)], targets, topk)
