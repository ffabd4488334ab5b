"""Attention shifting over computation steps (TDAM supplement Fig. 1), as tables.

For each image and each computation step k of the last TD stage: the step's prediction and confidence, and the box
of its Grad-CAM map (15 % rule). On images holding two objects of different classes (the tdam-shapes side-car file
records the second, unlabelled object), the per-step rates say where the model looks: the predicted class is the
labelled (primary) object's or the other object's, and the box covers (IoU ≥ 0.5) one or the other; ``shift`` is
the fraction of images whose box at step k no longer overlaps (IoU ≤ 0.5) the step-1 box.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from tdam.cam import CamResult, boxes_from_maps, grad_cam_steps
from tdam.metrics import box_iou_inclusive

from .data import EvalRun, image_batches

__all__ = ["steps_table", "two_object_targets", "object_rates", "RATE_COLUMNS"]

RATE_COLUMNS = ["model", "step", "pred_primary", "pred_other", "box_on_primary", "box_on_other", "shift_from_step1",
                "n_images"]


def steps_table(
    results: Mapping[str, Sequence[CamResult]],
    labels: Tensor,
    class_names: Sequence[str],
    indices: Sequence[int],
    size: tuple[int, int],
) -> pd.DataFrame:
    """One row per (image, model, step): label, prediction, confidence, correctness and the step's box (crop pixels)."""
    rows = []
    for model, steps in results.items():
        for k, res in enumerate(steps):
            boxes = boxes_from_maps(res.cams[:, 0], size).tolist()
            for i, idx in enumerate(indices):
                pred = int(res.prediction[i])
                rows.append({"image": idx, "model": model, "step": k + 1, "label": class_names[int(labels[i])],
                             "prediction": class_names[pred], "confidence": float(res.confidence[i]),
                             "correct": pred == int(labels[i]), "box": boxes[i]})
    return pd.DataFrame(rows)


def two_object_targets(run: EvalRun, indices: Sequence[int]) -> dict[str, Tensor]:
    """Per image: the labelled (primary) object's and the other object's class and crop box.

    Keys ``primary_label``, ``primary_box``, ``other_label``, ``other_box`` ((N,) / (N, 4)); an object cropped away
    entirely gets label -1 and box (0, 0, 0, 0).
    """
    out = {k: [] for k in ("primary_label", "primary_box", "other_label", "other_box")}
    ds = run.dataset
    for i in indices:
        objs = ds.all_objects(i)
        boxes, keep = run.geometry.map([o["box"] for o in objs], ds.image_size(i), return_keep=True)
        found = {True: (-1, [0, 0, 0, 0]), False: (-1, [0, 0, 0, 0])}
        for o, b, k in zip(objs, boxes.long().tolist(), keep.tolist()):
            if k and found[bool(o["primary"])][0] < 0:
                found[bool(o["primary"])] = (int(o["label"]), b)
        for name, primary in (("primary", True), ("other", False)):
            out[f"{name}_label"].append(found[primary][0])
            out[f"{name}_box"].append(found[primary][1])
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


def object_rates(run: EvalRun, indices: Sequence[int], *, batch_size: int = 64) -> pd.DataFrame:
    """Per computation step, over the images ``indices`` (meant: the two-object ones), the % of images whose
    prediction is the primary / the other object's class, whose Grad-CAM box covers the primary / the other object
    (IoU ≥ 0.5), and whose box moved away from the step-1 box (IoU ≤ 0.5; 'shift'). No images: an empty table
    (e.g. on real ImageNet, which records no second objects)."""
    if not indices:
        return pd.DataFrame(columns=RATE_COLUMNS)
    targets = two_object_targets(run, indices)
    pred, boxes = [], []
    for images, _ in image_batches(run, indices, batch_size):
        steps = grad_cam_steps(run.model, images.to(run.device))
        size = tuple(images.shape[-2:])
        pred.append(torch.stack([s.prediction.cpu() for s in steps]))  # (t, n)
        boxes.append(torch.stack([boxes_from_maps(s.cams[:, 0], size).cpu() for s in steps]))  # (t, n, 4)
    pred, boxes = torch.cat(pred, dim=1), torch.cat(boxes, dim=1)
    has_other = targets["other_label"] >= 0
    rows = []
    for k in range(pred.shape[0]):
        iou_p = box_iou_inclusive(boxes[k], targets["primary_box"])
        iou_o = box_iou_inclusive(boxes[k], targets["other_box"])
        rows.append({
            "model": run.label,
            "step": k + 1,
            "pred_primary": (pred[k] == targets["primary_label"]).float().mean().item() * 100,
            "pred_other": (pred[k] == targets["other_label"])[has_other].float().mean().item() * 100,
            "box_on_primary": (iou_p >= 0.5).float().mean().item() * 100,
            "box_on_other": ((iou_o >= 0.5) & has_other).float().sum().item() * 100 / max(1, int(has_other.sum())),
            "shift_from_step1": (box_iou_inclusive(boxes[k], boxes[0]) <= 0.5).float().mean().item() * 100,
            "n_images": len(indices),
        })
    return pd.DataFrame(rows)
