"""Notebook parameters: ONE validator per parameter name, shared by notebooks 02-09, and the names each notebook takes.

A notebook's ``parameters`` cell holds its defaults as flat literals (papermill injects overrides after it); the next
cell calls ``p = nb.parameters("<notebook>", globals())``, which picks that notebook's names, checks and normalises
each value with the validator of its name (the same name means the same thing in every notebook; ``""`` for a path
means "not given", as ``None`` does) and runs the notebook's cross-parameter checks, so a wrong value fails before
any model or data is touched, with a ``ValueError`` naming the parameter and what is valid. Called from Python
without a value, a name takes the default written in the notebook's ``parameters`` cell.
"""
from __future__ import annotations

import ast
import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from tdam import paths
from tdam.models import ARCHS, ATTENTIONS
from tdam.validation import check_bool, check_choice, check_int, check_number, resolve_device

__all__ = ["NOTEBOOKS", "VALIDATORS", "Params", "parameters", "notebook_defaults", "ATTENTION_CHOICES"]

ATTENTION_CHOICES = ("plain", *[a for a in ATTENTIONS if a])   # "plain" (or None) is the backbone without attention
RESNETS = tuple(a for a in ARCHS if a.startswith("resnet"))
PRECISIONS = ("fp32", "bf16", "fp16")
V2_VARIANTS = ("matched-frequency", "threshold0.7", "top-images")

Validator = Callable[[str, Any], Any]


def _int(lo: int, hi: int | None = None, *, optional: bool = False) -> Validator:
    def check(name, v):
        check_int(name, v, lo, hi, optional=optional)
        return v
    return check


def _number(lo: float, hi: float | None = None, *, optional: bool = False) -> Validator:
    def check(name, v):
        check_number(name, v, lo, hi, optional=optional)
        return v
    return check


def _bool(name, v):
    check_bool(name, v)
    return v


def _choice(choices, *, optional: bool = False) -> Validator:
    def check(name, v):
        if not (optional and v is None):
            check_choice(name, v, choices() if callable(choices) else choices)
        return v
    return check


def _list(item: Validator, *, nonempty: bool = False, optional: bool = False) -> Validator:
    def check(name, v):
        if optional and v is None:
            return None
        if not isinstance(v, (list, tuple)) or (nonempty and not v):
            raise ValueError(f"{name}={v!r}: expected a {'non-empty ' if nonempty else ''}list")
        return [item(name, x) for x in v]
    return check


def _path(kind: str) -> Validator:
    def check(name, v):
        if v is None or v == "":
            return None
        if not isinstance(v, (str, Path)):
            raise ValueError(f"{name}={v!r}: expected a path (None or '' for the default)")
        p = Path(v).expanduser()
        if not (p.is_file() if kind == "file" else p.is_dir()):
            raise ValueError(f"{name}={v!r}: no such {kind} (None or '' for the default)")
        return str(v)
    return check


def _profile(name, v):
    if v is not None and (not isinstance(v, str) or not v):
        raise ValueError(f"{name}={v!r}: expected a profile name such as 'smoke', or None")
    return v


def _device(name, v):
    resolve_device(v)
    return v


def _str(name, v):
    if not isinstance(v, str):
        raise ValueError(f"{name}={v!r}: expected a string")
    return v


def _max_images(name, v):
    check_int(name, v, 0, optional=True)
    return v or None       # 0 and None: every image


