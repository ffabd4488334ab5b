"""Our numbers beside the paper's: the published tables, side-by-side comparison with a difference column, provenance.

The paper's numbers (supplement Tables 1-3, transcribed in ``tdam/reference/*.csv``) are targets, never
results: in every table they sit in columns prefixed ``paper_`` and the difference is ``ours - paper``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tdam import reference

__all__ = ["PAPER_TABLES", "paper_table", "paper_row", "model_key", "beside_paper", "provenance", "file_digest"]

PAPER_TABLES = {"table1": 1, "table2": 2, "table3": 3}
_KEY_COLS = ("backbone", "attention", "td_mode", "t", "m", "td_stages")


def paper_table(name: str) -> pd.DataFrame:
    """The published table ``name`` ('table1' ImageNet, 'table2' ablations, 'table3' selectivity) as a DataFrame.

    Missing cells are NaN / empty strings for the text columns (e.g. ``attention`` of a plain ResNet is '').
    """
    if name not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {name!r}; valid: {sorted(PAPER_TABLES)}")
    df = reference.paper_table(PAPER_TABLES[name])
    df = df.astype({c: "Int64" for c in ("m", "t") if c in df})
    if "td_stages" in df:
        df["td_stages"] = df["td_stages"].astype("string")
    for col in ("attention", "td_mode", "td_stages", "variant", "note", "method", "row", "set"):
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    return df


def _stages_str(stages) -> str:
    if stages is None or stages == "":
        return ""
    if isinstance(stages, str):
        return stages
    return "+".join(str(int(s)) for s in stages)


def model_key(model_config: Mapping) -> dict:
    """The paper-table key (backbone, attention, td_mode, t, m, td_stages) of a ``create_model`` config.

    Accepts a flat config (``{'arch': ..., 'attention': ..., 't': 2, ...}``) or one with an ``options`` sub-dict.
    TD stages default to the paper's layer 3 + 4.
    """
    cfg = dict(model_config)
    cfg.update(cfg.pop("options", None) or {})
    attention = cfg.get("attention") or ""
    key = {"backbone": cfg.get("arch", cfg.get("backbone")), "attention": attention,
           "td_mode": "", "t": None, "m": None, "td_stages": ""}
    if attention == "td":
        key.update(td_mode=cfg.get("td_mode", "joint"), t=int(cfg.get("t", 2)), m=int(cfg.get("m", 1)),
                   td_stages=_stages_str(cfg.get("td_stages", (3, 4))))
    return key


def paper_row(table: str = "table1", **key) -> pd.Series | None:
    """The paper's row matching ``key`` (any of backbone, attention, td_mode, t, m, td_stages, set, ...), or None.

    Keys given as None/'' match empty cells. Raises when several rows match (name more of the key).
    """
    df = paper_table(table)
    mask = pd.Series(True, index=df.index)
    for col, val in key.items():
        if col not in df:
            raise ValueError(f"{table} has no column {col!r}; columns: {list(df.columns)}")
        if val is None or val == "":
            mask &= df[col].isna() | (df[col].astype(str) == "")
        elif col == "td_stages":
            mask &= df[col] == _stages_str(val)
        else:
            mask &= df[col].astype(str) == str(val)
    hits = df[mask]
    if len(hits) > 1:
        raise ValueError(f"{len(hits)} rows of {table} match {key}: {hits.iloc[:, :7].to_dict('records')}")
    return None if hits.empty else hits.iloc[0]


def beside_paper(
    ours: pd.DataFrame,
    paper: pd.DataFrame,
    on: Sequence[str],
    columns: Mapping[str, str] | Sequence[str],
) -> pd.DataFrame:
    """Left-join ``paper`` onto ``ours`` by ``on`` and put, for each compared quantity, ``<ours col>``,
    ``paper_<paper col>`` and ``diff_<ours col>`` (= ours - paper) side by side.

    ``columns``: mapping our column -> paper column (or a list of names shared by both).
    Rows without a paper counterpart keep NaN in the paper and difference columns.
    """
    cols = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    missing = [c for c in cols if c not in ours] + [c for c in cols.values() if c not in paper]
    if missing:
        raise ValueError(f"columns not found: {missing}")
    right = paper[list(on) + list(dict.fromkeys(cols.values()))]
    right = right.rename(columns={v: f"paper_{v}" for v in cols.values()})
    left = ours.copy()
    for c in on:  # compare keys as strings so '3+4' / 2 / NaN line up across CSV and computed tables
        left[c] = left[c].map(_norm_key)
        right[c] = right[c].map(_norm_key)
    out = left.merge(right, on=list(on), how="left")
    front = [c for c in ours.columns if c not in cols]
    body = []
    for o, p in cols.items():
        out[f"diff_{o}"] = pd.to_numeric(out[o], errors="coerce") - pd.to_numeric(out[f"paper_{p}"], errors="coerce")
        body += [o, f"paper_{p}", f"diff_{o}"]
    return out[front + body]


def _norm_key(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (tuple, list)):
        return _stages_str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def file_digest(path: str | Path, n: int = 12) -> str:
    """First ``n`` hex digits of the file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def device_name(device: str | torch.device | None = None) -> str:
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def provenance(
    *, checkpoint: str | Path | None = None, data: str | Path | None = None, device: str | torch.device | None = None,
    **extra,
) -> dict:
    """Where a result comes from: checkpoint (path, SHA-256 prefix), data path, device, library versions, time."""
    import timm

    import tdam

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
