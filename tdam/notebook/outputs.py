"""Result files of notebooks 02-09: tables (CSV), records (JSON) under ``runs/<notebook>/``, figures (PNG + PDF) under
``figures/`` -- all resolved through :mod:`tdam.paths`, never the working directory -- and the provenance record
written beside them (checkpoint digest, data, device, library versions, time)."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tdam import paths

__all__ = ["run_dir", "write_table", "write_json", "save_figure", "provenance", "file_digest"]


def run_dir(notebook: str) -> Path:
    """``runs/<notebook>/`` (created)."""
    if not notebook or "/" in notebook or notebook.startswith("."):
        raise ValueError(f"notebook run name must be a plain folder name, got {notebook!r}")
    d = paths.runs_dir() / notebook
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_table(df: pd.DataFrame, notebook: str, name: str) -> Path:
    """Write ``df`` to ``runs/<notebook>/<name>.csv``; returns the path."""
    path = run_dir(notebook) / f"{name}.csv"
    df.to_csv(path, index=False)
    return path


def _plain(o):
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, (Path, torch.device, torch.dtype)):
        return str(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        return None if math.isnan(float(o)) else float(o)
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    if isinstance(o, pd.DataFrame):
        return _plain(o.to_dict("records"))
    return o


def write_json(obj, notebook: str, name: str) -> Path:
    """Write ``obj`` (dicts, lists, numbers, DataFrames) to ``runs/<notebook>/<name>.json``; NaN becomes null."""
    path = run_dir(notebook) / f"{name}.json"
    path.write_text(json.dumps(_plain(obj), indent=2))
    return path


def save_figure(fig, name: str) -> list[Path]:
    """Save a matplotlib figure as ``figures/<name>.png`` and ``.pdf``; returns both paths."""
    out = []
    for ext in ("png", "pdf"):
        p = paths.figures_dir() / f"{name}.{ext}"
        fig.savefig(p, bbox_inches="tight", dpi=150 if ext == "png" else None)
        out.append(p)
    return out


def file_digest(path: str | Path, n: int = 12) -> str:
    """First ``n`` hex digits of the file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def provenance(*, checkpoint: str | Path | None = None, data: str | Path | None = None,
               device: str | torch.device | None = None, **extra) -> dict:
    """Where a result comes from: checkpoint (path, SHA-256 prefix), data path, device, library versions, time."""
    import timm

    import tdam
    from tdam.evaluation.cost import device_name

    info = {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": file_digest(checkpoint) if checkpoint and Path(checkpoint).is_file() else None,
        "data": str(data) if data else None,
        "device": device_name(device),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "tdam": getattr(tdam, "__version__", "unknown"),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    info.update({k: (str(v) if isinstance(v, Path) else v) for k, v in extra.items()})
    return info
