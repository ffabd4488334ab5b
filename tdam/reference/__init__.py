"""The paper's published numbers (supplement Tables 1-3, transcribed in the CSV files beside this module) and our
numbers beside them.

The published numbers are targets, never results: every comparison puts them in columns prefixed ``paper_`` with a
``diff_<ours>`` column (ours - paper), matched on the paper's row keys (backbone, attention, td_mode, t, m,
td_stages for Table 1; set and row for Table 2; stage, block and metric for Table 3). They stand beside a run only
when it is in the paper's setting (:func:`paper_setting`: the same model evaluated at the paper row's t, the whole
validation split of real ImageNet with the paper's classes, 224 px); a ``comparison`` column says 'paper setting' or
why not. Every row of our tables also carries the facts it was computed from (run, epochs, train_on, t evaluated,
images, data, image size: :mod:`tdam.evaluation.provenance`). README.md beside this module lists the known
inconsistencies in the published numbers. :mod:`.paper` reads the tables, :mod:`.setting` holds the rule.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .paper import KEY_COLUMNS, PAPER_TABLES, TABLES, flat_config, model_key, norm_key, paper_table, stages_str
from .setting import (IMAGENET_CLASSES, PAPER_IMG_SIZE, PAPER_SETTING, SPLIT_NAMES, VAL_IMAGES_PER_CLASS, Setting,
                      full_split_images, model_name, off_paper_options, paper_setting, table3_columns)

__all__ = [
    "TABLES", "PAPER_TABLES", "KEY_COLUMNS", "PAPER_RESOLUTIONS", "paper_table", "model_key", "beside_paper",
    "paper_resolutions", "row_name", "table1_specs", "table1_cost", "accuracy_table", "ablation_table",
    "paper_table3_column", "table3_beside_paper", "Setting", "paper_setting", "PAPER_SETTING", "PAPER_IMG_SIZE",
    "IMAGENET_CLASSES", "VAL_IMAGES_PER_CLASS", "SPLIT_NAMES", "full_split_images", "model_name", "off_paper_options",
    "table3_columns", "PROVENANCE_COLUMNS",
]

PAPER_RESOLUTIONS = (112, 140, 168, 196, 224, 280, 336, 392, 448)


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
        left[c] = left[c].map(norm_key)
        right[c] = right[c].map(norm_key)
    out = left.merge(right, on=list(on), how="left")
    front = [c for c in ours.columns if c not in cols]
    body = []
    for o, p in cols.items():
        out[f"diff_{o}"] = pd.to_numeric(out[o], errors="coerce") - pd.to_numeric(out[f"paper_{p}"], errors="coerce")
        body += [o, f"paper_{p}", f"diff_{o}"]
    return out[front + body]


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


def table1_cost(sizes: pd.DataFrame, speeds: pd.DataFrame | None = None, *, flops_img_size: int = 224) -> pd.DataFrame:
    """Table 1 cost columns: our sizes (and speeds, where measured) beside the paper's where the setting is the
    paper's. Parameter counts do not depend on the setting, so ``paper_params_M``/``diff_params_M`` are always there;
    FLOPs only when counted at the paper's 224 px (``flops_img_size``). Memory and FPS are never put beside the
    paper's: those are V100 numbers at the paper's batch, ours are measured on the present device at the requested
    batch and size; they are in ``tdam/reference/paper_table1_imagenet.csv`` for whoever runs that setting."""
    keys = KEY_COLUMNS
    ours = sizes.copy()
    if speeds is not None and len(speeds):
        ours = ours.merge(speeds.drop(columns=["method"]), on=keys, how="left")
    cols = ["params_M", *(["gflops"] if flops_img_size == PAPER_IMG_SIZE else [])]
    return beside_paper(ours, paper_table("table1"), on=keys, columns=cols)


def _paper_beside(ours: pd.DataFrame, row: Mapping, columns: Sequence[str]) -> pd.DataFrame:
    """``ours`` with, after each compared column ``c``, ``paper_c`` (the paper ``row``'s value) and ``diff_c``
    (ours - paper); the other columns first, in their order."""
    out = ours[[c for c in ours.columns if c not in columns]].copy()
    for c in columns:
        out[c] = ours[c]
        out[f"paper_{c}"] = float(row[c])
        out[f"diff_{c}"] = pd.to_numeric(ours[c], errors="coerce") - float(row[c])
    return out


#: The provenance columns every results table carries, in this order (:meth:`EvalFacts.columns
#: <tdam.evaluation.provenance.EvalFacts.columns>` writes them): the run, how long it trained and on which step,
#: and what was evaluated (steps t, data, image size, class count; the images evaluated are ``<split>_images``).
PROVENANCE_COLUMNS = ("run", "epochs", "train_on", "profile", "t_eval", "data", "data_tag", "img_size", "num_classes")


def accuracy_table(results: Mapping, facts: Any) -> pd.DataFrame:
    """Table 1 accuracy columns for one model: one row per metric (last / most-confident / paper (unique-box)),
    columns ``{split}_top1``/``_top5`` for each split in ``results`` ('v1', 'v2': :class:`EvalResult`), the
    provenance columns of ``facts`` (:data:`PROVENANCE_COLUMNS` and ``{split}_images``) and ``comparison``.

    ``facts``: :class:`tdam.evaluation.provenance.EvalFacts` of the evaluation (that module imports this one, so the
    type is not named here); its images must be those of
    ``results`` (checked). The paper's values of the model's Table 1 row (``paper_*``) and the differences
    (``diff_*`` = ours - paper) appear only when the run is in the paper's setting (:func:`paper_setting` of the
    facts: that row's model evaluated at the row's t on the whole V1 (and V2) split of real ImageNet, 1000 classes,
    224 px); then ``comparison`` reads 'paper setting'. Otherwise there are no paper columns at all and
    ``comparison`` says why. The paper reports ONE number per column; it is repeated beside each of our metrics.
    """
    if not results:
        raise ValueError("no results: expected {'v1': EvalResult, 'v2': EvalResult} (either may be omitted)")
    valid = set(VAL_IMAGES_PER_CLASS)
    if set(results) - valid:
        raise ValueError(f"result splits must be in {sorted(valid)}, got {sorted(results)}")
    evaluated = {s: r.num_images for s, r in results.items()}
    if dict(facts.images) != evaluated:
        raise ValueError(f"the facts record images {dict(facts.images)} but the results hold {evaluated}: build the "
                         "facts from these results (tdam.evaluation.provenance.eval_facts(images=...))")
    frames = []
    for split, res in results.items():
        s = res.summary().set_index("key")
        frames.append(s[[f"top{k}" for k in (1, 5) if k in res.topk]].add_prefix(f"{split}_"))
    ours = pd.concat(frames, axis=1)
    ours.insert(0, "metric", [res.summary().set_index("key").loc[k, "metric"] for k in ours.index])
    ours = ours.reset_index(drop=True)
    setting = facts.paper_setting("table1")
    if setting.matches:
        ours = _paper_beside(ours, setting.row, [c for c in ours.columns if c.endswith(("_top1", "_top5"))])
    for name, value in facts.columns().items():
        ours[name] = value
    ours["comparison"] = setting.reason
    return ours


_ABLATION_SETTING = ("backbone", "data", "img_size", "t_eval", "v1_images")  # what ablation_table needs of each row


def ablation_table(rows: Sequence[dict]) -> pd.DataFrame:
    """Our rows beside the paper's Table 2 (``paper_*`` and ``diff_*`` = ours - paper), keyed by (set, row).

    Each row holds, besides its numbers, its ``backbone`` and the provenance columns of its evaluation (as
    :func:`tdam.evaluation.ablations.ablation_row` writes them: ``run``, ``epochs``, ``train_on``, ``t_eval``,
    ``v1_images``, ``data`` ('imagenet': a real folder, or 'embedded'), ``img_size``, ``num_classes``; None where the
    row was not evaluated). The paper's sizes (params, FLOPs, counted at the paper's class count and 224 px) and their
    differences appear where the row is a paper row on the paper row's backbone; its accuracies only where the whole
    setting is the paper's (:func:`paper_setting`: the row's t evaluated, the whole validation split, the paper's
    class count, real ImageNet, 224 px; a row without ``num_classes`` cannot confirm its class count). Elsewhere
    they are empty, and ``comparison`` says why ('paper setting' where everything is compared). Rows trained for
    different numbers of ``epochs`` stand side by side: read that column before comparing two rows.
    """
    missing = sorted({k for r in rows for k in _ABLATION_SETTING if k not in r})
    if missing:
        raise ValueError(f"Table 2 rows need {list(_ABLATION_SETTING)} to judge their setting; missing {missing} "
                         "(tdam.evaluation.ablations.ablation_row records them)")
    ours = pd.DataFrame(list(rows))
    for c in ("v1_top1", "v1_top5", "epochs"):
        if c not in ours:
            ours[c] = float("nan")
    out = beside_paper(ours, paper_table("table2"), on=["set", "row"],
                       columns=["params_M", "gflops", "v1_top1", "v1_top5"])
    notes = []
    for i, row in enumerate(rows):
        setting = paper_setting({"arch": row["backbone"]}, num_classes=row.get("num_classes"),
                                img_size=row["img_size"], imagenet=row["data"] == "imagenet", t=row["t_eval"],
                                images={"v1": row["v1_images"]}, table="table2", ablation=(row["set"], row["row"]))
        for compared, cols in ((setting.model_row is not None, ("params_M", "gflops")),
                               (setting.matches, ("v1_top1", "v1_top5"))):
            if not compared:
                out.loc[i, [f"paper_{c}" for c in cols] + [f"diff_{c}" for c in cols]] = float("nan")
        notes.append(setting.reason)
    out["comparison"] = notes
    return out


def paper_table3_column(model_config: Mapping) -> str | None:
    """The column of the paper's Table 3 holding the same model, whatever the data: ResNet-50 plain ->
    ``original``, TD joint t=2 m=1 -> ``tdjoint_t2_m1``, TD top t=2 m=3 -> ``tdtop_t2_m3``; any other model
    (another backbone included) -> None. Whether its numbers may stand beside ours also depends on the data:
    :func:`paper_setting` with ``table='table3'``."""
    row = paper_setting(model_config, num_classes=IMAGENET_CLASSES, img_size=PAPER_IMG_SIZE, imagenet=True, t=None,
                        images={"v1": None}, table="table3").model_row
    return None if row is None else row["column"]


def table3_beside_paper(ours: pd.DataFrame, facts: Mapping[str, Any]) -> pd.DataFrame:
    """Our Table 3 (:func:`tdam.evaluation.selectivity.selectivity_table`) beside the paper's.

    ``facts``: {model label (a column of ``ours``): the :class:`tdam.evaluation.provenance.EvalFacts` of its
    evaluation}; each model's :func:`paper_setting` for ``table='table3'`` is decided from them (the ResNet-50 model
    of a Table 3 column, at that column's t, on the whole ImageNet-V1 val split, 1000 classes, 224 px). For each
    model in the paper's setting: ``<label>``, ``paper_<column>`` and ``diff_<label>`` (ours - paper); the paper
    reports layer4 blocks 2-3 only, so other rows keep NaN there. A model not in the paper's setting gets no paper
    column. The provenance columns (:data:`PROVENANCE_COLUMNS`, ``<split>_images``) and ``comparison`` describe the
    models of the table's columns: a value the models share is written once, else '<label>: <value>' joined by
    '; ' (the same on every row); ``comparison`` gives each model's reason that way.
    """
    unknown = [label for label in facts if label not in ours.columns]
    if unknown:
        raise ValueError(f"models {unknown} are not in the table; its models: {list(ours.columns[3:])}")
    wrong = [label for label, f in facts.items() if not callable(getattr(f, "paper_setting", None))]
    if wrong:
        raise ValueError(f"models {wrong}: expected the EvalFacts of each model (tdam.evaluation.provenance)")
    settings = {label: f.paper_setting("table3") for label, f in facts.items()}
    paper = paper_table("table3").rename(columns={"layer4_block": "block"})
    paper.insert(0, "stage", 4)
    cols = {label: s.row["column"] for label, s in settings.items() if s.matches}
    out = beside_paper(ours, paper, on=["stage", "block", "metric"], columns=cols) if cols else ours.copy()
    columns = {label: f.columns() for label, f in facts.items()}
    for name in dict.fromkeys(n for c in columns.values() for n in c):
        values = {label: c.get(name) for label, c in columns.items()}
        shared = len({repr(v) for v in values.values()}) == 1
        out[name] = next(iter(values.values())) if shared else "; ".join(f"{k}: {v}" for k, v in values.items())
    out["comparison"] = "; ".join(f"{label}: {s.reason}" for label, s in settings.items())
    return out.astype({"stage": int, "block": int})
