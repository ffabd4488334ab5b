"""Which run a resume continues, and under which identity: the one rule for ``resume``.

``resume: false`` trains from scratch in the run's own folder (a folder that already holds a run is refused).
``resume: auto`` continues the run's own folder when it holds a checkpoint, else trains from scratch (the cached-run
requests of the notebooks use it). ``resume: true`` and ``resume: <checkpoint path>``:

1. **The same run**: when the run's own folder (named by its identity: everything that changes the weights, epochs
   included) holds ``last.pth``, it is continued there: an interrupted run resumes, a finished one is reported, one
   trained to the end but missing outputs gets them written without training.
2. **A new run derived from its parent**: otherwise the run it continues, its *parent*, is the checkpoint given
   (``resume: <path>``) or, for ``resume: true``, the run under ``runs/01_train_imagenet/`` that differs from the
   request only in the schedule (:data:`~tdam.train.config.SCHEDULE_FIELDS`: epochs, lr, warm-up, ...): the one with
   the fewest such differences, then the most epochs trained. The new run's identity is the hash of its request and
   of its parent (identity, epoch); its folder, ``<model>-<profile>-e<epochs>-from<parent epoch>-<identity>``, gets
   the parent's ``last.pth`` (and ``best.pth``) as hard links and a ``run.json`` naming the parent. The parent is
   never changed: ``--epochs 5 --resume true`` on the finished 3-epoch run leaves it, and what reuses it, as it was.
3. **Refused, with the difference named**: a parent that differs in anything else (the model, the data, the
   augmentation, the seed, ...) is refused listing each field as ``stored -> new``; a parent that already trained the
   requested epochs would train nothing and is refused saying so; two equally close parents are refused naming both
   (give ``--resume <path>``); no run at all to continue says so. No resume ever looks for a checkpoint in a folder
   that has none.

Only rank 0 creates the new folder; every rank resolves the same name (the search reads only files written before
the job started).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tdam.checkpoint import read_checkpoint
from tdam.errors import ConfigError, ResumeMismatchError
from tdam.runs import (BEST_EMA_FILE, BEST_FILE, CONFIG_FILE, LAST_FILE, RunLock, file_digest, folder_name, link_file,
                       plain_json, read_record, run_identity, run_state, write_record)
from tdam.train.config import TrainConfig, config_changes, describe_changes, semantic_config

__all__ = ["resolve_run", "find_parent", "holds_request"]


def _stored_config(folder: Path) -> dict[str, Any] | None:
    """The config a run folder was trained with (``config.yaml``), None when it has none or it is unreadable."""
    try:
        cfg = yaml.safe_load((folder / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return cfg if isinstance(cfg, dict) else None


def holds_request(folder: Path, cfg: TrainConfig) -> bool:
    """``folder`` holds the run of ``cfg``'s request (its record's request equals :func:`semantic_config` of ``cfg``;
    a folder without a record: its ``config.yaml`` differs in nothing): a named folder may hold another run."""
    try:
        record = read_record(folder)
    except ValueError:
        return False
    if record is not None:
        return plain_json(record["request"]) == plain_json(semantic_config(cfg))
    stored = _stored_config(folder)
    return stored is not None and not any(config_changes(stored, cfg))


def find_parent(cfg: TrainConfig) -> Path:
    """The run folder ``resume: true`` continues when ``cfg``'s own folder holds no checkpoint (rule 2 of the module
    docstring); raises :class:`ResumeMismatchError` / :class:`ConfigError` (rule 3) otherwise."""
    own = cfg.run_dir()
    root = own.parent
    close, other = [], []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder == own or not (folder / LAST_FILE).is_file() or (stored := _stored_config(folder)) is None:
            continue
        refused, schedule = config_changes(stored, cfg)
        if refused:
            other.append((len(refused), folder.name, refused))
        elif schedule:                       # the same config is a sibling (an earlier extension), not a parent
            state = run_state(folder)
            close.append((len(schedule), -(state.epoch or 0), folder, schedule, state))
    if not close:
        if other:
            n, name, refused = min(other)
            raise ResumeMismatchError(
                f"resume: no run of this config to continue under {root}; the closest, {name}, differs in fields "
                f"that change the model or the data: {describe_changes(refused)} (a new model trains from scratch: "
                f"leave out --resume)")
        raise ConfigError(f"resume: no run to continue under {root} (nothing of this model was trained there); "
                          f"leave out --resume to train it, or give the checkpoint: --resume <path to last.pth>")
    close.sort(key=lambda c: (c[0], c[1], c[2].name))
    useful = [c for c in close if (c[4].epoch or 0) < cfg.epochs]
    if not useful:
        n, _, folder, schedule, state = close[0]
        raise ConfigError(f"resume: {folder.name} already trained {state.epoch} epoch(s) and this run has "
                          f"{cfg.epochs}: it would train nothing (changes: {describe_changes(schedule)}); raise "
                          f"--epochs above {state.epoch} to extend it")
    best = useful[0]
    ties = [c for c in useful if c[:2] == best[:2]]
    if len(ties) > 1:
        names = ", ".join(f"{c[2].name} ({describe_changes(c[3])})" for c in ties)
        raise ConfigError(f"resume: {len(ties)} runs are equally close to continue: {names}; name the one to "
                          f"continue: --resume <its folder>/last.pth")
    return best[2]


def _parent_facts(last: Path) -> dict[str, Any]:
    """``{'folder', 'path', 'identity', 'epoch', 'step'}`` of the run whose state is ``last`` (a checkpoint outside a
    run folder: its file digest stands for the identity)."""
    ck = read_checkpoint(last)
    missing = [k for k in ("model", "epoch", "step", "config") if k not in ck]
    if missing:
        raise ValueError(f"resume: {last} is not a resumable tdam training checkpoint (missing {missing})")
    try:
        record = read_record(last.parent)
    except ValueError:
        record = None
    identity = record["identity"] if record else file_digest(last, 8)
    return {"folder": last.parent.name, "path": str(last.parent.resolve()), "identity": identity,
            "epoch": int(ck["epoch"]), "step": int(ck["step"]), "config": ck["config"]}


def resolve_run(cfg: TrainConfig, *, create: bool = True) -> TrainConfig:
    """``cfg`` with the folder and ``resume`` its training uses (the module docstring's rule): unchanged for
    ``resume`` false / auto and for a run whose own folder holds ``last.pth``; for a new run derived from a parent,
    its derived ``name`` (unless ``name``/``output_dir`` were given) and ``resume: true``, the folder created with the
    parent's state linked in (``create``: rank 0 only)."""
    if cfg.resume in (False, "auto"):
        return cfg
    own = cfg.run_dir()
    if cfg.resume is True:
        if (own / LAST_FILE).is_file():
            return cfg
        if cfg.output_dir or cfg.name:
            raise ConfigError(f"resume: {own} holds no run to continue (no {LAST_FILE}); leave out --resume to "
                              f"start it, or give the checkpoint to continue: --resume <path to last.pth>")
        last = find_parent(cfg) / LAST_FILE
    else:
        last = Path(str(cfg.resume)).expanduser()
        if not last.is_file():
            raise FileNotFoundError(f"resume: no checkpoint at {last} (a run writes <run folder>/{LAST_FILE})")
        if (own / LAST_FILE).is_file() and os.path.samefile(own / LAST_FILE, last):
            return cfg.replace(resume=True)
    parent = _parent_facts(last)
    refused, schedule = config_changes(parent.pop("config"), cfg)
    if refused:
        raise ResumeMismatchError(f"resume: {last} was trained with another config; these fields would change the "
                                  f"model or the data: {describe_changes(refused)} (start a new run: leave out "
                                  f"--resume)")
    if parent["epoch"] >= cfg.epochs and not schedule:
        raise ConfigError(f"resume: {last} already holds all {cfg.epochs} epoch(s) of this config: nothing to train")
    identity = run_identity(semantic_config(cfg), parent)
    name = cfg.name or (None if cfg.output_dir else folder_name([*cfg.name_parts(), f"from{parent['epoch']}"],
                                                                 identity))
    child = cfg.replace(name=name, resume=True)
    folder = child.run_dir()
    if not create:
        return child
    with RunLock(folder, wait=False):
        try:
            record = read_record(folder)
        except ValueError:
            record = {}
        if record is not None and record.get("identity") != identity:
            raise ConfigError(f"resume: {folder} holds another run (identity {record.get('identity')}, not "
                              f"{identity}); choose another name/output_dir")
        if not (folder / LAST_FILE).is_file():
            write_record(folder, identity=identity, kind=folder.parent.name, request=semantic_config(cfg),
                         parent=parent)
            for best in (BEST_FILE, BEST_EMA_FILE):    # a run folder's bests too
                if last.name == LAST_FILE and (last.parent / best).is_file():
                    link_file(last.parent / best, folder / best)
            link_file(last, folder / LAST_FILE)        # last: the folder's checkpoint marks the run as started
    return child
