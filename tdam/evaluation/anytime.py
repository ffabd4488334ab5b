"""Anytime prediction of TD models: accuracy against compute over a confidence-threshold sweep.

``model.forward_anytime(x, threshold)`` (:mod:`tdam.models.steps`) stops each image at the first step of the last TD
stage whose max-softmax reaches ``threshold`` (else at step t). :func:`anytime_curve` evaluates it over a loader for a
sweep of thresholds and puts beside it the model's fixed step counts 1 .. t (``model.steps(k)``, one forward each)
and the supplement's most-confident step (``forward_steps``: every step for every image). Per point: top-k accuracy,
mean steps, mean GMACs per image (paper convention, :func:`tdam.complexity.anytime_macs` for the anytime points) and
measured images/s. Every point runs on the same batches, interleaved (the order rotates from batch to batch), timed
around the model call and the top-k check (data loading excluded), so the images/s ratios hold within one run and
device.
:func:`plot_anytime_curve` draws top-1 against GMACs.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from tdam import complexity
from tdam.metrics import most_confident_correct, topk_correct

from .classes import check_class_count
from .classification import autocast
from .cost import device_name, sync
from .data import device_batches, on_device
from .figures import COLUMN_WIDTH_IN, axis_label, figure_title, print_style

__all__ = ["ANYTIME_THRESHOLDS", "anytime_curve", "plot_anytime_curve"]

# the default sweep: 0 stops every image at step 1, 1.01 runs every image to step t; denser at low confidences,
# where a model with few classes or a short schedule has most of its step-1 max-softmax values
ANYTIME_THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9, 1.01)


def _points(model: nn.Module, thresholds: Sequence[float]) -> list[tuple[str, float]]:
    """(kind, value) per curve point: ('anytime', threshold), ('fixed', k), ('most_confident', t)."""
    t = model.td_steps
    return ([("anytime", float(th)) for th in thresholds] + [("fixed", k) for k in range(1, t + 1)]
            + [("most_confident", t)])


def _run(model: nn.Module, kind: str, value: float, x: torch.Tensor, y: torch.Tensor,
         topk: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image correctness (N, len(topk)) and steps run (N,) of one point on one batch."""
    if kind == "anytime":
        logits, steps = model.forward_anytime(x, value)
        return topk_correct(logits, y, topk), steps
    if kind == "fixed":
        with model.steps(int(value)):
            logits = model(x)
        return topk_correct(logits, y, topk), torch.full((x.shape[0],), int(value), device=x.device)
    logits = torch.stack(model.forward_steps(x))
    return most_confident_correct(logits, y, topk), torch.full((x.shape[0],), int(value), device=x.device)


