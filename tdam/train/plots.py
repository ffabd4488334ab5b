"""Training curves (loss, top-1/top-5 per epoch) from a run's ``metrics.jsonl``, saved as PNG + PDF under figures/;
the learning rate of every update of a config (:func:`plot_lr_schedule`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from tdam.paths import figures_dir

__all__ = ["read_metrics", "plot_curves", "plot_lr_schedule"]


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows a run wrote to ``<run_dir>/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics at {path}: is {run_dir} a tdam.train run folder?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(history: Sequence[dict[str, Any]] | str | Path, *, title: str = "", chance: float | None = None,
                save_as: str | None = None, folder: str | Path | None = None):
    """Two panels: train/val loss and val top-1/top-5 (EMA too when present) against the epoch (integer ticks);
    ``chance`` (%) draws the uniform-guess line. ``title``: the model and the data, e.g. "ResNet-18 TD (t=2, m=1),
    embedded tdam-shapes"; it follows the figure's heading. ``save_as``: file stem written as ``<folder>/<stem>.png``
    and ``.pdf`` (``folder`` defaults to the repository's ``figures/``). Returns the matplotlib Figure.

    Printed at the full text width (:data:`tdam.evaluation.figures.PAGE_WIDTH_IN`)."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from tdam.evaluation.figures import PAGE_WIDTH_IN, PRINT_STYLE, figure_title

    rows = read_metrics(history) if isinstance(history, (str, Path)) else list(history)
    if not rows:
        raise ValueError("no metrics to plot: the run has not finished an epoch yet")
    if save_as is not None and (not save_as or "/" in save_as or "\\" in save_as):
        raise ValueError(f"save_as must be a plain file stem, got {save_as!r}")
    epochs = [r["epoch"] for r in rows]

    def series(key: str) -> list[float] | None:
        vals = [r.get(key) for r in rows]
        return None if all(v is None for v in vals) else [float("nan") if v is None else v for v in vals]

    with mpl.rc_context(PRINT_STYLE):
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 2.7), layout="constrained")
        for key, label in (("train_loss", "train (smoothed/mixed targets)"), ("val_loss", "val")):
            if (ys := series(key)) is not None:
                ax_loss.plot(epochs, ys, marker="o", ms=3, label=label)
        ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
        ax_loss.legend()
        for key, label in (("val_top1", "val top-1"), ("val_top5", "val top-5"), ("ema_val_top1", "EMA val top-1")):
            if (ys := series(key)) is not None:
                ax_acc.plot(epochs, ys, marker="o", ms=3, label=label)
        if chance is not None:
            ax_acc.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.1f}%)")
        ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy", ylim=(0, 100))
        ax_acc.legend()
        for ax in (ax_loss, ax_acc):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(figure_title("Training curves", title, width_in=PAGE_WIDTH_IN))
    if save_as:
        out = Path(folder) if folder is not None else figures_dir()
        for ext in ("png", "pdf"):
            fig.savefig(out / f"{save_as}.{ext}", bbox_inches="tight", dpi=150)
    return fig


def plot_lr_schedule(lrs: Sequence[float], updates_per_epoch: int, *, title: str = ""):
    """The learning rate of every update (``lrs``: :func:`tdam.train.lr_schedule`, or
    :func:`tdam.train.recipe.run_schedule` for a config as the trainer will run it) against the epoch, on a log
    scale when every value is positive (warm-up start, cosine and cool-down all visible). Returns the Figure."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    from tdam.evaluation.figures import PAGE_WIDTH_IN, PRINT_STYLE

    if not lrs or updates_per_epoch < 1:
        raise ValueError(f"nothing to plot: {len(lrs)} learning rates, {updates_per_epoch} updates per epoch")
    with mpl.rc_context(PRINT_STYLE):
        fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, PAGE_WIDTH_IN * 0.35), layout="constrained")
        ax.plot([i / updates_per_epoch for i in range(len(lrs))], lrs, lw=1.2)
        ax.set(xlabel="epoch", ylabel="learning rate", yscale="log" if min(lrs) > 0 else "linear",
               title=f"learning rate per update{': ' + title if title else ''} ({updates_per_epoch} updates/epoch)")
        ax.grid(alpha=0.3)
    return fig
