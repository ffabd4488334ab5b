"""Notebook parameters: ONE validator per parameter name, shared by the nine notebooks, and the names each one takes.

A notebook's ``parameters`` cell holds its defaults as flat literals, one line each: ``name: "type" = default  # help``
(papermill injects overrides after it, and ``papermill --help-notebook`` shows the type and the help); the next
cell calls ``p = nb.parameters("<notebook>", globals())``, which

- stops on a name the notebook does not have (:class:`UnknownParameterError`, naming the valid ones): papermill
  itself only warns "Passed unknown parameter" and runs on with the default;
- checks and normalises each value with the validator of its name. The same name means the same thing in every
  notebook: ``checkpoint`` (the model evaluated; empty: the cached run of notebook 01 for ``backbone``,
  ``attention``, ``m``, ``profile``, ``data_dir``), ``baseline_checkpoint`` (its plain backbone), ``t`` (computation
  steps: trained with in 01, evaluated at elsewhere; None: as trained), ``profile`` (None: ``smoke`` on the embedded
  data, the params file's recipe on ``data_dir``), ``device``, ``dry_run`` (resolve and print, run nothing). ``""``
  for a path means "not given", as ``None`` does. Lists may be given as YAML/JSON text, as ``papermill -p`` passes
  them: ``-p rows '[ResNet, SE]'`` equals ``-y 'rows: [ResNet, SE]'``;
- runs the notebook's cross-parameter checks,

so a wrong value fails before any model or data is touched, with a :class:`ParameterError` (a ``ValueError``) naming
the parameter and what is valid, shown as that one line in the notebook (no frames of the validators). Called from
Python without a value, a name takes the default written in the notebook's ``parameters`` cell.
"""
from __future__ import annotations

import ast
import difflib
import json
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from tdam import paths
from tdam.data import TASK_DATASETS
from tdam.models import ARCHS, ATTENTIONS
from tdam.models.td import TD_MODES
from tdam.validation import check_bool, check_choice, check_int, check_number, resolve_device

__all__ = ["NOTEBOOKS", "VALIDATORS", "Params", "parameters", "notebook_defaults", "ATTENTION_CHOICES",
           "ParameterError", "UnknownParameterError"]

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


def _parsed(name: str, v: Any) -> Any:
    """A list given as text (``papermill -p rows '[ResNet, SE]'`` passes a string) read as YAML/JSON."""
    if not isinstance(v, str):
        return v
    try:
        return yaml.safe_load(v)
    except yaml.YAMLError as e:
        raise ValueError(f"{name}={v!r}: not a YAML/JSON list ({e.problem}); write e.g. -p {name} '[a, b]' "
                         f"or -y '{name}: [a, b]'") from None


def _list(item: Validator, *, nonempty: bool = False, optional: bool = False) -> Validator:
    def check(name, v):
        v = _parsed(name, v)
        if optional and v is None:
            return None
        if not isinstance(v, (list, tuple)) or (nonempty and not v):
            raise ValueError(f"{name}={v!r}: expected a {'non-empty ' if nonempty else ''}list, e.g. -p {name} "
                             f"'[a, b]' or -y '{name}: [a, b]'")
        return [item(name, x) for x in v]
    return check


def _one_or_list(item: Validator) -> Validator:
    """One value or a non-empty list of them (``'td'``, ``['plain', 'td']``), always returned as a list."""
    many = _list(item, nonempty=True)

    def check(name, v):
        v = _parsed(name, v)
        return many(name, v if isinstance(v, (list, tuple)) else [v])
    return check


def _optional_str(name, v):
    if v is not None and (not isinstance(v, str) or not v):
        raise ValueError(f"{name}={v!r}: expected a non-empty string, or None")
    return v


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
        return list(TASK_DATASETS[task])
    return _list(_choice(choices))


def _table2_sets():
    from tdam.evaluation.ablations import TABLE2_SETS

    return TABLE2_SETS


_ARCH = _choice(ARCHS)
_ATTENTION = _choice(ATTENTION_CHOICES, optional=True)
_FILE, _DIR = _path("file"), _path("directory")

VALIDATORS: dict[str, Validator] = {
    # models and checkpoints: the same names in every notebook
    "backbone": _ARCH, "attention": _ATTENTION, "attentions": _one_or_list(_ATTENTION),
    "td_mode": _choice(TD_MODES, optional=True), "t": _int(1, optional=True), "m": _int(0, optional=True),
    "checkpoint": _FILE, "baseline_checkpoint": _FILE, "profile": _profile, "config": _optional_str,
    "flops_backbones": _list(_ARCH), "speed_backbones": _list(_ARCH), "use_ema": _bool,
    # data
    "data_dir": _DIR, "v2_dir": _DIR, "v2_variant": _choice(V2_VARIANTS), "split": _choice(("train", "val")),
    "data_size": _choice(("default", "tiny")), "max_images": _max_images, "seed": _int(0),
    "img_size": _int(8, optional=True), "flops_img_size": _int(8), "crop_pct": _number(0.05, 1.0),
    "resolutions": _list(_int(8), nonempty=True, optional=True),
    # running
    "batch_size": _int(1, optional=True), "workers": _int(0), "device": _device, "amp": _choice(PRECISIONS),
    "channels_last": _bool, "warmup": _int(0), "repeats": _int(1), "dry_run": _bool,
    # notebook 01: training
    "epochs": _int(1, optional=True), "steps_per_epoch": _int(1, optional=True), "lr": _number(0, optional=True),
    "gpus": _int(0), "resume": _bool, "name": _optional_str, "force": _bool,
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
    "asl_datasets": _transfer_datasets("asl"), "val_batches": _int(1, optional=True),
    "num_attentions": _int(1), "wsdan_lr": _number(0, optional=True), "asl_lr": _number(0, optional=True),
    "ema_decay": _number(0, 1, optional=True), "asl_onecycle_epochs": _int(1, optional=True),
}



