"""Result files of notebooks 02-09: tables (CSV), records (JSON) under ``runs/<notebook>/``, figures (PNG + PDF) under
``figures/`` -- all resolved through :mod:`tdam.paths`, never the working directory -- and the provenance record
written beside them (checkpoint digest, data, device, library versions, time)."""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tdam import paths
from tdam.models import trained_steps
from tdam.runs import file_digest   # re-exported: tdam.notebook.file_digest

__all__ = ["run_figure_name", "data_label", "run_dir", "write_table", "write_json", "figure_name", "save_figure", "provenance", "file_digest"]


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


EMBEDDED_DATA_TAG = "shapes"  # the data tag of the embedded tdam-shapes set
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _tag(text: str) -> str:
    """``text`` with each run of characters outside [A-Za-z0-9._-] replaced by one '_', trimmed of '._-' at both
    ends."""
    return _UNSAFE.sub("_", str(text)).strip("._-")


def _attention_tag(attention: str | None) -> str:
    return "plain" if attention in (None, "", "plain", "none") else _tag(attention)


def figure_name(base: str, *, backbone: str, attention: str | Sequence[str | None] | None, t: int | None = None,
                data: str | Path | None = None) -> str:
    """A figure's file stem tagged with the run it shows, so that runs on other models or data never overwrite it:
    ``<base>-<backbone>-<attention>[-t<t>]-<data>``, e.g. ``figure_name("08_test_resolution", backbone="resnet18",
    attention=["plain", "td"], t=2)`` -> ``"08_test_resolution-resnet18-plain+td-t2-shapes"``.

    ``attention``: one name or a list joined by '+' in the given order (None or "plain": "plain"); ``t`` None leaves
    the steps out; ``data`` None or "" is the embedded tdam-shapes set ("shapes"), a path its folder's name
    (``/data/imagenet`` -> ``imagenet``). Every part is reduced to the characters [A-Za-z0-9._-], so the name is
    safe as a file name on any file system and depends on nothing but the arguments.
    """
    attentions = [attention] if attention is None or isinstance(attention, str) else list(attention)
    parts = [_tag(base), _tag(backbone), "+".join(_attention_tag(a) for a in attentions)]
    if t is not None:
        parts.append(f"t{int(t)}")
    parts.append(_tag(Path(data).name) if data not in (None, "") else EMBEDDED_DATA_TAG)
    if not all(parts):
        raise ValueError(f"figure_name needs a non-empty base, backbone and data tag, got {parts}")
    return "-".join(parts)


def run_figure_name(base: str, models: Sequence[Mapping], *, t: int | None = None,
                    data: str | Path | None = None) -> str:
    """:func:`figure_name` of a figure showing ``models`` (their ``model_config`` mappings; the first one's
    backbone): the attentions in order and, when a TD model is among them, its steps ``t`` (given: the steps it was
    evaluated at; else its trained t, ``create_model``'s default when unset)."""
    td = [m for m in models if m.get("attention") == "td"]
    if td and t is None:
        t = trained_steps(td[0])
    return figure_name(base, backbone=models[0]["arch"], attention=[m.get("attention") for m in models],
                       t=t if td else None, data=data)


def data_label(data_dir: str | Path | None, split: str = "val") -> str:
    """The data in a figure title: ``embedded tdam-shapes val`` or the folder's name and split (``imagenet val``)."""
    return f"{'embedded tdam-shapes' if data_dir in (None, '') else Path(data_dir).name} {split}"


def save_figure(fig, name: str) -> list[Path]:
    """Save a matplotlib figure as ``figures/<name>.png`` and ``.pdf``; returns both paths. ``name`` is a plain file
    stem (see :func:`figure_name`): an empty name, a '/' or '\\' in it or a leading '.' is a ValueError."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    out = []
    for ext in ("png", "pdf"):
        p = paths.figures_dir() / f"{name}.{ext}"
        fig.savefig(p, bbox_inches="tight", dpi=150 if ext == "png" else None)
        out.append(p)
    return out


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
