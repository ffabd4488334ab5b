"""Figures of notebooks 02-09: accuracy against computation steps, cost scaling, test-resolution robustness
(supplement Fig. 2), attention shift over computation steps (Fig. 1), predicted vs ground-truth localisation boxes
(§1.2) and the H(X, Y^j) entropy histograms (Figs. 3-4).

Every figure is drawn at the size it is printed: one column of the paper (:data:`COLUMN_WIDTH_IN`) or, for the
multi-panel grids, the full text width (:data:`PAGE_WIDTH_IN`), with fonts of :data:`PRINT_STYLE`, so that it stays
legible when printed that wide (:func:`figure_legibility`). Each figure reads on its own: a title naming what is
shown and, through ``title=``, the model and the data; axis labels in words with units; a legend (or colour bar) for
every colour and marker (:func:`figure_issues` checks all of this). Every function returns a matplotlib ``Figure``;
:func:`tdam.notebook.save_figure` writes it as PNG + PDF.
"""
from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from tdam.cam import BOX_THRESHOLD, CamResult, boxes_from_maps, upsample_normalise

from .localization import LocalizationResult
from .selectivity import BlockSelectivity

__all__ = ["to_display", "attention_shift_figure", "boxes_figure", "localization_figure", "entropy_histograms",
           "plot_accuracy_vs_steps", "resolution_table", "legend_label", "plot_resolution", "plot_scaling",
           "COLUMN_WIDTH_IN", "PAGE_WIDTH_IN", "MIN_FONT_PT", "PRINT_STYLE", "print_style", "figure_title",
           "heatmap_colorbar", "figure_legibility", "figure_issues", "overlapping_texts", "AXIS_LABELS", "axis_label"]

COLUMN_WIDTH_IN = 3.3  # one column of the paper's two-column page, in inches
PAGE_WIDTH_IN = 7.0    # the full text width, for the multi-panel grids
MIN_FONT_PT = 6.0      # the smallest font that stays legible in print

# Font sizes (pt) at print size: every figure is drawn at its print width, so these are the printed sizes.
PRINT_STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6.5,
               "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "legend.title_fontsize": 7, "figure.titlesize": 8,
               "lines.markersize": 4, "lines.linewidth": 1.2, "axes.linewidth": 0.6, "figure.dpi": 150}

GT_COLOUR = "#00cc55"
PRED_COLOUR = "#ff2d2d"
OTHER_COLOUR = "#ffd400"
HEATMAP = "jet"  # Grad-CAM and attention maps, min-max normalised to [0, 1]

# Table columns and knobs as axis labels: words with units.
AXIS_LABELS = {
    "t": "computation steps t",
    "steps": "computation steps t of the last TD stage",
    "batch": "batch size",
    "img_size": "input resolution (px)",
    "resolution": "input resolution (px)",
    "gflops": "GFLOPs",
    "fps_inference": "inference throughput (images/s)",
    "fps_train": "training throughput (images/s)",
    "mem_inference_gb": "peak inference memory (GB)",
    "mem_train_gb": "peak training memory (GB)",
    "top1": "top-1 accuracy (%)",
}


def axis_label(column: str) -> str:
    """The words (with unit) for a table column or knob; unknown names lose their underscores."""
    return AXIS_LABELS.get(column, column.replace("_", " "))


def print_style(fn):
    """Draw ``fn``'s figure with the fonts of :data:`PRINT_STYLE` (the caller's rcParams are left as they were)."""
    @functools.wraps(fn)
    def styled(*args, **kwargs):
        with mpl.rc_context(PRINT_STYLE):
            return fn(*args, **kwargs)
    return styled


def figure_title(what: str, title: str = "", *, width_in: float = COLUMN_WIDTH_IN,
                 fontsize: float | None = None) -> str:
    """The figure's title text: ``what`` is shown, then the run's ``title`` (model and data) on the next line; each
    line wrapped to fit ``width_in`` inches at ``fontsize`` (default: the figure title size of :data:`PRINT_STYLE`)."""
    size = fontsize or PRINT_STYLE["figure.titlesize"]
    chars = max(20, int(width_in * 72 / (0.6 * size)))  # ~0.6 em per character in DejaVu Sans
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in (what, title) if line)


