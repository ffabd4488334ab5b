"""The facts behind every number in a results table: which run, how long it trained, and what was evaluated.

A number of ours is only readable with what it was computed from. :class:`EvalFacts` records that for one
evaluation: the run's identity, the epochs it trained, the step its loss saw (``train_on``), its profile, the
computation steps ``t`` at evaluation, the images evaluated per split, the data and the image size, the class count.
:func:`eval_facts` builds it from a checkpoint and the evaluation's parameters (the epochs and run config are read
from the checkpoint itself, never from the notebook's parameters); :meth:`EvalFacts.columns` turns it into the same
columns in every notebook's table (:data:`tdam.reference.PROVENANCE_COLUMNS` and ``<split>_images``), and
:meth:`EvalFacts.paper_setting` decides from those facts, not from the model's config, whether a paper number may
stand beside ours (:func:`tdam.reference.paper_setting`).

The run's identity is the name of its run folder (``Path(checkpoint).parent.name``: the trainer's
``<model tag>-<profile>-<config hash>``); a checkpoint not written by the tdam trainer (the authors', a
``save_checkpoint`` export) is named by its file name and the first 12 hex digits of its SHA-256.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tdam.checkpoint import read_checkpoint
from tdam.reference import PROVENANCE_COLUMNS, Setting, model_key, paper_setting
from tdam.runs import file_digest

from .data import run_data_settings

if TYPE_CHECKING:
    from .data import EvalRun

__all__ = ["EvalFacts", "eval_facts", "run_facts", "run_name", "with_provenance", "images_column"]

_DIGEST_DIGITS = 12


def images_column(split: str) -> str:
    """The column holding the images evaluated on ``split``: ``v1_images``, ``v2_images``, ..."""
    return f"{split}_images"


@dataclass(frozen=True)
class EvalFacts:
    """What one evaluation was computed from.

    ``run``: the run it comes from (:func:`run_name`). ``epochs``: epochs the checkpoint had trained (completed
    epochs, as the trainer stores them; None for a checkpoint not written by the tdam trainer, which records none we
    can trust). ``train_on``: the step a TD model's loss saw ('last' or 'most_confident'; None without TD or not
    recorded). ``profile``: the training profile (None: not recorded or none). ``t_eval``: the steps the last TD
    stage ran at evaluation (1 without TD). ``images``: {split: images evaluated} ('v1': ImageNet-V1 val or the data's
    validation split, 'v2': ImageNet-V2, else the split's name). ``data``: 'imagenet' (a real folder), 'embedded'
    (the tdam-shapes stand-in) or the dataset kind of a folder; ``data_tag``: the folder's name, or
    ``tdam-shapes/<kind>/<size>``. ``img_size``: the evaluated input size (px). ``num_classes``: the evaluated
    data's class count. ``model_config``: the model as trained (``create_model`` config), which names its paper row.
    """

    run: str
    epochs: int | None
    train_on: str | None
    profile: str | None
    t_eval: int
    images: Mapping[str, int]
    data: str
    data_tag: str
    img_size: int
    num_classes: int | None
    model_config: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def columns(self) -> dict[str, Any]:
        """The provenance columns of a results row: :data:`tdam.reference.PROVENANCE_COLUMNS`, then
        ``<split>_images`` for each split evaluated."""
        out = {name: getattr(self, name) for name in PROVENANCE_COLUMNS}
        out.update({images_column(s): int(n) for s, n in self.images.items()})
        return out

    def paper_setting(self, table: str = "table1", ablation: tuple[str, str] | None = None) -> Setting:
        """Whether this evaluation is in the setting of paper ``table`` (:func:`tdam.reference.paper_setting` of
        these facts: the model, its t at evaluation, the images evaluated, the data, the class count, the size)."""
        return paper_setting(self.model_config, num_classes=self.num_classes, img_size=self.img_size,
                             imagenet=self.data == "imagenet", t=self.t_eval, images=self.images, table=table,
                             ablation=ablation)

    def replace(self, **changes: Any) -> EvalFacts:
        """These facts with some changed (e.g. ``img_size`` of one resolution of a sweep)."""
        return dataclasses.replace(self, **changes)


def run_name(checkpoint: str | Path, stored: Mapping) -> str:
    """The run behind ``checkpoint`` (``stored``: its contents, as read): its run folder's name when the tdam trainer
    wrote it (it records its run ``config``; the name ends with the run's identity, :mod:`tdam.runs.identity`), else
    ``<file name>@<SHA-256 prefix>``."""
    path = Path(checkpoint)
    if isinstance(stored.get("config"), Mapping):
        return path.resolve().parent.name
    return f"{path.name}@{file_digest(path, _DIGEST_DIGITS)}"


def eval_facts(checkpoint: str | Path, *, t_eval: int, images: Mapping[str, int], img_size: int,
               num_classes: int | None, data_dir: str | Path | None, stored: Mapping | None = None,
               model_config: Mapping | None = None, dataset: str | None = None,
               data_size: str | None = None) -> EvalFacts:
    """The facts of one evaluation of ``checkpoint``: ``t_eval`` the steps it ran at (``model.td_steps``),
    ``images`` {split: images evaluated}, ``img_size`` the input size, ``num_classes`` the data's class count,
    ``data_dir`` the folder evaluated (None: the embedded tdam-shapes data).

    ``stored``: the checkpoint's contents when already read (else it is read here with
    :func:`tdam.checkpoint.read_checkpoint`); its ``epoch``, run ``config`` (``train_on``, ``profile``, dataset kind,
    embedded data size) and ``model_config`` give the rest. ``model_config``, ``dataset`` (the data's kind) and
    ``data_size`` (the embedded data's size) override the stored ones (e.g. for a transfer run: its backbone, its
    fine-grained or multi-label dataset).
    """
    if stored is None:
        stored = read_checkpoint(checkpoint)
    if not images:
        raise ValueError("images: give {split: images evaluated}, e.g. {'v1': 50000}")
    config = stored.get("config") if isinstance(stored.get("config"), Mapping) else {}
    model_config = dict(model_config if model_config is not None else stored.get("model_config") or {})
    td = model_key(model_config)["attention"] == "td" if model_config else False
    settings = run_data_settings(config)
    kind, size = dataset or settings["dataset"], data_size or settings["data_size"]
    if data_dir:
        data, data_tag = kind, Path(data_dir).name
    else:
        data, data_tag = "embedded", f"tdam-shapes/{kind}/{size}"
    return EvalFacts(
        run=run_name(checkpoint, stored),
        epochs=int(stored["epoch"]) if config and stored.get("epoch") is not None else None,
        train_on=config.get("train_on") if td else None,
        profile=config.get("profile"),
        t_eval=int(t_eval),
        images={str(s): int(n) for s, n in images.items()},
        data=data, data_tag=data_tag, img_size=int(img_size),
        num_classes=None if num_classes is None else int(num_classes),
        model_config=model_config,
    )


def run_facts(run: EvalRun, images: int, *, split: str | None = None) -> EvalFacts:
    """The facts of evaluating ``images`` images of a loaded :class:`~tdam.evaluation.data.EvalRun` (its dataset's
    split, or ``split``; 'val' is recorded as 'v1'), at the steps its model runs now."""
    split = split or getattr(run.dataset, "split", "val")
    return eval_facts(run.checkpoint, t_eval=getattr(run.model, "td_steps", 1),
                      images={"v1" if split == "val" else split: images}, img_size=run.img_size,
                      num_classes=len(run.dataset.classes), data_dir=run.data_dir)


def with_provenance(table: pd.DataFrame, facts: EvalFacts) -> pd.DataFrame:
    """``table`` with the provenance columns of ``facts`` (:meth:`EvalFacts.columns`) on every row, after its own
    columns and before ``comparison`` when it has one."""
    out = table.copy()
    comparison = out.pop("comparison") if "comparison" in out else None
    for name, value in facts.columns().items():
        out[name] = value
    if comparison is not None:
        out["comparison"] = comparison
    return out