def anytime_curve(
    model: nn.Module,
    loader: Iterable,
    thresholds: Sequence[float] = ANYTIME_THRESHOLDS,
    *,
    device: str | torch.device | None = None,
    topk: Sequence[int] = (1, 5),
    amp: str | None = None,
    channels_last: bool = False,
    max_batches: int | None = None,
) -> pd.DataFrame:
    """Accuracy, mean steps, mean GMACs per image and images/s of ``forward_anytime`` at each of ``thresholds``, of
    the fixed step counts 1 .. t and of the most-confident step, over ``loader`` (batches of (images, targets)).

    One row per point: ``point`` ('anytime' | 'fixed' | 'most_confident'), ``label``, ``threshold`` (anytime rows),
    ``top1``/``top5``... (%), ``mean_steps`` (steps of the last TD stage run per image: for anytime rows the step it
    stopped at), ``gmacs`` (mean MACs per image / 1e9, paper convention at the loader's image size; an anytime image
    that stops at step k pays the shared part once and steps 1 .. k; most-confident pays every step), ``images_per_s``
    (the model call and the top-k check, under ``torch.inference_mode``), ``stop_at_1`` .. ``stop_at_t`` (fraction
    of the images that stopped at each step; anytime rows), and the measurement labels (images, device, dtype, batch,
    img_size, channels_last). The model is put in eval mode and on ``device`` (default: the model's device).
    """
    if not callable(getattr(model, "forward_anytime", None)):
        raise ValueError(f"{type(model).__name__} has no forward_anytime: the anytime curve needs a tdam model "
                         "(tdam.create_model, timm's registry or tdam.add_td)")
    topk = tuple(int(k) for k in topk)
    if not topk or min(topk) < 1:
        raise ValueError(f"topk must be positive integers, got {topk}")
    if not thresholds:
        raise ValueError("thresholds is empty: give at least one confidence threshold")
    if getattr(loader, "dataset", None) is not None:
        check_class_count(model, loader.dataset)
    device = on_device(model, device, channels_last=channels_last)
    autocast(device, amp)                                     # a wrong amp name fails before any pass
    points = _points(model, thresholds)
    correct = [[] for _ in points]
    steps = [[] for _ in points]
    seconds = [0.0] * len(points)
    size = batch = None
    batches = device_batches(loader, device, channels_last=channels_last, max_batches=max_batches)
    for i, (x, y) in enumerate(batches):
        if size is None:
            if x.shape[-1] != x.shape[-2]:
                raise ValueError(f"the MAC counts need square images, got {tuple(x.shape[-2:])}")
            size, batch = int(x.shape[-1]), int(x.shape[0])
        shift = i % len(points)
        for j in [*range(shift, len(points)), *range(shift)]:  # interleaved: each point goes first in turn
            sync(device)
            start = time.perf_counter()
            with torch.inference_mode(), autocast(device, amp):
                c, s = _run(model, *points[j], x, y, topk)
            sync(device)
            seconds[j] += time.perf_counter() - start
            correct[j].append(c.cpu())
            steps[j].append(s.cpu())
    if size is None:
        raise ValueError("the loader yielded no batches")
    per_stop = complexity.anytime_macs(model, size)
    fixed = []
    for k in range(1, model.td_steps + 1):
        with model.steps(k):
            fixed.append(complexity.flops(model, size))
    labels = {"device": device_name(device), "dtype": amp or "fp32", "batch": batch, "img_size": size,
              "channels_last": channels_last}
    rows = []
    for (kind, value), c, s, sec in zip(points, correct, steps, seconds):
        c, s = torch.cat(c), torch.cat(s)
        row = {"point": kind,
               "label": {"anytime": f"threshold {value:g}", "fixed": f"t = {value}"}.get(kind, "most-confident"),
               "threshold": value if kind == "anytime" else np.nan}
        row.update({f"top{k}": 100.0 * float(c[:, n].float().mean()) for n, k in enumerate(topk)})
        row["mean_steps"] = float(s.float().mean())
        row["gmacs"] = (complexity.mean_macs(per_stop, s) if kind == "anytime"
                        else fixed[int(value) - 1] if kind == "fixed" else per_stop[-1]) / 1e9
        row["images_per_s"] = len(s) / sec if sec > 0 else np.nan
        share = torch.bincount(s, minlength=model.td_steps + 1)[1:].double() / len(s)
        row.update({f"stop_at_{k}": float(share[k - 1]) if kind == "anytime" else np.nan
                    for k in range(1, model.td_steps + 1)})
        rows.append({**row, "images": len(s), **labels})
    return pd.DataFrame(rows)


@print_style
def plot_anytime_curve(curve: pd.DataFrame, *, title: str = "", metric: str = "top1"):
    """Accuracy (``metric``) against mean GMACs per image: the anytime points as a line (lowest threshold at the
    left), the fixed step counts and the most-confident step as separate markers. ``curve``: :func:`anytime_curve`.
    ``title``: the model and the data, e.g. "ResNet-18 TD (t=2, m=1), ImageNet val".

    Printed at one column's width (:data:`~tdam.evaluation.figures.COLUMN_WIDTH_IN`)."""
    if metric not in curve:
        raise ValueError(f"metric {metric!r} is not a column of the curve; choose one of "
                         f"{[c for c in curve.columns if c.startswith('top')]}")
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.8), layout="constrained")
    anytime = curve[curve.point == "anytime"].sort_values("threshold")
    ax.plot(anytime.gmacs, anytime[metric], marker="o", ms=3, label="anytime (confidence threshold)")
    for _, r in anytime.iloc[[0, -1]].iterrows() if len(anytime) > 1 else anytime.iterrows():
        ax.annotate(f"{r.threshold:g}", (r.gmacs, r[metric]), textcoords="offset points", xytext=(3, -8),
                    fontsize=6.5)
    fixed = curve[curve.point == "fixed"]
    ax.plot(fixed.gmacs, fixed[metric], ls="none", marker="s", color="black", label="fixed step count")
    for _, r in fixed.iterrows():
        ax.annotate(r.label, (r.gmacs, r[metric]), textcoords="offset points", xytext=(3, 3), fontsize=6.5)
    best = curve[curve.point == "most_confident"]
    ax.plot(best.gmacs, best[metric], ls="none", marker="*", ms=7, color="tab:red", label="most-confident step")
    ax.set_xlabel("mean GMACs per image")
    ax.set_ylabel(axis_label(metric) if metric == "top1" else f"{metric.replace('top', 'top-')} accuracy (%)")
    fig.legend(loc="outside lower center", ncols=1, frameon=False)
    fig.suptitle(figure_title("Anytime prediction: accuracy against compute", title))
    return fig
