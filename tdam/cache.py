"""``python -m tdam.cache``: list and prune the runs under ``runs/`` (``$TDAM_RUNS``); no manual clean-up.

    python -m tdam.cache list                       # every run: state, epochs, profile, train_on, size, last use
    python -m tdam.cache prune --older-than 7d      # remove runs not used for 7 days (s, m, h, d, w)
    python -m tdam.cache prune --unused             # remove runs whose input files changed or are gone
    python -m tdam.cache prune --unused --dry-run   # only say what would be removed

A run in use (a training, a notebook's request: its ``.lock`` held) is shown as such and never removed. The states
(finished, incomplete, interrupted, empty, damaged) are computed from the run's files (:mod:`tdam.runs.state`).
Exit codes (:mod:`tdam.errors`): 0 done, 2 a wrong option or ``--root``, 4 a run that cannot be removed (no
permission), 70 a bug (one ``error:`` line each).
"""
from __future__ import annotations

import argparse
import sys
import time

from tdam.errors import run_command
from tdam.runs.catalog import AGE_UNITS, entries, parse_age, prune

__all__ = ["main"]


def _age(seconds: float) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds >= AGE_UNITS[unit]:
            return f"{seconds / AGE_UNITS[unit]:.0f}{unit}"
    return f"{seconds:.0f}s"


def _line(e, now: float) -> str:
    state = "in use" if e.in_use else e.state.state
    f = e.facts
    return (f"{e.kind:<17} {state:<11} {e.state.progress:>7}  {str(f['profile']):<7} {str(f['train_on']):<14} "
            f"{e.size_mb:8.1f} MB  used {_age(now - e.last_used):>4} ago  inputs {e.inputs:<10} "
            f"{e.path.name}" + (f"  (continues {f['parent']})" if f["parent"] else ""))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tdam.cache", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--root", default=None, help="runs folder (default: runs/ or $TDAM_RUNS)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every run: kind, state, epochs trained/planned, profile, train_on, size, last use")
    p = sub.add_parser("prune", help="remove old or unused runs (never one in use)")
    p.add_argument("--older-than", type=parse_age, default=None, metavar="AGE", help="e.g. 7d, 12h, 2w")
    p.add_argument("--unused", action="store_true", help="runs whose input files changed or are gone")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    return parser


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)      # a wrong option: argparse's one-line usage error, exit 2
    now = time.time()
    if args.command == "list":
        rows = entries(args.root)
        if rows:
            print(f"{'kind':<17} {'state':<11} {'epochs':>7}  {'profile':<7} {'train_on':<14} {'size':>11}  "
                  f"{'last use':<13} {'inputs':<17} run")
        for e in rows:
            print(_line(e, now))
        print(f"{len(rows)} run(s), {sum(e.size_mb for e in rows):.1f} MB")
        return 0
    removed, busy = prune(older_than=args.older_than, unused=args.unused, root=args.root, dry_run=args.dry_run,
                          now=now)
    for e in removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {e.path} ({e.size_mb:.1f} MB)")
    for e in busy:
        print(f"kept {e.path}: in use by PID {(e.holder or {}).get('pid')} on {(e.holder or {}).get('host')}")
    print(f"{len(removed)} run(s) {'would be ' if args.dry_run else ''}removed"
          + (f", {len(busy)} in use kept" if busy else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tdam.cache``; returns the exit code."""
    return run_command(_main, argv, prog="python -m tdam.cache")


if __name__ == "__main__":
    sys.exit(main())
