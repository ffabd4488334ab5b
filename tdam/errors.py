"""The process contract of tdam's commands, in one place: the named errors and the exit codes of
``python -m tdam.train``, ``python -m tdam.data.convert``, ``python -m tdam.cache`` and ``python -m tdam.transfer``.

Every failure a user can cause or meet ends in one of these classes (or a data reader's
:class:`~tdam.data.errors.DatasetLayoutError` / :class:`~tdam.data.errors.BadImageError`, a non-finite loss's
:class:`NonFiniteLossError`, an ``OSError`` of the file system), and :func:`exit_code` maps each to one exit code of
the table below. A command prints the message on one line and returns the code.

====  ==================  =======================================================================================
code  name                meaning
====  ==================  =======================================================================================
0     EXIT_OK             the run finished (or there was nothing to do)
1     EXIT_NONFINITE      the loss became NaN/inf; ``last.pth`` keeps the last good state
2     EXIT_CONFIG         invalid configuration: a value, a params file, a class count, a resume that would change
                          the model or the data
3     EXIT_DATA           bad data: a dataset layout or annotation file that cannot be parsed, an unreadable image
                          (``skip_bad_images: true`` skips and counts those instead)
4     EXIT_IO             the run folder cannot be written: no space left, read-only, no permission
5     EXIT_INTERRUPTED    stopped by SIGTERM/SIGINT after saving a resumable ``last.pth``: rerun with
                          ``--resume true``
6     EXIT_BUSY           another live run holds the run folder's lock (its PID and host are named)
====  ==================  =======================================================================================
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from typing import Iterator

__all__ = [
    "EXIT_OK", "EXIT_NONFINITE", "EXIT_CONFIG", "EXIT_DATA", "EXIT_IO", "EXIT_INTERRUPTED", "EXIT_BUSY",
    "EXIT_CODES", "NonFiniteLossError", "ConfigError", "ResumeMismatchError", "ClassCountError", "RunLockedError",
    "RunWriteError", "IO_ERRNOS", "exit_code", "one_line", "writing",
]

EXIT_OK = 0
EXIT_NONFINITE = 1
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_IO = 4
EXIT_INTERRUPTED = 5
EXIT_BUSY = 6

EXIT_CODES = {
    EXIT_OK: "the run finished",
    EXIT_NONFINITE: "non-finite loss (last.pth keeps the last good state)",
    EXIT_CONFIG: "invalid configuration",
    EXIT_DATA: "bad data (layout, annotation file, unreadable image)",
    EXIT_IO: "the run folder cannot be written (no space, read-only, no permission)",
    EXIT_INTERRUPTED: "interrupted after saving a resumable checkpoint (rerun with --resume true)",
    EXIT_BUSY: "another live run holds the run folder",
}

# File-system errors that mean "this folder cannot be written", whoever raised them.
IO_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.EIO})


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the run stops and the last good checkpoint is kept."""


class ConfigError(ValueError):
    """A configuration that cannot be used: a YAML syntax error (with file, line and column), a duplicate key, a wrong
    ``base:``, ... Subclasses ValueError, like every "wrong value" error of the config checks."""


class ResumeMismatchError(ConfigError):
    """``resume`` would continue a checkpoint whose model or data differ from the config's; the message lists each
    differing field as ``field: stored -> new``."""


class ClassCountError(ConfigError):
    """The model's ``num_classes`` does not match the data's class count (both numbers and the data path named)."""


class RunLockedError(RuntimeError):
    """Another live process trains in the same run folder; ``.pid`` and ``.host`` name it."""

    def __init__(self, message: str, pid: int | None = None, host: str | None = None) -> None:
        super().__init__(message)
        self.pid, self.host = pid, host


class RunWriteError(OSError):
    """A file of the run folder could not be written (no space, read-only, no permission); ``str()`` is one line
    naming the path and the reason, ``.errno`` / ``.filename`` those of the cause."""

    def __init__(self, path: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a file-system failure while writing ``path`` (no space, read-only, no permission: :data:`IO_ERRNOS`)
    into :class:`RunWriteError` naming ``path`` (a full disk's ``write()`` error carries no file name itself)."""
    try:
        yield
    except RunWriteError:
        raise
    except OSError as e:
        if e.errno not in IO_ERRNOS:
            raise
        raise RunWriteError(str(path), e) from e


def _write_errors() -> tuple[type, ...]:
    """RunWriteError, and the checkpoint writer's CheckpointWriteError where tdam.checkpoint defines it."""
    import tdam.checkpoint

    extra = getattr(tdam.checkpoint, "CheckpointWriteError", None)
    return (RunWriteError,) if extra is None else (RunWriteError, extra)


def one_line(e: BaseException) -> str:
    """The message of ``e`` without chained tracebacks, for the CLI's single ``error:`` line (multi-line layout
    explanations are kept: they are part of the message)."""
    if isinstance(e, OSError) and not isinstance(e, _write_errors()) and e.errno in IO_ERRNOS:
        where = e.filename if e.filename is not None else "the run folder"
        return f"cannot write {where}: {e.strerror or e}"
    return str(e)


def exit_code(e: BaseException) -> int:
    """The exit code for an exception that ended a run (see the module table); unknown exceptions are not mapped
    (the caller re-raises them: a traceback is a bug report)."""
    # imported here: the tdam.data package loads torch, which the config checks and --help do without
    from tdam.data.errors import BadImageError, DatasetLayoutError

    if isinstance(e, NonFiniteLossError):
        return EXIT_NONFINITE
    if isinstance(e, RunLockedError):
        return EXIT_BUSY
    if isinstance(e, (DatasetLayoutError, BadImageError)):
        return EXIT_DATA
    if isinstance(e, _write_errors()) or (isinstance(e, OSError) and e.errno in IO_ERRNOS):
        return EXIT_IO
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(e, (ValueError, FileNotFoundError)):
        return EXIT_CONFIG
    raise TypeError(f"no exit code for {type(e).__name__}") from e
