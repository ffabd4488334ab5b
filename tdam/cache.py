"""List and prune the cached runs under ``runs/`` (``$TDAM_RUNS``): one command, no manual clean-up.

Every cached run is a folder keyed by what it depends on (``tdam.train.cache``): the ImageNet runs of notebooks
01-09 under ``runs/01_train_imagenet/``, the transfer runs of notebook 07 under ``runs/07_transfer/``. A changed
input makes a new folder beside the old one, so old entries accumulate; this command shows and removes them.

    python -m tdam.cache list                       # every entry: state, size, last use, inputs
    python -m tdam.cache prune --older-than 7d      # remove entries not used for 7 days (s, m, h, d, w)
    python -m tdam.cache prune --unused             # remove entries whose input files changed or are gone
    python -m tdam.cache prune --unused --dry-run   # only say what would be removed

An entry's last use is the time a cached-run request (``ensure_run``: notebooks, ``ensure_checkpoint``) last looked
at it, else its last write. ``--unused``: a run built from an upstream file (a transfer run's backbone checkpoint,
recorded in ``inputs.json``) whose file no longer exists with that content; such a run is never reused again. Both
criteria together remove entries matching either. An entry in use (its lock held by a running request) is skipped.
The embedded datasets (``runs/data``) are not cache entries of this kind and are never touched.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tdam.paths import runs_dir

__all__ = ["CacheEntry", "entries", "prune", "parse_age", "main"]

_MARKERS = ("last.pth", "config.yaml", ".lock")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class CacheEntry:
    """One cached run folder."""
    path: Path
    state: str              # finished | interrupted | empty
    size_mb: float
    last_used: float        # POSIX time
    inputs: str             # ok | changed | missing | - (no upstream file)

    @property
    def kind(self) -> str:
        return self.path.parent.name


def parse_age(text: str) -> float:
    """'7d' -> seconds (units s, m, h, d, w); ValueError naming the format otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text))
    if not m:
        raise ValueError(f"age {text!r}: expected a number and a unit, e.g. 30m, 12h, 7d, 2w (units: s m h d w)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _state(path: Path) -> str:
    if (path / "summary.json").is_file():
        return "finished"
    return "interrupted" if (path / "last.pth").is_file() else "empty"


def _inputs(path: Path) -> str:
    record = path / "inputs.json"
    if not record.is_file():
        return "-"
    from tdam.notebook.outputs import file_digest

    status = "ok"
    for item in json.loads(record.read_text()).values():
        p = Path(item["path"])
        if not p.is_file():
            return "missing"
        if file_digest(p) != item["sha256"]:
            status = "changed"
    return status


def _last_used(path: Path) -> float:
    """The latest of: the last request's lock (``ensure_run`` opens it on every look-up), the last checkpoint."""
    times = [f.stat().st_mtime for f in (path / ".lock", path / "last.pth", path / "config.yaml") if f.exists()]
    return max(times, default=path.stat().st_mtime)


def entries(root: str | Path | None = None) -> list[CacheEntry]:
    """The cached run folders under ``root`` (default ``runs/``): ``<root>/<notebook>/<run>`` folders holding a
    checkpoint, a config or a lock, oldest use first."""
    root = Path(root) if root is not None else runs_dir()
    found = []
    for path in sorted(p for p in root.glob("*/*") if p.is_dir()):
        if not any((path / m).exists() for m in _MARKERS):
            continue
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
        found.append(CacheEntry(path, _state(path), size, _last_used(path), _inputs(path)))
    return sorted(found, key=lambda e: e.last_used)


def _remove_unless_in_use(path: Path) -> bool:
    lock = path / ".lock"
    if not lock.exists():
        shutil.rmtree(path)
        return True
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(path)        # the held lock's file goes with it; a later request starts a new folder
        return True


def prune(*, older_than: float | None = None, unused: bool = False, root: str | Path | None = None,
          dry_run: bool = False, now: float | None = None) -> list[CacheEntry]:
    """Remove the entries last used more than ``older_than`` seconds ago and/or (``unused``) built from input files
    that changed or are gone; returns the entries removed (or that would be, with ``dry_run``). Entries in use are
    skipped."""
    if older_than is None and not unused:
        raise ValueError("prune: give --older-than AGE and/or --unused (nothing is removed by default)")
    now = time.time() if now is None else now
    chosen = [e for e in entries(root) if (older_than is not None and now - e.last_used > older_than)
              or (unused and e.inputs in ("changed", "missing"))]
    return chosen if dry_run else [e for e in chosen if _remove_unless_in_use(e.path)]


def _age(seconds: float) -> str:
    for unit, size in (("w", _UNITS["w"]), ("d", _UNITS["d"]), ("h", _UNITS["h"]), ("m", _UNITS["m"])):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdam.cache", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="runs folder (default: runs/ or $TDAM_RUNS)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every cached run: kind, state, size, last use, inputs")
    p = sub.add_parser("prune", help="remove old or unused cached runs")
    p.add_argument("--older-than", type=parse_age, default=None, metavar="AGE", help="e.g. 7d, 12h, 2w")
    p.add_argument("--unused", action="store_true", help="runs whose input files changed or are gone")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    args = parser.parse_args(argv)
    now = time.time()
    if args.command == "list":
        rows = entries(args.root)
        for e in rows:
            print(f"{e.kind:<20} {e.state:<11} {e.size_mb:8.1f} MB  used {_age(now - e.last_used):>4} ago  "
                  f"inputs {e.inputs:<7} {e.path}")
        print(f"{len(rows)} cached run(s), {sum(e.size_mb for e in rows):.1f} MB")
        return 0
    try:
        removed = prune(older_than=args.older_than, unused=args.unused, root=args.root, dry_run=args.dry_run,
                        now=now)
    except ValueError as e:
        parser.error(str(e))
    for e in removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {e.path} ({e.size_mb:.1f} MB)")
    print(f"{len(removed)} cached run(s) {'would be ' if args.dry_run else ''}removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
