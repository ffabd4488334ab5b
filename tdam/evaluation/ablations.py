"""Supplement Table 2 (ablations): which params file reproduces which row, and one row's measured size and accuracy.

``params/ablations/_table2.yaml`` lists the rows (set, row, params file) and, under ``extras:``, variants that are not
paper rows (e.g. TDj(m=1) trained with ``train_on: most_confident``, the supplement's stated rule, where the paper's
rows follow the public code's last step): they carry ``paper_row: False``, a name no paper row has (so the table puts
no paper numbers or differences beside them) and sit in the set of the row they vary. Each row's model is trained
by the same engine as notebook 01 (through :mod:`tdam.notebook`, the one caller of the trainer), evaluated on the
validation split (``last`` top-1/top-5; Table 2 reports one number per row), and its params/FLOPs are counted at 224²
with the paper's class count (200 for the ``steps_200cls`` set, else 1000).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import yaml

from tdam import paths

__all__ = ["TABLE2_SETS", "table2_entries", "ablation_row"]

TABLE2_SETS = ("mode_and_distance", "layers", "steps_200cls", "feedback_technique")
_PAPER_CLASSES = {"steps_200cls": 200}


def _index_path() -> Path:
    return paths.params_dir() / "ablations" / "_table2.yaml"


def table2_entries(sets: Sequence[str] | None = None, rows: Sequence[str] = (), *, extras: bool = False) -> list[dict]:
    """Rows of Table 2 with their params files: [{'set', 'row', 'params' (Path), 'paper_row'}], in the paper's order,
    then (``extras=True``) the index's non-paper rows; only those of ``sets`` and, when given, those named in ``rows``
    (compared without '=', as notebook parameters write them)."""
    from tdam.reference import row_name

    idx = _index_path()
    if not idx.is_file():
        raise FileNotFoundError(f"ablation index missing: {idx} (expected 'rows: [{{set, row, params}}]')")
    index = yaml.safe_load(idx.read_text()) or {}
    listed = [{**r, "paper_row": True} for r in index.get("rows") or []]
    extra = [{**r, "paper_row": False} for r in index.get("extras") or []]
    clash = {row_name(r["row"]) for r in listed} & {row_name(r["row"]) for r in extra}
    if clash:
        raise ValueError(f"{idx}: extras {sorted(clash)} reuse paper row names; give them their own names")
    for s in sets or ():
        if s not in TABLE2_SETS:
            raise ValueError(f"unknown Table 2 set {s!r}; valid: {list(TABLE2_SETS)}")
    wanted = {row_name(r) for r in rows}
    out = []
    for r in listed + (extra if extras else []):
        if (sets and r["set"] not in sets) or (wanted and row_name(r["row"]) not in wanted):
            continue
        p = idx.parent / r["params"]
        if not p.is_file():
            raise FileNotFoundError(f"{idx}: params file of {r['set']}/{r['row']} missing: {p}")
        out.append({"set": r["set"], "row": str(r["row"]), "params": p, "paper_row": r["paper_row"]})
    return out


def ablation_row(entry: Mapping, model: Mapping, checkpoint: str | Path | None, data: Mapping, *,
                 device: torch.device, batch_size: int = 50, workers: int = 0, max_images: int | None = None) -> dict:
    """Size and accuracy of one Table 2 row: {set, row, paper_row, backbone, params, params_M, gflops, v1_top1,
    v1_top5, the provenance columns of its evaluation (:meth:`~tdam.evaluation.provenance.EvalFacts.columns`: run,
    epochs, train_on, profile, t_eval, data ('imagenet' or 'embedded'), data_tag, img_size, num_classes,
    v1_images), checkpoint, status}. ``model``: the row's ``create_model`` kwargs (with ``arch``); ``data``: the run's
    :func:`tdam.evaluation.data.run_data_settings`. ``checkpoint`` None: the row was not trained, reported as 'not
    trained' with NaN metrics and no run facts (None), never silently replaced. The epochs, ``train_on`` and profile
    are read from the checkpoint: rows trained for different lengths stand side by side only with their epochs."""
    from tdam import complexity
    from tdam.checkpoint import load_model, read_checkpoint
    from tdam.data import dataset_root
    from tdam.models import create_model

    from .classification import evaluate
    from .data import eval_dataset, eval_loader
    from .provenance import eval_facts

    kw = dict(model)
    real = data["data_dir"] is not None and data["dataset"] == "imagenet"
    row = {"set": entry["set"], "row": entry["row"], "paper_row": entry.get("paper_row", True), "backbone": kw["arch"],
           "params": Path(entry["params"]).name}
    kw["num_classes"] = _PAPER_CLASSES.get(entry["set"], 1000)
    with torch.device("meta"):  # size of the paper's model (its class count), no weights needed
        sized = create_model(**kw)
    row["params_M"] = complexity.count_params(sized) / 1e6
    row["gflops"] = complexity.flops(sized, 224) / 1e9
    if checkpoint is None:
        unknown = {"run": None, "epochs": None, "train_on": None, "profile": None, "t_eval": None,
                   "data": "imagenet" if real else "embedded", "data_tag": None, "img_size": data["img_size"],
                   "num_classes": None, "v1_images": None}
        return {**row, "v1_top1": float("nan"), "v1_top5": float("nan"), **unknown, "checkpoint": None,
                "status": "not trained"}
    stored = read_checkpoint(checkpoint)
    net = load_model(stored)
    root = dataset_root(data["dataset"], data["data_dir"], size=data["data_size"])
    ds = eval_dataset(data["dataset"], root, img_size=data["img_size"], crop_pct=data["crop_pct"],
                      interpolation=data["interpolation"])
    res = evaluate(net, eval_loader(ds, batch_size=batch_size, workers=workers, max_images=max_images),
                   device=device, td_metrics=False)
    facts = eval_facts(checkpoint, t_eval=getattr(net, "td_steps", 1), images={"v1": res.num_images},
                       img_size=data["img_size"], num_classes=len(ds.classes),  # = trained: evaluate checks
                       data_dir=data["data_dir"], stored=stored)
    row.update(v1_top1=res.accuracy("last", 1), v1_top5=res.accuracy("last", 5), **facts.columns())
    return {**row, "checkpoint": str(checkpoint), "status": "ok"}
