"""Evaluating a classifier over a loader: the paper's Table 1 accuracy columns.

Every model gets top-1/top-5 of its logits (``last``). TD models (those with ``forward_steps``) get, from the SAME
batch pass (stem and earlier stages computed once, only the last TD stage re-run per step):

- ``last``: the logits of the last step (= ``model(x)``, all steps run): the standard metric;
- ``most_confident``: the step with the highest max-softmax;
- ``unique_box``: the supplement's multi-step protocol (:func:`tdam.metrics.unique_box_correct`), on the boxes of
  :func:`tdam.cam.step_maps` (CAM for global-average-pool + linear heads such as ResNet's, Grad-CAM through the head
  for the others: ConvNeXt, MobileNetV3);
- the accuracy of every step 1 ... t (accuracy against t, no fine-tuning).

Per-image correctness is kept, so per-class tables come from the same pass.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from tdam.cam import boxes_from_maps, step_maps
from tdam.metrics import most_confident_correct, topk_correct, unique_box_correct
from tdam.models import is_td_model
from tdam.progress import Progress

from .classes import check_class_count
from .cost import sync
from .data import device_batches, on_device

__all__ = [
    "TD_METRICS",
    "EvalResult",
    "batch_metrics",
    "evaluate",
    "accuracy_vs_steps",
]

TD_METRICS = ("last", "most_confident", "unique_box")
METRIC_LABELS = {"last": "last", "most_confident": "most-confident", "unique_box": "paper (unique-box)"}
AMP_DTYPES = {None: None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}   # amp= -> autocast dtype


def batch_metrics(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, topk: Sequence[int] = (1, 5), *, td_metrics: bool = True
) -> dict[str, torch.Tensor]:
    """Per-image correctness (N, len(topk)) bool for one batch: ``last`` for every model; for TD models with
    ``td_metrics`` also ``most_confident``, ``unique_box`` and ``steps`` (t, N, len(topk)).
    """
    if not (is_td_model(model) and td_metrics):
        with torch.no_grad():
            return {"last": topk_correct(model(x), targets, topk)}
    logits, cams = step_maps(model, x, maps=True)
    boxes = torch.stack([boxes_from_maps(c, size=tuple(x.shape[-2:])) for c in cams])  # (t, N, 4)
    steps = topk_correct(logits, targets, topk)
    return {
        "last": steps[-1],
        "most_confident": most_confident_correct(logits, targets, topk),
        "unique_box": unique_box_correct(logits, boxes, targets, topk),
        "steps": steps,
    }


@dataclass
class EvalResult:
    """Per-image correctness of one evaluation run, and what it was run with."""

    topk: tuple[int, ...]
    targets: np.ndarray  # (N,)
    correct: dict[str, np.ndarray]  # metric -> (N, len(topk)) bool
    step_correct: np.ndarray | None  # (t, N, len(topk)) bool, TD models only
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return int(self.targets.shape[0])

    @property
    def images_per_s(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> pd.DataFrame:
        """One row per metric: top-k accuracies in percent."""
        rows = []
        for name, c in self.correct.items():
            row = {"metric": METRIC_LABELS.get(name, name), "key": name, "images": self.num_images}
            row.update({f"top{k}": 100.0 * float(c[:, i].mean()) for i, k in enumerate(self.topk)})
            rows.append(row)
        return pd.DataFrame(rows)

    def accuracy(self, metric: str = "last", k: int = 1) -> float:
        return 100.0 * float(self.correct[metric][:, self.topk.index(k)].mean())

    def steps_table(self) -> pd.DataFrame:
        """Accuracy of the last TD stage run at 1 ... t steps (from the one-pass evaluation)."""
        if self.step_correct is None:
            raise ValueError("accuracy against t needs a TD model evaluated with td_metrics=True")
        rows = [{"steps": s + 1, **{f"top{k}": 100.0 * float(sc[:, i].mean()) for i, k in enumerate(self.topk)}}
                for s, sc in enumerate(self.step_correct)]
        return pd.DataFrame(rows)

    def per_class(self, class_names: Sequence[str] | None = None) -> pd.DataFrame:
        """Per-class accuracy (percent) for every metric and k, one row per class present in the labels or names."""
        n_cls = max(int(self.targets.max()) + 1 if self.num_images else 0, len(class_names or ()))
        counts = np.bincount(self.targets, minlength=n_cls)
        out = pd.DataFrame({"class_index": np.arange(n_cls), "images": counts})
        if class_names is not None:
            out.insert(1, "class_name", list(class_names) + [""] * (n_cls - len(class_names)))
        with np.errstate(invalid="ignore", divide="ignore"):
            for name, c in self.correct.items():
                for i, k in enumerate(self.topk):
                    hits = np.bincount(self.targets, weights=c[:, i].astype(np.float64), minlength=n_cls)
                    out[f"{name}_top{k}"] = np.where(counts > 0, 100.0 * hits / np.maximum(counts, 1), np.nan)
        return out


def autocast(device: torch.device, amp: str | None):
    """The autocast context of ``amp`` (:data:`AMP_DTYPES`; fp32 / None: none) on ``device``; a wrong name is a
    ValueError naming the choices."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(k for k in AMP_DTYPES if k)} or None, got {amp!r}")
    if AMP_DTYPES[amp] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def _num_images(loader: Iterable, max_batches: int | None) -> int | None:
    """The images ``loader`` yields (at most ``max_batches`` batches of them), or None where it cannot tell."""
    try:
        n = len(loader.dataset)
    except (AttributeError, TypeError):
        return None
    size = getattr(loader, "batch_size", None)
    return min(n, max_batches * size) if max_batches is not None and size else n


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device | None = None,
    topk: Sequence[int] = (1, 5),
    td_metrics: bool = True,
    amp: str | None = None,
    channels_last: bool = False,
    max_batches: int | None = None,
) -> EvalResult:
    """Evaluate ``model`` over ``loader`` (batches of (images, targets)); see the module docstring for the metrics.

    ``td_metrics=False`` measures plain top-k of ``model(x)`` only (the baseline cost for the speed comparison).
    The model is put in eval mode and on ``device`` (default: the model's device).

    Raises :class:`~tdam.evaluation.classes.ClassCountError`, before any image is computed, when ``loader.dataset``
    lists a different number of classes than the model predicts (a loader without a dataset that lists its classes,
    e.g. a list of batches, is not checked).

    Prints progress (images done, rate, ETA: :class:`tdam.progress.Progress`) at most every 10 s, and a final line.
    """
    topk = tuple(int(k) for k in topk)
    if not topk or min(topk) < 1:
        raise ValueError(f"topk must be positive integers, got {topk}")
    if getattr(loader, "dataset", None) is not None:
        check_class_count(model, loader.dataset)
    device = on_device(model, device, channels_last=channels_last)
    targets, correct, steps = [], {}, []
    progress = Progress("evaluate", _num_images(loader, max_batches))
    start = time.perf_counter()
    for x, y in device_batches(loader, device, channels_last=channels_last, max_batches=max_batches):
        with autocast(device, amp):
            out = batch_metrics(model, x, y, topk, td_metrics=td_metrics)
        targets.append(y.cpu())
        if "steps" in out:
            steps.append(out.pop("steps").cpu())
        for name, c in out.items():
            correct.setdefault(name, []).append(c.cpu())
        progress.update(len(y))
    sync(device)
    seconds = time.perf_counter() - start
    progress.close()
    if not targets:
        raise ValueError("the loader yielded no batches")
    return EvalResult(
        topk=topk,
        targets=torch.cat(targets).numpy().astype(np.int64),
        correct={k: torch.cat(v).numpy() for k, v in correct.items()},
        step_correct=torch.cat(steps, dim=1).numpy() if steps else None,
        seconds=seconds,
        info={"device": str(device), "amp": amp or "fp32", "channels_last": channels_last,
              "td_metrics": bool(td_metrics and is_td_model(model))},
    )


