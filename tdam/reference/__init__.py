"""The paper's published numbers (supplement Tables 1-3, transcribed in the CSV files beside this module) and our
numbers beside them.

The published numbers are targets, never results: every comparison puts them in columns prefixed ``paper_`` with a
``diff_<ours>`` column (ours - paper), matched on the paper's row keys (backbone, attention, td_mode, t, m,
td_stages for Table 1; set and row for Table 2; stage, block and metric for Table 3). README.md beside this module
lists the known inconsistencies in the published numbers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "TABLES", "PAPER_TABLES", "KEY_COLUMNS", "PAPER_RESOLUTIONS", "paper_table", "model_key", "beside_paper",
    "paper_resolutions", "row_name", "table1_specs", "table1_cost", "accuracy_table", "ablation_table",
    "paper_table3_column", "table3_beside_paper",
]

_DIR = Path(__file__).resolve().parent
TABLES = {1: "paper_table1_imagenet.csv", 2: "paper_table2_ablations.csv", 3: "paper_table3_selectivity.csv"}
PAPER_TABLES = {"table1": 1, "table2": 2, "table3": 3}
KEY_COLUMNS = ["backbone", "attention", "td_mode", "t", "m", "td_stages"]
PAPER_RESOLUTIONS = (112, 140, 168, 196, 224, 280, 336, 392, 448)


def paper_table(table: int | str) -> pd.DataFrame:
    """Supplement Table 1 (ImageNet), 2 (ablations) or 3 (selectivity) as a DataFrame.

    ``table`` 1/2/3: the CSV as transcribed (empty cells NaN). ``'table1'``/``'table2'``/``'table3'``: keyed for
    comparisons: ``t``/``m`` nullable integers, ``td_stages`` and the text columns strings ('' where empty, e.g. the
    ``attention`` of a plain ResNet).
    """
    if table in TABLES:
        return pd.read_csv(_DIR / TABLES[table])
    if table not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {table!r}; valid: {sorted(PAPER_TABLES)} or {sorted(TABLES)}")
    df = pd.read_csv(_DIR / TABLES[PAPER_TABLES[table]])
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


def paper_resolutions(train_img_size: int) -> list[int]:
    """The test resolutions of supplement Fig. 2 (112 ... 448 for a model trained at 224), scaled by
    ``train_img_size / 224``."""
    return [int(round(r * train_img_size / 224)) for r in PAPER_RESOLUTIONS]


def row_name(name: str) -> str:
    """A paper row/method name as notebook parameters write it: without '=' ("TDjoint(t2;m1)" for
    "TDjoint(t=2;m=1)"), because papermill cannot parse a parameter line holding '=' inside a string."""
    return str(name).replace("=", "")


def table1_specs(backbones: Sequence[str] | None = None, methods: Sequence[str] = ()) -> list[dict]:
    """``{'method', 'create'}`` of every model row in the paper's Table 1 (optionally only some backbones, and only
    the rows named in ``methods``, compared by :func:`row_name`): ``create`` holds the ``create_model`` kwargs."""
    df = paper_table("table1")
    if backbones is not None:
        unknown = set(backbones) - set(df.backbone)
        if unknown:
            raise ValueError(f"unknown backbones {sorted(unknown)}; Table 1 has {sorted(set(df.backbone))}")
        df = df[df.backbone.isin(backbones)]
    specs = []
    for r in df.itertuples():
        kw: dict = {"arch": r.backbone, "attention": r.attention or None}
        if r.attention == "td":
            kw.update(t=int(r.t), m=int(r.m), td_mode=r.td_mode,
                      td_stages=tuple(int(s) for s in r.td_stages.split("+")))
        specs.append({"method": r.method, "create": kw})
    wanted = {row_name(m) for m in methods}
    return [s for s in specs if not wanted or row_name(s["method"]) in wanted]


def table1_cost(sizes: pd.DataFrame, speeds: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 1 cost columns: our sizes (and speeds, where measured) beside the paper's params, FLOPs, memory and
    FPS (``paper_*``, ``diff_*`` = ours - paper). The paper's memory/FPS are V100 numbers at its own batch: compare
    trends, not values, when the device differs."""
    keys = KEY_COLUMNS
    ours = sizes.copy()
    cols = ["params_M", "gflops"]
    if speeds is not None and len(speeds):
        ours = ours.merge(speeds.drop(columns=["method"]), on=keys, how="left")
        cols += ["mem_train_gb", "mem_val_gb", "fps_train", "fps_val"]
    return beside_paper(ours, paper_table("table1"), on=keys, columns=cols)


