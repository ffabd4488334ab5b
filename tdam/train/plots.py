"""Training curves (loss, top-1/top-5 per epoch) from a run's ``metrics.jsonl``, saved as PNG + PDF under figures/."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from tdam.paths import figures_dir

__all__ = ["read_metrics", "plot_curves"]


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows a run wrote to ``<run_dir>/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics at {path}: is {run_dir} a tdam.train run folder?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(history: Sequence[dict[str, Any]] | str | Path, *, title: str = "", chance: float | None = None,
                save_as: str | None = None, folder: str | Path | None = None):
    """Two panels: train/val loss and val top-1/top-5 (EMA too when present) against the epoch; ``chance`` (%)
    draws the uniform-guess line. ``save_as``: file stem written as ``<folder>/<stem>.png`` and ``.pdf``
    (``folder`` defaults to the repository's ``figures/``). Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    rows = read_metrics(history) if isinstance(history, (str, Path)) else list(history)
    if not rows:
        raise ValueError("no metrics to plot: the run has not finished an epoch yet")
    epochs = [r["epoch"] for r in rows]

    def series(key: str) -> list[float] | None:
        vals = [r.get(key) for r in rows]
        return None if all(v is None for v in vals) else [float("nan") if v is None else v for v in vals]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
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
    if title:
        fig.suptitle(title)
    if save_as:
        out = Path(folder) if folder is not None else figures_dir()
        for ext in ("png", "pdf"):
            fig.savefig(out / f"{save_as}.{ext}", dpi=150)
    return fig