def heatmap_colorbar(fig: Figure, axes, label: str) -> Colorbar:
    """A horizontal colour bar under ``axes`` for the :data:`HEATMAP` maps on [0, 1], labelled ``label``."""
    bar = fig.colorbar(mpl.cm.ScalarMappable(Normalize(0, 1), HEATMAP), ax=axes, orientation="horizontal",
                       location="bottom", fraction=0.04, aspect=60, pad=0.01, shrink=0.6)
    bar.set_label(label)
    bar.set_ticks([0, 0.5, 1])
    return bar


def _visible_texts(fig: Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def figure_legibility(fig: Figure, width_in: float = COLUMN_WIDTH_IN) -> float:
    """The smallest font size (pt) of the figure's visible text once the saved image -- the tight bounding box that
    :func:`tdam.notebook.save_figure` writes -- is printed ``width_in`` inches wide."""
    fig.canvas.draw()
    saved = fig.get_tightbbox(fig.canvas.get_renderer()).width + 2 * mpl.rcParams["savefig.pad_inches"]
    return min(t.get_fontsize() for t in _visible_texts(fig)) * width_in / saved


_SNAKE = re.compile(r"\b[A-Za-z0-9]+_[A-Za-z0-9_]+\b")


def _marker(m) -> str:
    return "" if m in (None, "None", "", " ", "none") else str(m)


def _styles(artists) -> set[str]:
    """Colour (and marker) of each line, filled patch (face colour) and open box (edge colour)."""
    out = set()
    for a in artists:
        if isinstance(a, Line2D):
            out.add(f"{to_hex(a.get_color(), keep_alpha=False)}{_marker(a.get_marker())}")
        elif isinstance(a, Patch):
            filled = a.get_fill() and a.get_facecolor()[3] > 0
            out.add(to_hex(a.get_facecolor() if filled else a.get_edgecolor(), keep_alpha=False))
    return out


def _legend_styles(legends) -> set[str]:
    return set().union(*(_styles(leg.legend_handles) for leg in legends if leg is not None))


def figure_issues(fig: Figure, *, width_in: float = COLUMN_WIDTH_IN) -> list[str]:
    """What keeps ``fig`` from reading on its own when printed ``width_in`` inches wide (empty: nothing):

    - no title (axes title or figure suptitle);
    - a plot axes (one with data and no image) without an x or y label, or a label that is a raw snake_case name;
    - a colour or marker that no legend explains, once the figure uses more than one (for each axes: its own legend
      and the figure's legends); a colour-mapped image without a labelled colour bar;
    - text smaller than :data:`MIN_FONT_PT` at that width (:func:`figure_legibility`);
    - texts drawn over each other (:func:`overlapping_texts`).
    """
    issues = []
    axes = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    bars = [ax._colorbar for ax in fig.axes if hasattr(ax, "_colorbar")]
    titles = [ax.get_title(loc) for ax in axes for loc in ("left", "center", "right")]
    if fig._suptitle is not None:
        titles.append(fig._suptitle.get_text())
    if not any(t.strip() for t in titles):
        issues.append("no title")
    data_axes = [ax for ax in axes if ax.lines or ax.patches or ax.collections or ax.images]
    for i, ax in enumerate(data_axes):
        if ax.images:
            continue
        for which, label in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())):
            if not label.strip():
                issues.append(f"axes {i}: no {which} label")
            elif _SNAKE.search(re.sub(r"\$[^$]*\$", "", label)):
                issues.append(f"axes {i}: raw {which} label {label!r}")
    for bar in bars:
        if not (bar.ax.get_xlabel() or bar.ax.get_ylabel()).strip():
            issues.append("colour bar without a label")
    used = {ax: _styles([*ax.lines, *ax.patches]) for ax in data_axes}
    if len(set().union(*used.values())) > 1:
        for i, (ax, styles) in enumerate(used.items()):
            missing = styles - _legend_styles([ax.get_legend(), *fig.legends])
            if missing:
                issues.append(f"axes {i}: no legend entry for {sorted(missing)}")
    if any(im.get_array().ndim == 2 for ax in axes for im in ax.images) and not bars:
        issues.append("colour-mapped image without a colour bar")
    if (size := figure_legibility(fig, width_in)) < MIN_FONT_PT:
        issues.append(f"smallest text {size:.1f} pt at {width_in} in wide (< {MIN_FONT_PT} pt)")
    issues += [f"overlapping text: {a!r} and {b!r}" for a, b in overlapping_texts(fig)]
    return issues