def _parameters_cell(path: Path) -> dict[str, Any]:
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {s.target.id: ast.literal_eval(s.value) for s in tree.body}   # `name: "type" = literal  # help` lines


# Each notebook's parameter names, in order: read from its ``parameters`` cell, the one place they are written (every
# name there has a validator above: tests/test_eval_tables.py). The cached runs a notebook evaluates are those of
# notebook 01 for the same (backbone, attention, m, profile, data_dir); ``t`` is the steps used at evaluation.
_CELLS: dict[str, dict[str, Any]] = {
    path.stem: _parameters_cell(path) for path in sorted((paths.repo_root() / "notebooks").glob("[0-9]*.ipynb"))}
NOTEBOOKS: dict[str, tuple[str, ...]] = {name: tuple(cell) for name, cell in _CELLS.items()}


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


def _resnet_backbone(p: Params) -> None:
    check_choice("backbone", p.backbone, RESNETS)   # selectivity is measured on ResNet blocks


CHECKS: dict[str, Callable[[Params], None]] = {
    "03_complexity": _speed_methods_exist, "04_ablations": _ablation_rows_exist,
    "09_feature_selectivity": _resnet_backbone,
}


def _common_checks(p: Params) -> None:
    """Checks that hold wherever the names occur."""
    names = p._names
    if "t" in names and "attention" in names and p.attention in (None, "plain") and p.t not in (None, 1):
        raise ValueError(f"t={p.t}: the plain backbone has a single computation step (t=1); t applies to a TD model "
                         "(attention='td')")
    if "m" in names and "checkpoint" in names and p.checkpoint and p.m is not None:
        raise ValueError(f"m={p.m} selects the cached run of notebook 01; the checkpoint {p.checkpoint} has its own m "
                         "(leave m=None, or leave checkpoint empty)")


class Params:
    """The validated parameters of one notebook, as attributes (``p.backbone``), plus ``p.torch_device``."""

    def __init__(self, notebook: str, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
        self._notebook = notebook
        self._names = NOTEBOOKS[notebook]

    def as_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self._names}

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def __repr__(self) -> str:
        return f"Params({self._notebook}: {self.as_dict()})"


def notebook_defaults(notebook: str) -> dict[str, Any]:
    """The defaults written in the notebook's ``parameters`` cell."""
    check_choice("notebook", notebook, sorted(NOTEBOOKS))
    return dict(_CELLS[notebook])


def parameters(notebook: str, values: Mapping[str, Any] | None = None, **overrides: Any) -> Params:
    """Validated parameters of ``notebook``: its names taken from ``values`` (a notebook passes ``globals()``) and
    ``overrides``, the others from its ``parameters`` cell; each checked by :data:`VALIDATORS`, then the notebook's
    cross-parameter checks."""
    check_choice("notebook", notebook, sorted(NOTEBOOKS))
    given = {**(values or {}), **overrides}
    names = NOTEBOOKS[notebook]
    try:
        unknown = sorted((set(overrides) | (_injected_names(values) if values is not None else set())) - set(names))
        if unknown:
            raise UnknownParameterError(notebook, unknown, names)
        defaults = {} if all(n in given for n in names) else _CELLS[notebook]
        p = Params(notebook, {n: VALIDATORS[n](n, given[n] if n in given else defaults[n]) for n in names})
        _common_checks(p)
        if notebook in CHECKS:
            CHECKS[notebook](p)
    except ValueError as e:
        error = e if isinstance(e, ParameterError) else ParameterError(str(e))
        if values is not None:       # a notebook's call: say it at once, ahead of papermill's traceback
            print(f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
        raise error from None
    return p


class ParameterError(ValueError):
    """A notebook parameter that is wrong: an unknown name, a bad value, or values that do not go together.

    The message is all a notebook shows of it: IPython prints ``_render_traceback_`` instead of the frames of the
    validators, so papermill's error ends in this one line instead of ~20 lines of library code; and called from a
    notebook, :func:`parameters` also writes it to stderr as it happens, which ``papermill --log-output`` shows
    before papermill's own traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class UnknownParameterError(ParameterError):
    """A parameter the notebook does not have (a typo, or a name of another notebook): papermill only warns about
    these and runs on with the default, so the notebook stops here instead, naming its parameters."""

    def __init__(self, notebook: str, unknown: list[str], names: tuple[str, ...]) -> None:
        hints = [f"{u!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(u, names, 1)) else repr(u)
                 for u in unknown]
        super().__init__(f"{notebook} has no parameter {', '.join(hints)}; its parameters are {', '.join(names)}")


# what a kernel's namespace holds besides the notebook's names: IPython's own, and what the cell imported
_KERNEL_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "display"})


def _injected_names(namespace: Mapping[str, Any]) -> set[str]:
    """The data names in a notebook's namespace at its validation cell: the ``parameters`` cell's and whatever
    papermill injected after it. Modules, functions and classes (the cell's imports), IPython's names and ``_``
    names are not data; so a notebook's second cell imports, then validates, and defines nothing before."""
    return {k for k, v in namespace.items()
            if not k.startswith("_") and k not in _KERNEL_NAMES and not isinstance(v, types.ModuleType)
            and not callable(v)}
