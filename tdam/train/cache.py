"""``ensure_checkpoint``: the trained model notebooks 02-09 use by default, trained once and reused.

The run folder is ``runs/01_train_imagenet/<model tag>-<profile>-<hash>``, the hash covering every config value that
changes what is learned, so notebook 01 with its default parameters and ``ensure_checkpoint()`` with its defaults
name the same run: whichever runs first trains it, the other reuses it. Nothing binary is committed.
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tdam.checkpoint import read_checkpoint
from tdam.train.config import TrainConfig, load_config, semantic_config

__all__ = ["ensure_checkpoint", "checkpoint_config", "find_checkpoint", "ensure_run"]


def find_checkpoint(cfg: TrainConfig) -> Path | None:
    """``best.pth`` (else ``last.pth``) of the finished run of ``cfg``, or None when it was not trained to the end.
    Raises ValueError when the run folder holds a checkpoint of a DIFFERENT config (never silently reuses it)."""
    last = cfg.run_dir() / "last.pth"
    if not last.is_file():
        return None
    ck = read_checkpoint(last)
    want, have = semantic_config(cfg), semantic_config(ck.get("config", {}))
    if want != have:
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise ValueError(f"{last} was trained with a different config (differs in {diff}); remove {cfg.run_dir()} "
                         f"or set another `name`")
    if int(ck.get("epoch", 0)) < cfg.epochs:
        return None
    best = cfg.run_dir() / "best.pth"
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


def ensure_run(cfg: TrainConfig) -> Path:
    """The checkpoint of the finished run of ``cfg``: reused when present, resumed when interrupted, else trained."""
    from tdam.train.trainer import train

    with _run_lock(cfg.run_dir()):
        if (found := find_checkpoint(cfg)) is not None:
            return found
        result = train(cfg.replace(resume="auto"))     # continue an interrupted run of this config
        if result.interrupted:
            raise KeyboardInterrupt(f"training of {cfg.run_dir()} was interrupted; call again to resume it")
        return result.checkpoint


def checkpoint_config(backbone: str = "resnet18", attention: str | None = "td", profile: str | None = "smoke",
                      *, config: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The run :func:`ensure_checkpoint` trains or reuses for these arguments."""
    return load_config(config, profile=profile, backbone=backbone, **overrides).replace(attention=attention)


def ensure_checkpoint(backbone: str = "resnet18", attention: str | None = "td", profile: str | None = "smoke",
                      *, config: str | Path | None = None, **overrides: Any) -> Path:
    """Path to the best (else last) checkpoint of the run ``(config, profile, backbone, attention, overrides)``
    under ``runs/01_train_imagenet/``; trains it first (same engine as notebook 01) when it does not exist yet.
    ``attention=None`` (or 'plain') is the plain backbone. The defaults are notebook 01's default run.
    Example: ``ensure_checkpoint('resnet50', 'se')``."""
    return ensure_run(checkpoint_config(backbone, attention, profile, config=config, **overrides))
