"""The trained models notebooks 02-09 evaluate, and the only calls from evaluation into the trainer.

A checkpoint parameter left empty means "the cached run": :func:`checkpoint` asks ``tdam.train.ensure_checkpoint``
for the run notebook 01 trains with the same (backbone, attention, profile), training it first when it is missing.
Table 2 rows are trained from their params files by the same engine (:func:`ablation_run`).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tdam.evaluation.data import EvalRun, load_run, run_data_settings
from tdam.models import trained_steps   # re-exported: tdam.notebook.trained_steps

from .params import ATTENTION_CHOICES

__all__ = ["checkpoint", "resolve_checkpoint", "evaluated_checkpoints", "at_steps", "trained_steps", "load_pair",
           "ablation_config", "ablation_run"]


def checkpoint(backbone: str, attention: str | None, profile: str | None = None, **overrides: Any) -> Path:
    """The best (else last) checkpoint of the cached training run of (backbone, attention, profile, overrides),
    trained first when missing; ``attention`` None or 'plain' is the plain backbone. ``profile`` None: ``smoke`` on
    the embedded data, the params file's recipe when ``data_dir`` is given (``tdam.train.checkpoint_config``)."""
    from tdam.train import ensure_checkpoint

    attention = None if attention in (None, "plain") else attention
    return Path(ensure_checkpoint(backbone, attention, profile=profile, **overrides))


def resolve_checkpoint(path: str | Path | None, backbone: str, attention: str | None,
                       profile: str | None = None, **overrides: Any) -> Path:
    """``path`` when given (it must exist), else :func:`checkpoint` of (backbone, attention, profile, overrides)."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {p} does not exist (expected a file written by the tdam trainer)")
        return p
    return checkpoint(backbone, attention, profile, **overrides)


def evaluated_checkpoints(p) -> dict[str, Path]:
    """{attention: checkpoint} of the models a notebook evaluates: ``p.checkpoint`` (else the cached run of
    ``p.attention``) and, where the notebook has ``baseline_checkpoint``, the plain baseline (its checkpoint, else
    its cached run) -- one entry when ``p.attention`` is itself plain. The cached runs are those notebook 01 trains
    for the same ``backbone``, ``m``, ``profile`` and ``data_dir``."""
    attention = "plain" if p.attention in (None, "plain") else p.attention
    data = {"data_dir": p.data_dir}
    out = {attention: resolve_checkpoint(p.checkpoint, p.backbone, attention, p.profile, m=p.m, **data)}
    if "baseline_checkpoint" in p._names and attention != "plain":
        out["plain"] = resolve_checkpoint(p.baseline_checkpoint, p.backbone, "plain", p.profile, **data)
    return out


def at_steps(model: torch.nn.Module, t: int | None) -> torch.nn.Module:
    """``model`` evaluated at ``t`` computation steps from now on (``None``: as trained; a plain model takes only
    1). Validated by the model's own ``steps(t)`` (the TD blocks keep per-step norms for a bounded t); returns it."""
    if t is None:
        return model
    steps = getattr(model, "steps", None)
    if steps is None:
        if t != 1:
            raise ValueError(f"t={t}: {type(model).__name__} has no TD blocks, so only t=1 is valid")
        return model
    with steps(t):                        # raises ValueError naming the valid range
        pass
    for block in model.td_blocks():
        block.t = t
    return model


def load_pair(p) -> tuple[EvalRun, EvalRun]:
    """The attention model (TD by default) and its plain baseline of notebooks 05, 06 and 09, each with its
    evaluation data (parameters ``checkpoint``, ``baseline_checkpoint``, ``backbone``, ``attention``, ``t``, ``m``,
    ``profile``, ``data_dir``, ``split``, ``device``); the first is evaluated at ``t`` steps."""
    ckpts = evaluated_checkpoints(p)
    if len(ckpts) != 2:
        raise ValueError(f"attention={p.attention!r}: this notebook compares an attention model with its plain "
                         f"baseline; choose one of {[a for a in ATTENTION_CHOICES if a != 'plain']}")
    model, base = (load_run(c, data_dir=p.data_dir, split=p.split, device=p.device) for c in ckpts.values())
    at_steps(model.model, p.t)
    return model, base


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


def ablation_run(entry: Mapping, cfg, *, train: bool = True, dry_run: bool = False, device: torch.device,
                 **evaluation: Any) -> dict:
    """Train (or reuse) and evaluate one Table 2 row (:func:`tdam.evaluation.ablations.ablation_row`). With
    ``train=False`` a row without a finished run is reported as 'not trained'. With ``dry_run=True`` the row's
    resolved recipe is printed (:func:`tdam.train.recipe.describe_recipe`) and nothing is trained or evaluated: the
    row keeps its sizes, and its status says 'dry run'."""
    from tdam.evaluation.ablations import ablation_row
    from tdam.train.cache import ensure_run, find_checkpoint
    from tdam.train.recipe import describe_recipe

    if dry_run:
        print(f"{entry['set']} / {entry['row']}:\n{describe_recipe(cfg, gpus=None)}\n", flush=True)
        row = ablation_row(entry, dict(cfg.model), None, run_data_settings(cfg.to_dict()), device=device)
        return {**row, "status": "dry run"}
    ckpt = ensure_run(cfg) if train else find_checkpoint(cfg)
    return ablation_row(entry, dict(cfg.model), ckpt, run_data_settings(cfg.to_dict()), device=device, **evaluation)
