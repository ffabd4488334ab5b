"""The run folder's lock: one live training process per run folder.

``<run>/.run.lock`` is held with ``fcntl.flock`` (non-blocking, exclusive) for the whole run and holds a JSON record
``{"pid", "host", "started"}`` of its holder. A second process that starts on the same folder is refused at once with
:class:`~tdam.errors.RunLockedError` naming the first one's PID and host. The kernel drops a flock when its
process dies (even by ``kill -9``), so a lock file left by a dead run is taken over, with a message naming the dead
holder. The file itself is never removed (removing it would let two processes lock two different files).

This lock is separate from :mod:`tdam.train.cache`'s blocking ``<run>/.lock`` (which serialises cache look-ups):
``ensure_run`` takes that one, then :func:`tdam.train.train` takes this one without waiting, so they cannot
deadlock.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from tdam.errors import RunLockedError, writing

__all__ = ["RunLock", "LOCK_FILE"]

LOCK_FILE = ".run.lock"


class RunLock:
    """``with RunLock(run_dir):`` holds the run folder for this process (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        self.previous: dict[str, Any] | None = None     # the record of a dead holder that was taken over

    def _read(self, fd: int) -> dict[str, Any] | None:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096).decode(errors="replace").strip()
        try:
            rec = json.loads(raw) if raw else None
        except ValueError:
            return None
        return rec if isinstance(rec, dict) else None

    def acquire(self) -> "RunLock":
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd) or {}
            os.close(fd)
            pid, host = holder.get("pid"), holder.get("host")
            raise RunLockedError(
                f"{self.path.parent} is in use by another run: PID {pid} on host {host} (started "
                f"{holder.get('started', '?')}); wait for it to finish, stop it, or set another `name`/`output_dir`",
                pid=pid, host=host) from None
        self._fd = fd
        self.previous = self._read(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with writing(self.path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            os.fsync(fd)
        return self

    def takeover_message(self) -> str | None:
        """The one line to log when a dead holder's lock was taken over, else None."""
        if not self.previous:
            return None
        return (f"took over the stale run lock {self.path} of PID {self.previous.get('pid')} on host "
                f"{self.previous.get('host')} (started {self.previous.get('started')}): that process is gone")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)                   # a clean end leaves no holder record behind
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
