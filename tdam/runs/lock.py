"""The run's one lock: ``<run>/.lock``, honoured by the trainer, the cached-run requests and ``prune``.

Whoever works on a run folder holds an exclusive ``fcntl.flock`` on its ``.lock`` file for as long as it works:

- the trainer (:func:`tdam.train.train`) for the whole run, without waiting: a second live run on the folder is
  refused at once with :class:`RunLockedError` naming the first one's PID and host;
- a cached-run request (``ensure_run``: notebooks, ``ensure_checkpoint``) from its look-up to the end of the training
  it starts, waiting for the holder: two kernels asking for one run train it once;
- ``python -m tdam.cache prune``, without waiting, while it removes the folder: a folder in use is skipped.

A request hands its lock down to the training it starts: taken with ``handoff=True``, the lock may be taken once
more by the same process (the trainer, in-process), and a ``torchrun`` job started by the request
(``tdam.train.launch``) inherits it through :data:`INHERIT_ENV`, naming the holder's PID. Any other second taking,
in this process or another, is refused. The file holds a JSON record ``{"pid", "host", "started"}`` of its holder; a clean release empties it,
so a record found by the next holder names a process that died (even by ``kill -9``: the kernel drops a dead
process's flock) and is reported as taken over. The file is never removed while a run lives; ``prune`` removes it
with the folder, and a waiter that then gets the lock of the removed file notices (another inode, or none) and
starts over on a new folder.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from tdam.runs.layout import LOCK_FILE
from tdam.errors import RunLockedError, writing

__all__ = ["RunLock", "INHERIT_ENV", "lock_holder", "inherit_env"]

INHERIT_ENV = "TDAM_RUN_LOCK"   # "<lock path>:<holder pid>": the lock a parent process holds for this process
_HELD: dict[str, list] = {}     # lock path -> [fd, depth, handoff]: the locks this process holds


def _read(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096).decode(errors="replace").strip()
    try:
        rec = json.loads(raw) if raw else None
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _same_file(fd: int, path: Path) -> bool:
    """The locked descriptor is still the file at ``path`` (not one that ``prune`` removed meanwhile)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _inherited(path: Path, holder: dict[str, Any] | None) -> bool:
    value = os.environ.get(INHERIT_ENV, "")
    where, _, pid = value.rpartition(":")
    return bool(where) and where == str(path) and holder is not None and str(holder.get("pid")) == pid


def inherit_env(folder: str | os.PathLike) -> dict[str, str]:
    """The environment entry that lets a child process (a torchrun job) work in run ``folder`` under the lock this
    process holds on it (ignored by the child unless this process is the lock's recorded holder)."""
    return {INHERIT_ENV: f"{(Path(folder) / LOCK_FILE).absolute()}:{os.getpid()}"}


def lock_holder(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The record of the live process holding ``folder``'s lock, None when nobody holds it (a look, not a lock)."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class RunLock:
    """``with RunLock(folder, wait=...)`` holds the run folder (see the module docstring). ``wait=False``: refuse
    at once when held (:class:`RunLockedError`); ``wait=True``: wait for the holder. ``handoff=True``: the work
    started under this hold (in this process, or a torchrun job) may take it once more."""

    def __init__(self, folder: str | os.PathLike, *, wait: bool = False, handoff: bool = False) -> None:
        self.path = (Path(folder) / LOCK_FILE).absolute()
        self.wait, self.handoff = wait, handoff
        self.previous: dict[str, Any] | None = None     # the record of a dead holder that was taken over
        self._key: str | None = None

    def acquire(self) -> "RunLock":
        key = str(self.path)
        if key in _HELD:                                # this process holds it already
            if not _HELD[key][2] or _HELD[key][1] > 1:
                raise RunLockedError(f"{self.path.parent} is in use by this process (PID {os.getpid()} on host "
                                     f"{socket.gethostname()}): a run folder is worked on once at a time",
                                     pid=os.getpid(), host=socket.gethostname())
            _HELD[key][1] += 1
            self._key = key
            return self
        while True:
            with writing(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                if _inherited(self.path, holder):      # a torchrun job started by the holder
                    return self
                holder = holder or {}
                raise RunLockedError(
                    f"{self.path.parent} is in use by another process: PID {holder.get('pid')} on host "
                    f"{holder.get('host')} (since {holder.get('started', '?')}); wait for it to finish, stop it, or "
                    f"set another `name`/`output_dir`", pid=holder.get("pid"), host=holder.get("host")) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)                                # the folder was pruned while we waited: start over
        self.previous = _read(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            with writing(self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(record).encode(), 0)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        _HELD[key] = [fd, 1, self.handoff]
        self._key = key
        return self

    @property
    def held(self) -> bool:
        return self._key is not None

    def takeover_message(self) -> str | None:
        """The one line to log when a dead holder's lock was taken over, else None."""
        if not self.previous:
            return None
        return (f"took over the stale run lock {self.path} of PID {self.previous.get('pid')} on host "
                f"{self.previous.get('host')} (started {self.previous.get('started')}): that process is gone")

    def release(self) -> None:
        if self._key is None:
            return
        entry = _HELD[self._key]
        self._key = None
        entry[1] -= 1
        if entry[1]:
            return
        fd = entry[0]
        del _HELD[str(self.path)]
        try:
            os.ftruncate(fd, 0)                         # a clean end leaves no holder record behind
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
