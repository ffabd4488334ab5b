"""Weakly-supervised object localisation of a trained model (TDAM supplement §1.2), without re-training.

For each of the top-1 ... top-5 predicted classes and the label, the Grad-CAM map of that class on the last feature
map gives a box (:mod:`tdam.cam`: bilinear upsampling, min-max normalisation, 15 % threshold, largest 8-connected
component); :mod:`tdam.metrics.localization` scores the guesses (Top-1 / Top-5 / GT-known Loc, IoU >= 0.5), at every
computation step of a TD model and under the unique-box rule. Ground-truth boxes come in the evaluated crop's pixel
coordinates (mapped from the original image and clipped, e.g. by :func:`tdam.evaluation.data.crop_boxes`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from tdam.cam import boxes_from_maps, head_grad_cam, step_features
from tdam.metrics import (LOC_IOU_THRESHOLD, LOC_METRICS, StepLocalization, localization_hits, max_iou, pad_boxes,
                          step_cls_hits, unique_box_localization_hits)

__all__ = ["localize_batch", "LocalizationResult", "evaluate_localization"]


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
        step_cls = step_cls_hits(steps, labels)
        add(hits, "last", per_step[-1])
        add(cls_hits, "last", step_cls[-1])
        if len(steps) > 1:
            for k, h in enumerate(per_step):
                add(hits, f"step {k + 1}", h)
                add(cls_hits, f"step {k + 1}", step_cls[k])
            add(hits, "unique-box", unique_box_localization_hits(steps, labels, gt, mask, iou_threshold=iou_threshold))
            add(cls_hits, "unique-box", step_cls_hits(steps, labels, unique_box=True))
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
