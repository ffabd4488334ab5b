"""The trained models notebooks 02-09 evaluate, and the only calls from evaluation into the trainer.

A checkpoint parameter left empty means "the cached run": :func:`checkpoint` asks ``tdam.train.ensure_checkpoint``
for the run notebook 01 trains with the same (backbone, attention, profile), training it first when it is missing.
Table 2 rows are trained from their params files by the same engine (:func:`ablation_run`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tdam.evaluation.data import EvalRun, load_run, run_data_settings

__all__ = ["checkpoint", "resolve_checkpoint", "checkpoints", "load_pair", "ablation_config",
           "ablation_run"]


def checkpoint(backbone: str, attention: str | None, profile: str | None = "smoke", **overrides: Any) -> Path:
    """The best (else last) checkpoint of the cached training run of (backbone, attention, profile, overrides),
    trained first when missing; ``attention`` None or 'plain' is the plain backbone."""
    from tdam.train import ensure_checkpoint

    attention = None if attention in (None, "plain") else attention
    return Path(ensure_checkpoint(backbone, attention, profile=profile, **overrides))


def resolve_checkpoint(path: str | Path | None, backbone: str, attention: str | None,
                       profile: str | None = "smoke") -> Path:
    """``path`` when given (it must exist), else :func:`checkpoint` of (backbone, attention, profile)."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {p} does not exist (expected a file written by the tdam trainer)")
        return p
    return checkpoint(backbone, attention, profile)


def checkpoints(backbone: str, attentions: Sequence[str | None], paths: Sequence[str] = (),
                profile: str | None = "smoke") -> dict[str, Path]:
    """{attention: checkpoint}: ``paths`` (one per attention) when given, else the cached runs."""
    given = list(paths) or [None] * len(attentions)
    return {str(a): resolve_checkpoint(c, backbone, a, profile) for a, c in zip(attentions, given)}


def load_pair(p) -> tuple[EvalRun, EvalRun]:
    """The TD run and its plain baseline of notebooks 05, 06 and 09 (parameters ``backbone``, ``td_checkpoint``,
    ``baseline_checkpoint``, ``profile``, ``data_dir``, ``split``, ``device``), each with its evaluation data."""
    return tuple(load_run(resolve_checkpoint(path, p.backbone, attention, p.profile), data_dir=p.data_dir,
                          split=p.split, device=p.device)
                 for path, attention in ((p.td_checkpoint, "td"), (p.baseline_checkpoint, None)))


def ablation_config(entry: Mapping, *, profile: str | None = None, backbone_override: str | None = None,
                    data_dir: str | None = None, **overrides):
    """The validated trainer config of one Table 2 row (its params file + profile + overrides).
    ``backbone_override`` trains the row's variant on another backbone (e.g. ResNet-18 for a CPU demo of the
    ResNet-50 rows); the table then says so in its ``backbone`` column."""
    from tdam.train.config import load_config

    kw = dict(overrides)
    if backbone_override is not None:
        kw["model"] = {"arch": backbone_override}     # merged key by key into the row's model
    if data_dir is not None:
        kw["data_dir"] = str(data_dir)
    return load_config(entry["params"], profile=profile, **kw)


def ablation_run(entry: Mapping, cfg, *, train: bool = True, device: torch.device, **evaluation: Any) -> dict:
    """Train (or reuse) and evaluate one Table 2 row (:func:`tdam.evaluation.ablations.ablation_row`). With
    ``train=False`` a row without a finished run is reported as 'not trained'."""
    from tdam.evaluation.ablations import ablation_row
    from tdam.train.cache import ensure_run, find_checkpoint

    ckpt = ensure_run(cfg) if train else find_checkpoint(cfg)
    return ablation_row(entry, dict(cfg.model), ckpt, run_data_settings(cfg.to_dict()), device=device, **evaluation)
