"""Folders written whole or not at all, shared by the tdam-shapes generator and the shard / parquet converter.

A folder ``<parent>/<name>`` is built in a temporary sibling ``<parent>/.<name>.tmp-<pid>-<hex>`` and renamed into
place when complete, so a reader never sees half of it. A writer that is killed (``kill -9``, a lost node) cannot
remove its temporary folder; the next writer of the same target removes the temporary folders of processes that no
longer exist (:func:`remove_stale_staging`), as the trainer does for a killed checkpoint write. A live writer's
folder is never touched (a pid reused by another process keeps its folder until that process ends too; pids are
taken to be of this host, where the target's parent folder is written).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

__all__ = ["staging_dir", "remove_stale_staging"]


def staging_dir(target: Path) -> Path:
    """A new, empty temporary sibling of ``target`` owned by this process (created here)."""
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Delete the temporary siblings of ``target`` left by processes that no longer exist; returns them."""
    removed = []
    for p in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
