"""Figures of notebooks 02-09: accuracy against computation steps, cost scaling, test-resolution robustness
(supplement Fig. 2), attention shift over computation steps (Fig. 1), predicted vs ground-truth localisation boxes
(§1.2) and the H(X, Y^j) entropy histograms (Figs. 3-4).

Every function returns a matplotlib ``Figure``; :func:`tdam.notebook.save_figure` writes it as PNG + PDF.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from tdam.cam import CamResult, boxes_from_maps, upsample_normalise

from .localization import LocalizationResult
from .selectivity import BlockSelectivity

__all__ = ["to_display", "attention_shift_figure", "boxes_figure", "localization_figure", "entropy_histograms",
           "plot_accuracy_vs_steps", "resolution_table", "legend_label", "plot_resolution", "plot_scaling"]

GT_COLOUR = "#00ff66"
PRED_COLOUR = "#ff2d2d"
OTHER_COLOUR = "#ffd400"


def to_display(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the input normalisation: (N, 3, H, W) tensors -> (N, H, W, 3) float arrays in [0, 1] for imshow."""
    m = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images.detach().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _box(ax, box, colour: str, lw: float = 1.5, ls: str = "-") -> None:
    x0, y0, x1, y1 = [float(v) for v in box]
    # inclusive pixel corners: the box covers [x0 - .5, x1 + .5] in imshow's pixel-centre coordinates
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec=colour, lw=lw, ls=ls))


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def attention_shift_figure(
    images: np.ndarray,
    results: Mapping[str, Sequence[CamResult]],
    class_names: Sequence[str],
    *,
    objects: Sequence[Sequence[tuple[str, Sequence[int], bool]]] | None = None,
    labels: Sequence[int] | None = None,
    alpha: float = 0.5,
    panel: float = 1.9,
) -> Figure:
    """The supplement's Fig. 1 grid, one row per image: the image, then for each model one Grad-CAM overlay per
    computation step, titled with the model, the step, that step's prediction and its confidence (max softmax); the
    step's box (15 % rule) in red.

    ``images`` (N, H, W, 3) in [0, 1]; ``results`` {model label: grad_cam_steps(...)} (a plain model has one step);
    ``objects`` per image: (class name, box, primary) drawn on the image (labelled object green, the other yellow).
    """
    n, h, w = images.shape[:3]
    panels = [(label, k, step) for label, steps in results.items() for k, step in enumerate(steps)]
    fig, axes = plt.subplots(n, 1 + len(panels), figsize=(panel * (1 + len(panels)), panel * n * 1.12),
                             squeeze=False)
    maps = [upsample_normalise(step.cams[:, 0], (h, w)).numpy() for _, _, step in panels]
    boxes = [boxes_from_maps(step.cams[:, 0], (h, w)).numpy() for _, _, step in panels]
    for i in range(n):
        row = axes[i]
        row[0].imshow(images[i])
        row[0].set_title("label: " + class_names[labels[i]] if labels is not None else f"image {i}", fontsize=7)
        for _, box, primary in (objects[i] if objects is not None else ()):
            _box(row[0], box, GT_COLOUR if primary else OTHER_COLOUR)
        for j, (label, k, step) in enumerate(panels):
            ax = row[j + 1]
            ax.imshow(images[i])
            ax.imshow(maps[j][i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
            _box(ax, boxes[j][i], PRED_COLOUR)
            c = int(step.prediction[i])
            ax.set_title(f"{label}, step {k + 1}\n{class_names[c]} ({float(step.confidence[i]):.2f})", fontsize=6)
        for ax in row:
            _off(ax)
    fig.tight_layout()
    return fig


def boxes_figure(
    images: np.ndarray,
    gt_boxes: Sequence[Tensor],
    pred_boxes: Tensor,
    titles: Sequence[str],
    *,
    title: str = "",
    ncols: int = 6,
    panel: float = 1.9,
) -> Figure:
    """Predicted (red, dashed: the top-1 class's Grad-CAM box) vs ground-truth boxes (green) on the evaluated crops."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, panel * nrows * 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax = axes.flat[i]
        ax.axis("on")
        ax.imshow(images[i])
        for b in torch.as_tensor(gt_boxes[i]).reshape(-1, 4):
            _box(ax, b.tolist(), GT_COLOUR)
        _box(ax, pred_boxes[i].tolist(), PRED_COLOUR, ls="--")
        ax.set_title(titles[i], fontsize=7)
        _off(ax)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def localization_figure(
    images: np.ndarray,
    gt_boxes: Sequence[Tensor],
    result: LocalizationResult,
    class_names: Sequence[str],
    positions: Sequence[int],
    **kwargs,
) -> Figure:
    """``boxes_figure`` for some images of a localisation run (``positions``: their places in the run's order): the
    last step's top-1 box, titled with the predicted class, its confidence and the box's best IoU with the ground
    truth (✓ = Top-1 Loc correct)."""
    pos = torch.as_tensor(list(positions), dtype=torch.long)
    hits = result.hits["last"][pos, 0].tolist()
    titles = [f"{class_names[int(c)]} {float(p):.2f}\nIoU {float(iou):.2f} {'✓' if h else '✗'}"
              for c, p, iou, h in zip(result.last_classes[pos], result.last_confidence[pos], result.last_iou[pos],
                                      hits)]
    return boxes_figure(images, gt_boxes, result.last_boxes[pos], titles, **kwargs)


def entropy_histograms(
    results: Mapping[str, Mapping[str, BlockSelectivity]],
    blocks: Sequence[str],
    *,
    bins: int = 30,
    title: str = "",
) -> Figure:
    """Histograms over output channels j of H(X, Y^j) (averaged over images), one panel per block, one colour per
    model (supplement Fig. 3 for layer4 blocks, Fig. 4 for layer3 blocks). Block names are 0-based module names
    (``layer4.1``); panel titles give the paper's 1-based numbering."""
    fig, axes = plt.subplots(1, len(blocks), figsize=(3.2 * len(blocks), 2.8), squeeze=False)
    for ax, name in zip(axes[0], blocks):
        values = {label: stats[name].channel_entropy().numpy() for label, stats in results.items()}
        lo = min(v.min() for v in values.values())
        hi = max(v.max() for v in values.values())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        for label, v in values.items():
            ax.hist(v, bins=edges, alpha=0.55, label=label)
        layer, idx = name.split(".")
        ax.set_title(f"{layer} block {int(idx) + 1}", fontsize=9)
        ax.set_xlabel("H(X, Y$^j$) [nats]", fontsize=8)
        ax.set_ylabel("output channels", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_steps(tables: Mapping[str, pd.DataFrame], *, trained_t: int | None = None, title: str = ""):
    """Top-1 against the number of steps of the last TD stage, one line per split/model (``tables``: label ->
    :meth:`~tdam.evaluation.classification.EvalResult.steps_table`)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for label, df in tables.items():
        ax.plot(df.steps, df.top1, marker="o", label=label)
    if trained_t is not None:
        ax.axvline(trained_t, color="grey", ls=":", lw=1, label=f"trained t={trained_t}")
    ax.set_xlabel("steps t of the last TD stage")
    ax.set_ylabel("top-1 (%)")
    ax.set_xticks(sorted({int(s) for df in tables.values() for s in df.steps}))
    ax.set_title(title or "accuracy against computation steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def resolution_table(accuracies: Mapping[str, Mapping[int, float]]) -> pd.DataFrame:
    """Long table (model, resolution, top1) from {model: {resolution: top-1}}."""
    rows = [{"model": m, "resolution": int(r), "top1": float(a)}
            for m, acc in accuracies.items() for r, a in acc.items()]
    return pd.DataFrame(rows).sort_values(["model", "resolution"]).reset_index(drop=True)


def legend_label(model: str, df: pd.DataFrame) -> str:
    """'model (best a @ r; lo: x, hi: y)' with the smallest and largest evaluated resolutions."""
    best = df.loc[df.top1.idxmax()]
    lo, hi = df.iloc[0], df.iloc[-1]
    return (f"{model} (best {best.top1:.2f} @ {int(best.resolution)}; {int(lo.resolution)}: {lo.top1:.2f}, "
            f"{int(hi.resolution)}: {hi.top1:.2f})")


def plot_resolution(table: pd.DataFrame, *, train_resolution: int | None = None, title: str = ""):
    """Supplement Fig. 2: top-1 against test resolution, legend with best, smallest- and largest-resolution values."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for model, df in table.groupby("model", sort=False):
        df = df.sort_values("resolution")
        ax.plot(df.resolution, df.top1, marker="o", label=legend_label(model, df))
    if train_resolution is not None:
        ax.axvline(train_resolution, color="grey", ls=":", lw=1)
    ax.set_xlabel("test resolution (px; resize res/0.875, centre crop res)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title or "test-resolution robustness")
    ax.legend(fontsize=7, loc="lower center")
    fig.tight_layout()
    return fig


def plot_scaling(tables: Mapping[str, pd.DataFrame], *, ys: Sequence[str] = ("gflops", "fps_inference")):
    """Cost against t, batch size and resolution: one column per table (``tables``: knob -> :func:`tdam.evaluation.cost.cost_scaling`
    result), one row per quantity in ``ys``; quantities measured nowhere (e.g. peak memory on a CPU) are left out."""
    ys = [y for y in ys if any(y in df and df[y].notna().any() for df in tables.values())]
    if not ys:
        raise ValueError("none of the requested quantities was measured")
    fig, axes = plt.subplots(len(ys), len(tables), figsize=(3.4 * len(tables), 2.6 * len(ys)), squeeze=False)
    for j, (knob, df) in enumerate(tables.items()):
        for i, y in enumerate(ys):
            ax = axes[i][j]
            if y in df and df[y].notna().any():
                ax.plot(df[knob], df[y], marker="o")
            else:
                ax.text(0.5, 0.5, f"{y}: n/a", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(knob)
            ax.set_ylabel(y)
    dev = next(iter(tables.values()))["device"].iloc[0] if tables else ""
    fig.suptitle(f"cost scaling ({dev})", fontsize=9)
    fig.tight_layout()
    return fig
