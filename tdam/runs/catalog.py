"""Every run under ``runs/``: list them, prune the old or unused ones (``python -m tdam.cache``).

A run is a folder ``<root>/<kind>/<name>`` (:mod:`tdam.runs.layout`) holding a run record, a config, a checkpoint or
a lock. A changed input makes a new folder beside the old one (:mod:`tdam.runs.identity`), so old runs accumulate;
``list`` shows them, ``prune`` removes them. A run whose lock is held (a training, a cached-run request: see
:mod:`tdam.runs.lock`) is shown as in use and never removed. The embedded datasets (``runs/data``) are not runs and
are never touched.

An entry's last use is the time a request last took its lock (every cached-run look-up does), else its last
checkpoint or config write. ``--unused``: a run built from an upstream file (a transfer run's backbone checkpoint,
recorded in ``inputs.json``) whose file no longer exists with that content: it is never reused again.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tdam.paths import runs_dir
from tdam.runs.layout import (CONFIG_FILE, INPUTS_FILE, LAST_FILE, LOCK_FILE, RECORD_FILE, file_digest,
                              read_record)
from tdam.runs.lock import RunLock, lock_holder
from tdam.runs.state import RunState, run_state
from tdam.errors import RunLockedError

__all__ = ["RunEntry", "entries", "prune", "parse_age", "AGE_UNITS"]

_MARKERS = (RECORD_FILE, LAST_FILE, CONFIG_FILE, LOCK_FILE)
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class RunEntry:
    """One run folder as ``list`` shows it."""

    path: Path
    state: RunState
    holder: dict[str, Any] | None   # the live process holding its lock, None when free
    size_mb: float
    last_used: float                # POSIX time
    inputs: str                     # ok | changed | missing | unreadable | - (no upstream file)
    facts: dict[str, Any]           # profile, train_on, epochs of its config; parent of its record

    @property
    def kind(self) -> str:
        return self.path.parent.name

    @property
    def in_use(self) -> bool:
        return self.holder is not None


def parse_age(text: str) -> float:
    """'7d' -> seconds (units s, m, h, d, w); ValueError naming the format otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text))
    if not m:
        raise ValueError(f"age {text!r}: expected a number and a unit, e.g. 30m, 12h, 7d, 2w (units: s m h d w)")
    return float(m.group(1)) * AGE_UNITS[m.group(2)]


def _inputs(path: Path) -> str:
    record = path / INPUTS_FILE
    if not record.is_file():
        return "-"
    try:
        items = list(json.loads(record.read_text()).values())
        files = [(Path(item["path"]), item["sha256"]) for item in items]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unreadable"
    status = "ok"
    for p, digest in files:
        if not p.is_file():
            return "missing"
        if file_digest(p) != digest:
            status = "changed"
    return status


def _facts(path: Path) -> dict[str, Any]:
    """profile, train_on and epochs from the run's ``config.yaml``, parent from its record; '?' where unreadable."""
    facts: dict[str, Any] = {"profile": "-", "train_on": "-", "epochs": "-", "parent": None}
    if (path / CONFIG_FILE).is_file():
        try:
            cfg = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
            facts.update(profile=cfg.get("profile") or "custom", train_on=cfg.get("train_on", "-"),
                         epochs=cfg.get("epochs", "-"))
        except yaml.YAMLError:
            facts.update(profile="?", train_on="?", epochs="?")
    try:
        record = read_record(path)
    except ValueError:
        facts["parent"] = "?"
    else:
        if record and record.get("parent"):
            facts["parent"] = f"{record['parent'].get('folder')}@{record['parent'].get('epoch')}"
    return facts


def _last_used(path: Path) -> float:
    times = [f.stat().st_mtime for f in (path / LOCK_FILE, path / LAST_FILE, path / CONFIG_FILE, path / RECORD_FILE) if f.exists()]
    return max(times, default=path.stat().st_mtime)


def _size_mb(path: Path) -> float:
    """Disk use in MiB, a hard-linked file (best.pth beside last.pth) counted once."""
    seen, total = set(), 0
    for f in path.rglob("*"):
        if f.is_file():
            st = f.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total / 2**20


def entries(root: str | Path | None = None) -> list[RunEntry]:
    """The run folders under ``root`` (default ``runs/``, ``$TDAM_RUNS``), oldest use first. A ``root`` that is not
    a folder is a ValueError (a typo must not read as "no runs")."""
    if root is not None and not Path(root).is_dir():
        raise ValueError(f"--root {root}: no such folder (the runs folder is runs/ or $TDAM_RUNS)")
    root = Path(root) if root is not None else runs_dir()
    found = []
    for path in sorted(p for p in root.glob("*/*") if p.is_dir()):
        if not any((path / m).exists() for m in _MARKERS):
            continue
        found.append(RunEntry(path, run_state(path), lock_holder(path), _size_mb(path), _last_used(path),
                              _inputs(path), _facts(path)))
    return sorted(found, key=lambda e: e.last_used)


def _remove_unless_in_use(path: Path) -> bool:
    """Remove ``path`` under its lock; False (nothing removed) when a live process holds it."""
    try:
        lock = RunLock(path, wait=False).acquire()
    except RunLockedError:
        return False
    try:
        shutil.rmtree(path)           # the lock file goes with it: a waiter notices and starts on a new folder
    finally:
        lock.release()
    return True


def prune(*, older_than: float | None = None, unused: bool = False, root: str | Path | None = None,
          dry_run: bool = False, now: float | None = None) -> tuple[list[RunEntry], list[RunEntry]]:
    """``(removed, in_use)``: the runs last used more than ``older_than`` seconds ago and/or (``unused``) built from
    input files that changed or are gone, removed (``dry_run``: that would be removed), and those of them skipped
    because a live process holds them."""
    if older_than is None and not unused:
        raise ValueError("prune: give --older-than AGE and/or --unused (nothing is removed by default)")
    now = time.time() if now is None else now
    chosen = [e for e in entries(root) if (older_than is not None and now - e.last_used > older_than)
              or (unused and e.inputs in ("changed", "missing"))]
    busy = [e for e in chosen if e.in_use]
    chosen = [e for e in chosen if not e.in_use]
    if dry_run:
        return chosen, busy
    removed = []
    for e in chosen:
        (removed if _remove_unless_in_use(e.path) else busy).append(e)
    return removed, busy