def accuracy_vs_steps(
    model: nn.Module,
    loader: Iterable,
    steps: Sequence[int],
    *,
    device: str | torch.device | None = None,
    topk: Sequence[int] = (1, 5),
    max_batches: int | None = None,
) -> pd.DataFrame:
    """Top-k of ``model(x)`` with the last TD stage set to each of ``steps`` via ``model.steps(k)`` (no fine-tuning).

    An independent path to :meth:`EvalResult.steps_table`: one full forward per step count, and it accepts any step
    count the model supports. Rows: steps, top1, top5, ...
    """
    if not hasattr(model, "steps"):
        raise ValueError("accuracy against t needs a TD model (with a `steps(k)` context manager)")
    topk = tuple(int(k) for k in topk)
    device = on_device(model, device)
    hits = {s: [] for s in steps}
    progress = Progress(f"accuracy at t = {', '.join(str(s) for s in steps)}", _num_images(loader, max_batches))
    with torch.no_grad():
        for x, y in device_batches(loader, device, max_batches=max_batches):
            for s in steps:
                with model.steps(int(s)):
                    hits[s].append(topk_correct(model(x), y, topk).cpu())
            progress.update(len(y))
    progress.close()
    rows = []
    for s in steps:
        c = torch.cat(hits[s]).float().mean(dim=0) * 100.0
        rows.append({"steps": int(s), **{f"top{k}": float(c[i]) for i, k in enumerate(topk)}})
    return pd.DataFrame(rows)