def _later_block(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 2:
        raise ValueError(f"{name}: {v!r} is not valid: expected 1-based block numbers >= 2 (block 1 changes the "
                         "size), or [] for the paper's choice")
    return v


def _transfer_datasets(task: str) -> Validator:
    def choices():
        from tdam.transfer.run import TASK_DATASETS

        return list(TASK_DATASETS[task])
    return _list(_choice(choices))


def _table2_sets():
    from tdam.evaluation.ablations import TABLE2_SETS

    return TABLE2_SETS


_ARCH = _choice(ARCHS)
_ATTENTION = _choice(ATTENTION_CHOICES, optional=True)
_FILE, _DIR = _path("file"), _path("directory")

VALIDATORS: dict[str, Validator] = {
    # models and checkpoints
    "backbone": _ARCH, "scaling_backbone": _ARCH, "imagenet_arch": _ARCH,
    "backbone_override": _choice(ARCHS, optional=True),
    "flops_backbones": _list(_ARCH), "speed_backbones": _list(_ARCH),
    "attention": _ATTENTION, "attentions": _list(_ATTENTION), "imagenet_attentions": _list(_ATTENTION),
    "checkpoint": _FILE, "td_checkpoint": _FILE, "baseline_checkpoint": _FILE, "backbone_checkpoint": _FILE,
    "checkpoints": _list(_FILE), "profile": _profile, "imagenet_profile": _profile, "use_ema": _bool,
    # data
    "data_dir": _DIR, "v2_dir": _DIR, "v2_variant": _choice(V2_VARIANTS), "split": _choice(("train", "val")),
    "data_size": _choice(("default", "tiny")), "max_images": _max_images, "seed": _int(0),
    "img_size": _int(8, optional=True), "flops_img_size": _int(8), "crop_pct": _number(0.05, 1.0),
    "resolutions": _list(_int(8), nonempty=True, optional=True),
    # running
    "batch_size": _int(1), "workers": _int(0), "device": _device, "amp": _choice(PRECISIONS),
    "dtype": _choice(PRECISIONS), "channels_last": _bool, "warmup": _int(0), "repeats": _int(1),
    # notebook 03: cost tables and scaling
    "speed_methods": _list(_str), "t_values": _list(_int(1), nonempty=True),
    "batch_values": _list(_int(1), nonempty=True), "resolution_values": _list(_int(8), nonempty=True),
    # notebook 04: ablations
    "sets": _list(_choice(_table2_sets)),
    "rows": _list(_str), "train": _bool,
    # notebooks 05, 06, 09: analyses
    "num_images": _int(1, 64), "two_objects": _bool, "image_indices": _list(_int(0)),
    "num_figure_images": _int(1, 64), "layer4_blocks": _list(_later_block), "layer3_blocks": _list(_later_block),
    # notebook 07: transfer
    "params_files": _list(_str), "wsdan_datasets": _transfer_datasets("wsdan"),
    "asl_datasets": _transfer_datasets("asl"), "epochs": _int(1), "steps_per_epoch": _int(1, optional=True),
    "val_batches": _int(1, optional=True), "num_attentions": _int(1), "wsdan_lr": _number(0, optional=True),
    "asl_lr": _number(0, optional=True), "ema_decay": _number(0, 1, optional=True),
    "asl_onecycle_epochs": _int(1, optional=True),
}

_ANALYSIS = ("backbone", "td_checkpoint", "baseline_checkpoint", "profile", "data_dir", "split", "batch_size",
             "device")
NOTEBOOKS: dict[str, tuple[str, ...]] = {
    "02_eval_imagenet": ("checkpoint", "backbone", "attention", "profile", "data_dir", "v2_dir", "v2_variant",
                         "img_size", "crop_pct", "batch_size", "workers", "device", "amp", "use_ema", "max_images"),
    "03_complexity": ("flops_backbones", "flops_img_size", "speed_backbones", "speed_methods", "batch_size",
                      "img_size", "dtype", "channels_last", "warmup", "repeats", "device", "scaling_backbone",
                      "t_values", "batch_values", "resolution_values"),
    "04_ablations": ("sets", "rows", "profile", "backbone_override", "data_dir", "train", "batch_size", "workers",
                     "device", "max_images"),
    "05_attention_shift": (*_ANALYSIS, "num_images", "two_objects", "image_indices", "seed"),
    "06_weak_localization": (*_ANALYSIS, "max_images", "num_figure_images", "seed"),
    "07_transfer": ("params_files", "data_dir", "backbone_checkpoint", "imagenet_arch", "imagenet_attentions",
                    "imagenet_profile", "wsdan_datasets", "asl_datasets", "data_size", "img_size", "batch_size",
                    "epochs", "steps_per_epoch", "val_batches", "num_attentions", "wsdan_lr", "asl_lr", "ema_decay",
                    "asl_onecycle_epochs", "device", "seed"),
    "08_test_resolution": ("backbone", "attentions", "checkpoints", "profile", "data_dir", "resolutions",
                           "batch_size", "workers", "device", "max_images"),
    "09_feature_selectivity": (*_ANALYSIS, "max_images", "seed", "layer4_blocks", "layer3_blocks"),
}


def _speed_methods_exist(p: Params) -> None:
    from tdam.reference import row_name, table1_specs

    known = sorted({row_name(s["method"]) for s in table1_specs(p.speed_backbones)})
    for m in p.speed_methods:
        check_choice("speed_methods", row_name(m), known)


def _ablation_rows_exist(p: Params) -> None:
    from tdam.evaluation.ablations import table2_entries
    from tdam.reference import row_name

    known = [row_name(e["row"]) for e in table2_entries(p.sets, extras=True)]
    for r in p.rows:
        check_choice("rows", row_name(r), known)


def _one_checkpoint_per_attention(p: Params) -> None:
    if p.checkpoints and len(p.checkpoints) != len(p.attentions):
        raise ValueError(f"checkpoints ({len(p.checkpoints)}) must be empty or one per attention ({p.attentions})")


def _resnet_backbone(p: Params) -> None:
    check_choice("backbone", p.backbone, RESNETS)   # selectivity is measured on ResNet blocks


CHECKS: dict[str, Callable[[Params], None]] = {
    "03_complexity": _speed_methods_exist, "04_ablations": _ablation_rows_exist,
    "08_test_resolution": _one_checkpoint_per_attention, "09_feature_selectivity": _resnet_backbone,
}


class Params:
    """The validated parameters of one notebook, as attributes (``p.backbone``), plus ``p.torch_device``."""

    def __init__(self, notebook: str, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
        self._notebook = notebook

    def as_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in NOTEBOOKS[self._notebook]}

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def __repr__(self) -> str:
        return f"Params({self._notebook}: {self.as_dict()})"


@functools.lru_cache(maxsize=None)
def _defaults(notebook: str) -> dict[str, Any]:
    nb = json.loads((paths.repo_root() / "notebooks" / f"{notebook}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {t.id: ast.literal_eval(s.value) for s in tree.body for t in s.targets}


def notebook_defaults(notebook: str) -> dict[str, Any]:
    """The defaults written in the notebook's ``parameters`` cell."""
    check_choice("notebook", notebook, sorted(NOTEBOOKS))
    return dict(_defaults(notebook))


def parameters(notebook: str, values: Mapping[str, Any] | None = None, **overrides: Any) -> Params:
    """Validated parameters of ``notebook``: its names taken from ``values`` (a notebook passes ``globals()``) and
    ``overrides``, the others from its ``parameters`` cell; each checked by :data:`VALIDATORS`, then the notebook's
    cross-parameter checks."""
    check_choice("notebook", notebook, sorted(NOTEBOOKS))
    given = {**(values or {}), **overrides}
    names = NOTEBOOKS[notebook]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"{notebook} has no parameters {unknown}; its parameters are {list(names)}")
    defaults = {} if all(n in given for n in names) else _defaults(notebook)
    p = Params(notebook, {n: VALIDATORS[n](n, given[n] if n in given else defaults[n]) for n in names})
    if notebook in CHECKS:
        CHECKS[notebook](p)
    return p