def overlapping_texts(fig: Figure, *, tolerance_px: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of drawn texts (titles, labels, tick labels, legend entries) whose boxes overlap by more than
    ``tolerance_px`` pixels both ways, e.g. neighbouring panel titles that run into each other."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    ticks = {id(t.label1): t for ax in axes for axis in (ax.xaxis, ax.yaxis) for t in axis.majorTicks + axis.minorTicks}
    ticks.update({id(t.label2): t for t in ticks.values()})
    drawn_ticks = [label for ax in axes if ax.axison for axis in (ax.xaxis, ax.yaxis) for t in axis._update_ticks()
                   for label in (t.label1, t.label2) if label.get_visible() and label.get_text().strip()]
    texts = [t for t in _visible_texts(fig) if id(t) not in ticks and (t.axes is None or t.axes.get_visible())]
    texts += drawn_ticks     # the tick labels inside the view limits: matplotlib keeps (and does not draw) others
    boxes = [t.get_window_extent(renderer) for t in texts]
    pairs = []
    for i, (a, ta) in enumerate(zip(boxes, texts)):
        for b, tb in zip(boxes[i + 1:], texts[i + 1:]):
            if min(a.x1, b.x1) - max(a.x0, b.x0) > tolerance_px and min(a.y1, b.y1) - max(a.y0, b.y0) > tolerance_px:
                pairs.append((ta.get_text(), tb.get_text()))
    return pairs


def to_display(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the input normalisation: (N, 3, H, W) tensors -> (N, H, W, 3) float arrays in [0, 1] for imshow."""
    m = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images.detach().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _box(ax, box, colour: str, lw: float = 1.2, ls: str = "-") -> None:
    x0, y0, x1, y1 = [float(v) for v in box]
    # inclusive pixel corners: the box covers [x0 - .5, x1 + .5] in imshow's pixel-centre coordinates
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec=colour, lw=lw, ls=ls))


def _box_key(colour: str, label: str, ls: str = "-") -> Patch:
    """Legend entry for the open boxes drawn in ``colour``."""
    return Patch(fill=False, edgecolor=colour, linestyle=ls, lw=1.2, label=label)


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


_CAM_BOX = f"Grad-CAM box (> {BOX_THRESHOLD:.0%} of the map's maximum)"


@print_style
def attention_shift_figure(
    images: np.ndarray,
    results: Mapping[str, Sequence[CamResult]],
    class_names: Sequence[str],
    *,
    objects: Sequence[Sequence[tuple[str, Sequence[int], bool]]] | None = None,
    labels: Sequence[int] | None = None,
    alpha: float = 0.5,
    panel: float | None = None,
    title: str = "",
) -> Figure:
    """The supplement's Fig. 1 grid, one row per image: the image, then for each model one Grad-CAM overlay per
    computation step, titled with the model, the step, that step's prediction and its confidence (max softmax); the
    step's box (15 % rule) in red. A legend names the box colours, a colour bar the Grad-CAM scale.

    ``images`` (N, H, W, 3) in [0, 1]; ``results`` {model label: grad_cam_steps(...)} (a plain model has one step);
    ``objects`` per image: (class name, box, primary) drawn on the image (labelled object green, the other yellow);
    ``title``: the models and the data, e.g. "ResNet-18 TD (t=2, m=1) vs plain, embedded tdam-shapes val".

    Printed at the full text width (:data:`PAGE_WIDTH_IN`): ``panel`` (inches, default: that width over the number of
    columns) sizes each image.
    """
    n, h, w = images.shape[:3]
    panels = [(label, k, step) for label, steps in results.items() for k, step in enumerate(steps)]
    ncols = 1 + len(panels)
    size = panel or PAGE_WIDTH_IN / ncols
    fig, axes = plt.subplots(n, ncols, figsize=(size * ncols, n * (size * h / w + 0.3) + 1.1), squeeze=False,
                             layout="constrained")
    maps = [upsample_normalise(step.cams[:, 0], (h, w)).numpy() for _, _, step in panels]
    boxes = [boxes_from_maps(step.cams[:, 0], (h, w)).numpy() for _, _, step in panels]
    drawn = set()
    for i in range(n):
        row = axes[i]
        row[0].imshow(images[i])
        row[0].set_title("image\nlabel: " + class_names[labels[i]] if labels is not None else f"image {i}")
        for _, box, primary in (objects[i] if objects is not None else ()):
            _box(row[0], box, GT_COLOUR if primary else OTHER_COLOUR)
            drawn.add(primary)
        for j, (label, k, step) in enumerate(panels):
            ax = row[j + 1]
            ax.imshow(images[i])
            ax.imshow(maps[j][i], cmap=HEATMAP, alpha=alpha, vmin=0, vmax=1)
            _box(ax, boxes[j][i], PRED_COLOUR)
            c = int(step.prediction[i])
            ax.set_title(f"{label}\nstep {k + 1}: {class_names[c]} ({float(step.confidence[i]):.2f})")
        for ax in row:
            _off(ax)
    keys = [_box_key(GT_COLOUR, "labelled object")] if True in drawn else []
    keys += [_box_key(OTHER_COLOUR, "other object")] if False in drawn else []
    keys += [_box_key(PRED_COLOUR, _CAM_BOX)]
    fig.legend(handles=keys, loc="outside lower center", ncols=len(keys), frameon=False)
    heatmap_colorbar(fig, axes, "Grad-CAM, normalised to [0, 1]")
    fig.suptitle(figure_title("Grad-CAM attention over computation steps; panel titles: prediction (confidence)",
                              title, width_in=size * ncols))
    return fig


@print_style
def boxes_figure(
    images: np.ndarray,
    gt_boxes: Sequence[Tensor],
    pred_boxes: Tensor,
    titles: Sequence[str],
    *,
    title: str = "",
    ncols: int = 6,
    panel: float | None = None,
    what: str = "Predicted vs ground-truth boxes",
) -> Figure:
    """Predicted (red, dashed: the top-1 class's Grad-CAM box) vs ground-truth boxes (green) on the evaluated crops,
    one panel per image titled ``titles[i]`` (each line wrapped to the panel's width, at most two lines, so that
    neighbouring titles do not run into each other); a legend names the boxes. The figure title is ``what`` over
    ``title`` (the model and the data).

    Printed at the full text width (:data:`PAGE_WIDTH_IN`): ``panel`` (inches, default: that width over ``ncols``)
    sizes each image.
    """
    n = len(images)
    ncols = max(1, min(ncols, n))
    size = panel or PAGE_WIDTH_IN / ncols
    nrows = max(1, -(-n // ncols))
    chars = max(8, int(size * 72 / (0.62 * PRINT_STYLE["axes.titlesize"])))   # ~0.6 em a character
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, nrows * (size + 0.3) + 0.7), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax = axes.flat[i]
        ax.axis("on")
        ax.imshow(images[i])
        for b in torch.as_tensor(gt_boxes[i]).reshape(-1, 4):
            _box(ax, b.tolist(), GT_COLOUR)
        _box(ax, pred_boxes[i].tolist(), PRED_COLOUR, ls="--")
        ax.set_title("\n".join(textwrap.fill(line, chars, max_lines=2, placeholder="…")
                               for line in titles[i].split("\n")))
        _off(ax)
    keys = [_box_key(GT_COLOUR, "ground truth"), _box_key(PRED_COLOUR, f"predicted: {_CAM_BOX}, top-1 class", "--")]
    fig.legend(handles=keys, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(figure_title(what, title, width_in=size * ncols))
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
    truth (✓ = Top-1 Loc correct). Pass ``title=`` (the model and the data); printed at the full text width."""
    pos = torch.as_tensor(list(positions), dtype=torch.long)
    hits = result.hits["last"][pos, 0].tolist()
    titles = [f"{class_names[int(c)]}\n({float(p):.2f}), IoU {float(iou):.2f} {'✓' if h else '✗'}"
              for c, p, iou, h in zip(result.last_classes[pos], result.last_confidence[pos], result.last_iou[pos],
                                      hits)]
    kwargs.setdefault("what", "Weak localisation (last step); panel titles: predicted class (confidence), IoU with "
                              "the ground truth, ✓ Top-1 Loc correct")
    return boxes_figure(images, gt_boxes, result.last_boxes[pos], titles, **kwargs)


@print_style
def entropy_histograms(
    results: Mapping[str, Mapping[str, BlockSelectivity]],
    blocks: Sequence[str],
    *,
    bins: int = 30,
    title: str = "",
    ncols: int = 4,
) -> Figure:
    """Histograms over output channels j of H(X, Y^j) (averaged over images), one panel per block (at most
    ``ncols`` a row), one colour per model named in a shared legend (supplement Fig. 3 for layer4 blocks, Fig. 4
    for layer3 blocks). Block names are 0-based module names (``layer4.1``); panel titles give the paper's 1-based
    numbering. ``title``: the figure and the run, e.g. "Fig. 3, layer4: ResNet-18 TD vs plain, tdam-shapes val".

    Printed at the full text width (:data:`PAGE_WIDTH_IN`)."""
    ncols = max(1, min(ncols, len(blocks)))
    nrows = -(-len(blocks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH_IN, 1.9 * nrows + 0.8), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(blocks):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, blocks):
        values = {label: stats[name].channel_entropy().numpy() for label, stats in results.items()}
        lo = min(v.min() for v in values.values())
        hi = max(v.max() for v in values.values())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        for label, v in values.items():
            ax.hist(v, bins=edges, alpha=0.55, label=label)
        layer, idx = name.split(".")
        ax.set_title(f"{layer} block {int(idx) + 1}")
        ax.set_xlabel("entropy H(X, Y$^j$) (nats)")
        ax.set_ylabel("output channels")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=len(names), frameon=False)
    fig.suptitle(figure_title("Channel selectivity: entropy H(X, Y$^j$) of each output channel j, mean over images",
                              title, width_in=PAGE_WIDTH_IN))
    return fig


@print_style
def plot_accuracy_vs_steps(tables: Mapping[str, pd.DataFrame], *, trained_t: int | None = None, title: str = ""):
    """Top-1 against the number of steps of the last TD stage, one line per split/model (``tables``: label ->
    :meth:`~tdam.evaluation.classification.EvalResult.steps_table`); a dotted line marks the trained t.
    ``title``: the model and the data, e.g. "ResNet-18 TD (t=2, m=1), ImageNet val".

    Printed at one column's width (:data:`COLUMN_WIDTH_IN`)."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.6), layout="constrained")
    for label, df in tables.items():
        ax.plot(df.steps, df.top1, marker="o", label=label)
    if trained_t is not None:
        ax.axvline(trained_t, color="grey", ls=":", lw=1, label=f"trained t = {trained_t}")
    ax.set_xlabel(axis_label("steps"))
    ax.set_ylabel(axis_label("top1"))
    ax.set_xticks(sorted({int(s) for df in tables.values() for s in df.steps}))
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(figure_title("Top-1 accuracy against computation steps", title))
    return fig


def resolution_table(accuracies: Mapping[str, Mapping[int, float]], facts: Mapping[str, Any]) -> pd.DataFrame:
    """Long table (model, resolution, top1, provenance columns) from {model: {resolution: top-1}} and {model: its
    :class:`~tdam.evaluation.provenance.EvalFacts`}; each row's ``img_size`` is its resolution."""
    missing = sorted(set(accuracies) - set(facts))
    if missing:
        raise ValueError(f"no facts for models {missing}: give the EvalFacts of every model in the table")
    rows = [{"model": m, "resolution": int(r), "top1": float(a), **facts[m].replace(img_size=int(r)).columns()}
            for m, acc in accuracies.items() for r, a in acc.items()]
    return pd.DataFrame(rows).sort_values(["model", "resolution"]).reset_index(drop=True)


def legend_label(model: str, df: pd.DataFrame) -> str:
    """'model (best a @ r; lo: x, hi: y)' with the smallest and largest evaluated resolutions."""
    best = df.loc[df.top1.idxmax()]
    lo, hi = df.iloc[0], df.iloc[-1]
    return (f"{model} (best {best.top1:.2f} @ {int(best.resolution)}; {int(lo.resolution)}: {lo.top1:.2f}, "
            f"{int(hi.resolution)}: {hi.top1:.2f})")


@print_style
def plot_resolution(table: pd.DataFrame, *, train_resolution: int | None = None, title: str = ""):
    """Supplement Fig. 2: top-1 against test resolution, legend with best, smallest- and largest-resolution values;
    a dotted line marks the training resolution. ``title``: the models and the data, e.g.
    "ResNet-18 plain vs TD (t=2, m=1), ImageNet val".

    Printed at one column's width (:data:`COLUMN_WIDTH_IN`)."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 3.0), layout="constrained")
    for model, df in table.groupby("model", sort=False):
        df = df.sort_values("resolution")
        ax.plot(df.resolution, df.top1, marker="o", label=legend_label(model, df))
    if train_resolution is not None:
        ax.axvline(train_resolution, color="grey", ls=":", lw=1, label=f"training resolution ({train_resolution} px)")
    ax.set_xlabel("test resolution (px)\nresize to resolution / 0.875, centre crop")
    ax.set_ylabel(axis_label("top1"))
    fig.legend(loc="outside lower center", ncols=1, frameon=False)
    fig.suptitle(figure_title("Top-1 accuracy against test resolution", title))
    return fig


@print_style
def plot_scaling(tables: Mapping[str, pd.DataFrame], *, ys: Sequence[str] = ("gflops", "fps_inference"),
                 title: str = ""):
    """Cost against t, batch size and resolution: one column per table (``tables``: knob ->
    :func:`tdam.evaluation.cost.cost_scaling` result), one row per quantity in ``ys``; quantities measured nowhere (e.g. peak memory on a CPU) are left out,
    those a knob did not measure say so. Axis labels are :data:`AXIS_LABELS`; the figure title names the device and
    ``title`` (the model), e.g. "ResNet-18 TD (m=1), batch 4 at 64 px unless varied".

    Printed at the full text width (:data:`PAGE_WIDTH_IN`)."""
    ys = [y for y in ys if any(y in df and df[y].notna().any() for df in tables.values())]
    if not ys:
        raise ValueError("none of the requested quantities was measured")
    fig, axes = plt.subplots(len(ys), len(tables), figsize=(PAGE_WIDTH_IN, 1.7 * len(ys) + 0.5), squeeze=False,
                             layout="constrained")
    for j, (knob, df) in enumerate(tables.items()):
        for i, y in enumerate(ys):
            ax = axes[i][j]
            if y in df and df[y].notna().any():
                ax.plot(df[knob], df[y], marker="o")
                ax.set_xticks(sorted(df[knob].unique()))
            else:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
                _off(ax)
            ax.set_xlabel(axis_label(knob))
            ax.set_ylabel(axis_label(y))
    first = next(iter(tables.values()))
    on = ", ".join(str(first[c].iloc[0]) for c in ("device", "dtype") if c in first)
    fig.suptitle(figure_title(f"Cost scaling ({on})" if on else "Cost scaling", title, width_in=PAGE_WIDTH_IN))
    return fig
