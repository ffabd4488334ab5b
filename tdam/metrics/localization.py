"""Weakly-supervised localisation correctness from class-activation boxes (TDAM supplement §1.2), per image.

A guess (class, box) is correct when the class is the label AND the box overlaps at least one ground-truth box of the
image with IoU >= 0.5 (pixel-inclusive corners; inclusive threshold as the ILSVRC devkit and wsolevaluation):

- Top-1 Loc: the top-1 guess is correct;
- Top-5 Loc: one of the top-5 guesses is correct (each guess has its own class's box);
- GT-known Loc: the box of the ground-truth class's map is correct, whatever the classification.

For TD models the same metrics under the unique-box rule (:func:`tdam.metrics.unique_box_sources`, merged on the
steps' top-1 boxes with IoU > 0.5): every kept step is a chance, an image is correct if ANY kept step's guess is.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import max_iou
from .classification import unique_box_sources

__all__ = ["LOC_IOU_THRESHOLD", "LOC_METRICS", "StepLocalization", "localization_hits",
           "unique_box_localization_hits", "step_cls_hits"]

LOC_IOU_THRESHOLD = 0.5
LOC_METRICS = ("top1_loc", "top5_loc", "gt_known_loc")


@dataclass
class StepLocalization:
    """Guesses of one computation step for a batch.

    classes (N, K) top-K predicted classes in rank order; boxes (N, K, 4) their boxes; gt_class_boxes (N, 4) the box
    of the ground-truth class's map; confidence (N,) max softmax; logits (N, num_classes).
    """

    classes: Tensor
    boxes: Tensor
    gt_class_boxes: Tensor
    confidence: Tensor
    logits: Tensor


def localization_hits(step: StepLocalization, labels: Tensor, gt_boxes: Tensor, gt_mask: Tensor, *,
                      iou_threshold: float = LOC_IOU_THRESHOLD) -> Tensor:
    """(N, 3) bool: per image, Top-1 Loc, Top-5 Loc and GT-known Loc correctness of one step's guesses.

    Top-5 Loc looks at the first five guesses (all of them when the step holds fewer)."""
    labels = labels.to(step.classes.device)
    box_ok = max_iou(step.boxes, gt_boxes, gt_mask) >= iou_threshold  # (N, K)
    guess_ok = box_ok & (step.classes == labels[:, None])
    gt_known = max_iou(step.gt_class_boxes[:, None], gt_boxes, gt_mask)[:, 0] >= iou_threshold
    return torch.stack([guess_ok[:, 0], guess_ok[:, :5].any(dim=1), gt_known], dim=1)


def _kept_sources(steps: Sequence[StepLocalization]) -> Tensor:
    conf = torch.stack([s.confidence for s in steps])  # (t, N)
    return unique_box_sources(conf, torch.stack([s.boxes[:, 0] for s in steps]))  # (N, t)


def unique_box_localization_hits(steps: Sequence[StepLocalization], labels: Tensor, gt_boxes: Tensor,
                                 gt_mask: Tensor, *, iou_threshold: float = LOC_IOU_THRESHOLD) -> Tensor:
    """(N, 3) bool: the metrics of :func:`localization_hits` under the unique-box multi-step rule, which runs on each
    step's confidence and top-1 box; an image is correct if any kept step is."""
    src = _kept_sources(steps)
    hits = torch.stack([localization_hits(s, labels, gt_boxes, gt_mask, iou_threshold=iou_threshold) for s in steps])
    return hits[src, torch.arange(hits.shape[1], device=src.device)[:, None]].any(dim=1)


def step_cls_hits(steps: Sequence[StepLocalization], labels: Tensor, *, unique_box: bool = False) -> Tensor:
    """Top-1 / top-5 classification correctness of each step's guesses, (t, N, 2); with ``unique_box`` the (N, 2)
    correctness under the unique-box rule."""
    cls = torch.stack([s.classes for s in steps])  # (t, N, K)
    hit = cls == labels.to(cls.device)[None, :, None]
    hits = torch.stack([hit[..., 0], hit[..., :5].any(dim=-1)], dim=-1)
    if not unique_box:
        return hits
    src = _kept_sources(steps)
    return hits[src, torch.arange(hits.shape[1], device=src.device)[:, None]].any(dim=1)
