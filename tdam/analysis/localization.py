"""Weakly-supervised object localisation from Grad-CAM boxes (TDAM supplement §1.2; spec 05 §5.4).

No re-training. For each of the top-1 … top-5 predicted classes, the Grad-CAM map of that class on the last feature
map gives a box (:func:`tdam.evaluation.boxes.boxes_from_maps`: bilinear upsampling to the input, min-max
normalisation, threshold at 15 % of the maximum, largest 8-connected component). A guess (class, box) is correct when
the class is the label AND the box overlaps at least one ground-truth box of the image with IoU ≥ 0.5
(pixel-inclusive corners, the ILSVRC devkit's ``compute_overlap`` convention: width = x1 - x0 + 1):

- Top-1 Loc: the top-1 guess is correct;
- Top-5 Loc: one of the top-5 guesses is correct (the devkit's definition: each guess has its own class's box);
- GT-known Loc: the box of the ground-truth class's map is correct, whatever the classification.

The threshold is inclusive (``>=``) as in the ILSVRC devkit and wsolevaluation; spec 05's wording "IoU > 0.5" differs
only for an IoU of exactly 0.5. For TD models the metrics are also given under the unique-box multi-step rule (spec
05 §5.1, :func:`tdam.evaluation.unique_box.unique_box_sources`): the steps kept by the rule (merged on their top-1
boxes with IoU > 0.5) are each a chance, and an image counts as correct if ANY kept step's guess is correct. Ground
truth boxes are given in the evaluated crop's pixel coordinates (mapped from the original image and clipped by the
caller, e.g. through ``tdam.data``'s box mapping).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from tdam.analysis.gradcam import head_grad_cam, step_features
from tdam.evaluation.boxes import boxes_from_maps, box_iou_inclusive
from tdam.evaluation.unique_box import unique_box_sources

__all__ = [
    "LOC_IOU_THRESHOLD",
    "LOC_METRICS",
    "StepLocalization",
    "pad_boxes",
    "max_iou",
    "localization_hits",
    "unique_box_localization_hits",
    "localize_batch",
    "LocalizationResult",
    "evaluate_localization",
]

LOC_IOU_THRESHOLD = 0.5
LOC_METRICS = ("top1_loc", "top5_loc", "gt_known_loc")


@dataclass
class StepLocalization:
    """Guesses of one computation step for a batch.

    classes (N, K) top-K predicted classes in rank order; boxes (N, K, 4) their Grad-CAM boxes; gt_class_boxes (N, 4)
    the box of the ground-truth class's map; confidence (N,) max softmax; logits (N, num_classes).
    """

    classes: Tensor
    boxes: Tensor
    gt_class_boxes: Tensor
    confidence: Tensor
    logits: Tensor


def pad_boxes(boxes: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack per-image ground-truth boxes (M_i, 4) into (N, M, 4) padded with zeros, and the validity mask (N, M)."""
    if not boxes:
        raise ValueError("no images: expected one (M_i, 4) tensor of ground-truth boxes per image")
    rows = [torch.as_tensor(b).reshape(-1, 4).long() for b in boxes]
    counts = torch.tensor([r.shape[0] for r in rows])
    m = max(1, int(counts.max()))
    out = pad_sequence(rows + [torch.zeros(m, 4, dtype=torch.long)], batch_first=True)[:-1]
    mask = torch.arange(m)[None, :] < counts[:, None]
    return out, mask


