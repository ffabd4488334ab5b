"""Cached runs: train a configuration once, reuse it afterwards, resume it when it was interrupted.

:func:`ensure_run` is the one cache-or-train mechanism, used by :func:`ensure_checkpoint` (the ImageNet models of
notebooks 02-09) and by ``tdam.transfer.ensure_transfer_run`` (notebook 07). Under a file lock on the run folder it
reuses a finished run, resumes an interrupted one (``last.pth``) or trains from scratch; a folder that holds a run of a
DIFFERENT configuration is an error, never silently reused.

The ImageNet run folder is ``runs/01_train_imagenet/<model tag>-<profile>-<hash>``, the hash covering every config
value that changes what is learned, so notebook 01 with its default parameters and ``ensure_checkpoint()`` with its
defaults name the same run: whichever runs first trains it, the other reuses it. Nothing binary is committed.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from tdam.checkpoint import read_checkpoint
from tdam.models import model_spec
from tdam.train.config import TrainConfig, load_config, semantic_config

__all__ = ["ensure_checkpoint", "checkpoint_config", "find_checkpoint", "ensure_run", "RUN_KEY_FILE"]

RUN_KEY_FILE = "run_key.json"   # a run's extra identity (ensure_run's ``key``), written before it trains


def _plain_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _check_same(run_dir: Path, want: Mapping[str, Any], have: Mapping[str, Any]) -> None:
    want, have = _plain_json(want), _plain_json(have)
    if want != have:
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise ValueError(f"{run_dir} holds a run of a different config (differs in {diff}); remove {run_dir} "
                         f"or set another `name`")


def find_checkpoint(cfg: TrainConfig, *, key: Mapping[str, Any] | None = None) -> Path | None:
    """``best.pth`` (else ``last.pth``) of the finished run of ``cfg``, or None when it was not trained to the end.

    The config stored in ``last.pth`` must match ``cfg`` in every value that changes what is learned, and ``key``
    (extra identity, e.g. a transfer run's own settings) the folder's ``run_key.json`` when there is one; a
    difference raises ValueError naming the differing keys (a run is never silently reused)."""
    run_dir = cfg.run_dir()
    last = run_dir / "last.pth"
    if not last.is_file():
        return None
    ck = read_checkpoint(last)
    _check_same(run_dir, semantic_config(cfg, with_epochs=False),   # the length: extended by resuming (below)
                semantic_config(ck.get("config", {}), with_epochs=False))
    if key is not None and (stored := run_dir / RUN_KEY_FILE).is_file():
        _check_same(run_dir, key, json.loads(stored.read_text()))
    if int(ck.get("epoch", 0)) < cfg.epochs:
        return None
    best = run_dir / "best.pth"
    return best if best.is_file() else last


@contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_run(cfg: TrainConfig, *, key: Mapping[str, Any] | None = None,
               train_fn: Callable[[TrainConfig], Any] | None = None) -> Path:
    """The checkpoint of the finished run of ``cfg``: reused when present, resumed when interrupted, else trained.

    ``key``: what identifies the run beyond ``cfg``'s own semantic config (the transfer runs: their WS-DAN / ASL
    settings and the backbone checkpoint's digest), kept in ``run_key.json``. ``train_fn(cfg)``: trains ``cfg``
    and returns its ``RunResult`` (default ``tdam.train.train``). Raises KeyboardInterrupt when the training was
    interrupted (call again to resume)."""
    if train_fn is None:
        from tdam.train.trainer import train as train_fn

    run_dir = cfg.run_dir()
    with _run_lock(run_dir):
        if (found := find_checkpoint(cfg, key=key)) is not None:
            return found
        if key is not None:
            (run_dir / RUN_KEY_FILE).write_text(json.dumps(_plain_json(key), indent=1, sort_keys=True))
        result = train_fn(cfg.replace(resume="auto"))     # continue an interrupted run of this config
        if result.interrupted:
            raise KeyboardInterrupt(f"training of {run_dir} was interrupted; call again to resume it")
        return result.checkpoint


def checkpoint_config(backbone: str = "resnet18", attention: str | None = "td", profile: str | None = "smoke",
                      *, config: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The run :func:`ensure_checkpoint` trains or reuses for these arguments. ``overrides`` that are not
    :class:`TrainConfig` fields (``t``, ``m``, ``td_mode``, ``td_stages``, ...) go into the model description."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_keys = {k: overrides.pop(k) for k in list(overrides) if k not in fields}
    model = {**model_spec(backbone, **model_keys), "attention": attention}   # attention=None: the plain backbone
    return load_config(config, profile=profile, model=model, **overrides)


def ensure_checkpoint(backbone: str = "resnet18", attention: str | None = "td", profile: str | None = "smoke",
                      *, config: str | Path | None = None, **overrides: Any) -> Path:
    """Path to the best (else last) checkpoint of the run ``(config, profile, backbone, attention, overrides)``
    under ``runs/01_train_imagenet/``; trains it first (same engine as notebook 01) when it does not exist yet.
    ``attention=None`` (or 'plain') is the plain backbone. The defaults are notebook 01's default run.
    Example: ``ensure_checkpoint('resnet50', 'se')``, ``ensure_checkpoint('resnet18', 'td', t=3, epochs=1)``."""
    return ensure_run(checkpoint_config(backbone, attention, profile, config=config, **overrides))
