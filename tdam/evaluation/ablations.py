"""Supplement Table 2 (ablations): which params file reproduces which row, running/collecting the rows, and the
table beside the paper's (spec 05 §5.7).

``params/ablations/_table2.yaml`` lists the rows (set, row, params file). Each row's model is trained by the same
engine as notebook 01 (``tdam.train``), evaluated on the validation split (``last`` top-1/top-5; for TD models also
the unique-box protocol), and its params/FLOPs are counted at 224² with the paper's class count.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
import yaml

from tdam import paths

from .tables import beside_paper, paper_table

__all__ = ["TABLE2_SETS", "table2_entries", "ablation_config", "run_ablation", "ablation_table"]

TABLE2_SETS = ("mode_and_distance", "layers", "steps_200cls", "feedback_technique")
_PAPER_CLASSES = {"steps_200cls": 200}


def _index_path() -> Path:
    return paths.params_dir() / "ablations" / "_table2.yaml"


def table2_entries(sets: Sequence[str] | None = None) -> list[dict]:
    """Rows of Table 2 with their params files: [{'set', 'row', 'params' (Path)}], in the paper's order."""
    idx = _index_path()
    if not idx.is_file():
        raise FileNotFoundError(f"ablation index missing: {idx} (expected 'rows: [{{set, row, params}}]')")
    rows = (yaml.safe_load(idx.read_text()) or {}).get("rows") or []
    for s in sets or ():
        if s not in TABLE2_SETS:
            raise ValueError(f"unknown Table 2 set {s!r}; valid: {list(TABLE2_SETS)}")
    out = []
    for r in rows:
        if sets and r["set"] not in sets:
            continue
        p = idx.parent / r["params"]
        if not p.is_file():
            raise FileNotFoundError(f"{idx}: params file of {r['set']}/{r['row']} missing: {p}")
        out.append({"set": r["set"], "row": str(r["row"]), "params": p})
    return out


def ablation_config(entry: dict, *, profile: str | None = None, backbone_override: str | None = None,
                    data_dir: str | None = None, **overrides):
    """The validated :class:`tdam.train.config.TrainConfig` of one Table 2 row (+ profile, + overrides).

    ``backbone_override`` trains the row's variant on another backbone (e.g. ResNet-18 for a CPU demo of the
    ResNet-50 rows); the table then says so in its ``backbone`` column.
    """
    from tdam.train.config import load_config

    kw = dict(overrides)
    if backbone_override is not None:
        kw["backbone"] = backbone_override
    if data_dir is not None:
        kw["data_dir"] = str(data_dir)
    return load_config(entry["params"], profile=profile, **kw)


def run_ablation(entry: dict, cfg, *, train: bool = True, device: torch.device, batch_size: int = 50,
                 workers: int = 0, max_images: int | None = None) -> dict:
    """Train (or reuse) and evaluate one row; returns {set, row, backbone, params_M, gflops, v1_top1, v1_top5,
    images, checkpoint, status}. Accuracy is the standard ``last`` top-k (Table 2 reports one number per row).
    With ``train=False`` a row without a finished run is reported as 'not trained' (NaN metrics), never silently
    replaced."""
    from tdam import complexity
    from tdam.checkpoint import load_model
    from tdam.models import create_model
    from tdam.train.cache import ensure_run, find_checkpoint
    from tdam.train.data import data_root

    from .classification import evaluate
    from .loaders import eval_dataset, eval_loader

    row = {"set": entry["set"], "row": entry["row"], "backbone": cfg.backbone, "params": entry["params"].name}
    with torch.device("meta"):  # size of the paper's model (its class count), no weights needed
        sized = create_model(cfg.backbone, num_classes=_PAPER_CLASSES.get(entry["set"], 1000), **cfg.model_kwargs())
    row["params_M"] = complexity.count_params(sized) / 1e6
    row["gflops"] = complexity.flops(sized, 224) / 1e9
    ckpt = ensure_run(cfg) if train else find_checkpoint(cfg)
    if ckpt is None:
        return {**row, "status": "not trained", "checkpoint": None}
    model = load_model(ckpt)
    ds = eval_dataset("imagenet", data_root(cfg), img_size=cfg.img_size, crop_pct=cfg.crop_pct,
                      interpolation=cfg.interpolation)
    res = evaluate(model, eval_loader(ds, batch_size=batch_size, workers=workers, max_images=max_images),
                   device=device, td_metrics=False)
    row.update(v1_top1=res.accuracy("last", 1), v1_top5=res.accuracy("last", 5), images=res.num_images)
    return {**row, "status": "ok", "checkpoint": str(ckpt)}


def ablation_table(rows: Sequence[dict]) -> pd.DataFrame:
    """Our rows beside the paper's Table 2 (``paper_*`` and ``diff_*`` = ours - paper), keyed by (set, row)."""
    ours = pd.DataFrame(list(rows))
    for c in ("v1_top1", "v1_top5"):
        if c not in ours:
            ours[c] = float("nan")
    return beside_paper(ours, paper_table("table2"), on=["set", "row"],
                        columns=["params_M", "gflops", "v1_top1", "v1_top5"])