def accuracy_table(results: Mapping, model_config: Mapping) -> pd.DataFrame:
    """Table 1 accuracy columns for one model: one row per metric (last / most-confident / paper (unique-box)),
    columns ``{split}_top1``/``_top5`` for each split in ``results`` ('v1', 'v2': :class:`EvalResult`), the paper's
    values of the model's Table 1 row (``paper_*``) and the differences. The paper reports ONE number per column; it
    is repeated beside each of our metrics."""
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
    out = beside_paper(ours, paper_table("table1"), on=KEY_COLUMNS, columns=cols)
    return out.drop(columns=KEY_COLUMNS)


def _ablation_comparison(row: Mapping, paper_backbone: str | None) -> tuple[str | None, str | None]:
    """Why our Table 2 row's (sizes, accuracies) cannot be compared with the paper's, or None where they can: sizes
    need the paper row's backbone; accuracies also ImageNet at 224 px (``data``/``img_size``, as
    :func:`tdam.evaluation.ablations.ablation_row` records them)."""
    if paper_backbone is None:
        return "not a paper row", "not a paper row"
    size = None
    if row.get("backbone", paper_backbone) != paper_backbone:
        size = f"{row['backbone']}, the paper's row is {paper_backbone}"
    accuracy = size
    if accuracy is None and row.get("data", "imagenet") != "imagenet":
        accuracy = "embedded tdam-shapes data, not ImageNet"
    if accuracy is None and row.get("img_size", 224) != 224:
        accuracy = f"{row['img_size']} px, the paper's 224 px"
    return size, accuracy


def ablation_table(rows: Sequence[dict]) -> pd.DataFrame:
    """Our rows beside the paper's Table 2 (``paper_*`` and ``diff_*`` = ours - paper), keyed by (set, row). A paper
    number and its difference appear only where our row's setting is the paper's (:func:`_ablation_comparison`);
    elsewhere they are empty and ``comparison`` says why ("paper setting" where they are shown)."""
    ours = pd.DataFrame(list(rows))
    for c in ("v1_top1", "v1_top5"):
        if c not in ours:
            ours[c] = float("nan")
    out = beside_paper(ours, paper_table("table2"), on=["set", "row"],
                       columns=["params_M", "gflops", "v1_top1", "v1_top5"])
    paper = paper_table("table2")
    backbone = {(_norm_key(s), _norm_key(r)): b for s, r, b in zip(paper.set, paper.row, paper.backbone)}
    notes = []
    for i, row in enumerate(rows):
        size, accuracy = _ablation_comparison(row, backbone.get((_norm_key(row["set"]), _norm_key(row["row"]))))
        for reason, cols in ((size, ("params_M", "gflops")), (accuracy, ("v1_top1", "v1_top5"))):
            if reason is not None:
                out.loc[i, [f"paper_{c}" for c in cols] + [f"diff_{c}" for c in cols]] = float("nan")
        notes.append("paper setting" if size is None and accuracy is None else
                     "; ".join(dict.fromkeys(r for r in (size, accuracy) if r)))
    out["comparison"] = notes
    return out


def paper_table3_column(model_config: Mapping) -> str | None:
    """The column of the paper's Table 3 describing the same kind of model (the paper's are ResNet-50 ones).

    Plain model -> ``original``; TD joint t=2 m=1 -> ``tdjoint_t2_m1``; TD top t=2 m=3 -> ``tdtop_t2_m3``; others None.
    """
    key = model_key(model_config)
    if not key["attention"]:
        return "original"
    if key["attention"] == "td":
        col = f"td{key['td_mode']}_t{key['t']}_m{key['m']}"
        return col if col in paper_table("table3").columns else None
    return None


def table3_beside_paper(ours: pd.DataFrame, paper_columns: Mapping[str, str | None]) -> pd.DataFrame:
    """Our Table 3 (:func:`tdam.evaluation.selectivity.selectivity_table`) beside the paper's: for each model label
    with a paper counterpart, ``<label>``, ``paper_<column>`` and ``diff_<label>`` (ours - paper). The paper reports
    layer4 blocks 2-3 only; other rows keep NaN there. ``paper_columns``: {model label: paper column or None}."""
    paper = paper_table("table3").rename(columns={"layer4_block": "block"})
    paper.insert(0, "stage", 4)
    cols = {label: col for label, col in paper_columns.items() if col is not None}
    unknown = [label for label in cols if label not in ours.columns]
    if unknown:
        raise ValueError(f"models {unknown} are not in the table; its models: {list(ours.columns[3:])}")
    out = beside_paper(ours, paper, on=["stage", "block", "metric"], columns=cols)
    return out.astype({"stage": int, "block": int})
