"""Tables and figures of the evaluation notebooks (02, 03, 04, 08), built from evaluation results.

Paper numbers always sit in ``paper_*`` columns beside ours with a ``diff_*`` column (ours - paper).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from .classification import EvalResult
from .tables import beside_paper, model_key, paper_table

__all__ = ["accuracy_table", "plot_accuracy_vs_steps", "resolution_table", "plot_resolution", "plot_scaling"]

_KEYS = ["backbone", "attention", "td_mode", "t", "m", "td_stages"]


def accuracy_table(results: Mapping[str, EvalResult], model_config: Mapping) -> pd.DataFrame:
    """Table 1 accuracy columns for one model: one row per metric (last / most-confident / paper (unique-box)),
    columns ``{split}_top1``/``_top5`` for each split in ``results`` ('v1', 'v2'), the paper's values of the
    model's Table 1 row (``paper_*``) and the differences. The paper reports ONE number per column; it is repeated
    beside each of our metrics."""
    if not results:
        raise ValueError("no results: expected {'v1': EvalResult, 'v2': EvalResult} (either may be omitted)")
    valid = {"v1", "v2"}
    if set(results) - valid:
        raise ValueError(f"result splits must be in {sorted(valid)}, got {sorted(results)}")
    key = model_key(model_config)
    frames = []
    for split, res in results.items():
        s = res.summary().set_index("key")
        frames.append(s[[f"top{k}" for k in (1, 5) if k in res.topk]].add_prefix(f"{split}_"))
        frames.append(s[["images"]].rename(columns={"images": f"{split}_images"}))
    ours = pd.concat(frames, axis=1)
    ours.insert(0, "metric", [res.summary().set_index("key").loc[k, "metric"] for k in ours.index])
    ours = ours.reset_index(drop=True)
    for c, v in key.items():
        ours[c] = v
    cols = [c for c in ours.columns if c.endswith(("_top1", "_top5"))]
    out = beside_paper(ours, paper_table("table1"), on=_KEYS, columns=cols)
    return out.drop(columns=_KEYS)


def plot_accuracy_vs_steps(tables: Mapping[str, pd.DataFrame], *, trained_t: int | None = None, title: str = ""):
    """Top-1 against the number of steps of the last TD stage, one line per split/model (``tables``: label ->
    :meth:`EvalResult.steps_table`)."""
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
    """Cost against t, batch size and resolution: one column per table (``tables``: knob -> :func:`cost_scaling`
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