def max_iou(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """Best inclusive IoU of each predicted box (N, K, 4) over the image's valid GT boxes (N, M, 4): (N, K).

    An image without any ground-truth box gets -1 (never correct).
    """
    iou = box_iou_inclusive(pred[:, :, None, :], gt[:, None, :, :].to(pred.device))  # (N, K, M)
    iou = iou.masked_fill(~mask[:, None, :].to(iou.device), -1.0)
    return iou.amax(dim=2)


def localization_hits(
    step: StepLocalization,
    labels: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    *,
    iou_threshold: float = LOC_IOU_THRESHOLD,
) -> Tensor:
    """(N, 3) bool: per image, Top-1 Loc, Top-5 Loc and GT-known Loc correctness of one step's guesses.

    Top-5 Loc looks at the first five guesses (all of them when the step holds fewer)."""
    labels = labels.to(step.classes.device)
    box_ok = max_iou(step.boxes, gt_boxes, gt_mask) >= iou_threshold  # (N, K)
    guess_ok = box_ok & (step.classes == labels[:, None])
    gt_known = max_iou(step.gt_class_boxes[:, None], gt_boxes, gt_mask)[:, 0] >= iou_threshold
    return torch.stack([guess_ok[:, 0], guess_ok[:, :5].any(dim=1), gt_known], dim=1)


def unique_box_localization_hits(
    steps: Sequence[StepLocalization],
    labels: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    *,
    iou_threshold: float = LOC_IOU_THRESHOLD,
) -> Tensor:
    """(N, 3) bool: the metrics of :func:`localization_hits` under the unique-box multi-step rule.

    The rule (spec 05 §5.1) runs on each step's confidence and top-1 box; an image is correct if any kept step is.
    """
    conf = torch.stack([s.confidence for s in steps])  # (t, N)
    top1_boxes = torch.stack([s.boxes[:, 0] for s in steps])  # (t, N, 4)
    src = unique_box_sources(conf, top1_boxes)  # (N, t) step behind each kept entry
    hits = torch.stack([localization_hits(s, labels, gt_boxes, gt_mask, iou_threshold=iou_threshold) for s in steps])
    n = hits.shape[1]
    return hits[src, torch.arange(n, device=src.device)[:, None]].any(dim=1)


def localize_batch(
    model: nn.Module, images: Tensor, labels: Tensor, *, topk: int = 5, steps: bool = True
) -> list[StepLocalization]:
    """Grad-CAM guesses for a batch: one :class:`StepLocalization` per computation step (one for plain models).

    For each step the top-``topk`` classes and the label get their Grad-CAM maps on that step's last feature map
    (``topk`` + 1 batched backward passes through the head); boxes are in the input's pixel coordinates.
    """
    size = tuple(images.shape[-2:])
    out = []
    for feats, logits in step_features(model, images, steps=steps):
        k = min(topk, logits.shape[1])
        classes = logits.topk(k, dim=1).indices
        query = torch.cat([classes, labels.view(-1, 1).to(classes.device)], dim=1)  # (N, k + 1)
        maps = head_grad_cam(model, feats, query)
        n, q, h, w = maps.shape
        boxes = boxes_from_maps(maps.reshape(n * q, h, w), size).view(n, q, 4)
        out.append(
            StepLocalization(
                classes=classes,
                boxes=boxes[:, :k],
                gt_class_boxes=boxes[:, k],
                confidence=logits.softmax(dim=1).amax(dim=1),
                logits=logits,
            )
        )
    return out


@dataclass
class LocalizationResult:
    """Per-image correctness of a localisation run.

    hits: {row name: (N, 3) bool} with rows ``last`` (the trained model, all steps), ``step k`` (each step) and, for TD
    models, ``unique-box``; columns Top-1 Loc, Top-5 Loc, GT-known Loc. cls_hits: {row: (N, 2)} top-1/top-5
    classification correctness of the same guesses. last_boxes (N, 4), last_classes, last_confidence, last_iou (N,):
    the last step's top-1 guess, its box and that box's best IoU with the ground truth.
    """

    hits: dict[str, Tensor]
    cls_hits: dict[str, Tensor]
    last_boxes: Tensor
    last_classes: Tensor
    last_confidence: Tensor
    last_iou: Tensor
    labels: Tensor

    def table(self) -> pd.DataFrame:
        """Rows as in ``hits``; columns top1_loc, top5_loc, gt_known_loc, top1_cls, top5_cls (in %), n_images."""
        rows = []
        for name, h in self.hits.items():
            loc = h.float().mean(dim=0).mul(100).tolist()
            cls = self.cls_hits[name].float().mean(dim=0).mul(100).tolist()
            rows.append({"protocol": name, **dict(zip(LOC_METRICS, loc)), "top1_cls": cls[0], "top5_cls": cls[1],
                         "n_images": int(h.shape[0])})
        return pd.DataFrame(rows)


def _cls_hits(steps: Sequence[StepLocalization], labels: Tensor) -> Tensor:
    """(t, N, 2) top-1 / top-5 classification correctness of each step's guesses."""
    cls = torch.stack([s.classes for s in steps])  # (t, N, K)
    hit = cls == labels.to(cls.device)[None, :, None]
    return torch.stack([hit[..., 0], hit[..., :5].any(dim=-1)], dim=-1)


def evaluate_localization(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Sequence[Tensor]]],
    *,
    topk: int = 5,
    device: str | torch.device = "cpu",
    iou_threshold: float = LOC_IOU_THRESHOLD,
) -> LocalizationResult:
    """Top-1 / Top-5 / GT-known Loc over ``batches`` of (images, labels, per-image GT boxes (M_i, 4) in the evaluated
    crop's pixel coordinates). TD models are evaluated at every computation step of the last TD stage, plus the
    unique-box rule over the steps; ``last`` is the trained model's own output (all steps)."""
    hits: dict[str, list[Tensor]] = {}
    cls_hits: dict[str, list[Tensor]] = {}
    last_boxes, last_classes, last_conf, last_iou, all_labels = [], [], [], [], []

    def add(store: dict[str, list[Tensor]], name: str, value: Tensor) -> None:
        store.setdefault(name, []).append(value.cpu())

    for images, labels, boxes in batches:
        images, labels = images.to(device), labels.to(device)
        gt, mask = pad_boxes(list(boxes))
        gt, mask = gt.to(device), mask.to(device)
        steps = localize_batch(model, images, labels, topk=topk)
        per_step = [localization_hits(s, labels, gt, mask, iou_threshold=iou_threshold) for s in steps]
        step_cls = _cls_hits(steps, labels)
        add(hits, "last", per_step[-1])
        add(cls_hits, "last", step_cls[-1])
        if len(steps) > 1:
            for k, h in enumerate(per_step):
                add(hits, f"step {k + 1}", h)
                add(cls_hits, f"step {k + 1}", step_cls[k])
            add(hits, "unique-box", unique_box_localization_hits(steps, labels, gt, mask, iou_threshold=iou_threshold))
            conf = torch.stack([s.confidence for s in steps])
            src = unique_box_sources(conf, torch.stack([s.boxes[:, 0] for s in steps]))
            add(cls_hits, "unique-box", step_cls[src, torch.arange(len(labels), device=src.device)[:, None]].any(1))
        last_boxes.append(steps[-1].boxes[:, 0].cpu())
        last_classes.append(steps[-1].classes[:, 0].cpu())
        last_conf.append(steps[-1].confidence.cpu())
        last_iou.append(max_iou(steps[-1].boxes[:, :1], gt, mask)[:, 0].cpu())
        all_labels.append(labels.cpu())
    if not all_labels:
        raise ValueError("no images to evaluate: the batches were empty")
    return LocalizationResult(
        hits={k: torch.cat(v) for k, v in hits.items()},
        cls_hits={k: torch.cat(v) for k, v in cls_hits.items()},
        last_boxes=torch.cat(last_boxes),
        last_classes=torch.cat(last_classes),
        last_confidence=torch.cat(last_conf),
        last_iou=torch.cat(last_iou),
        labels=torch.cat(all_labels),
    )
