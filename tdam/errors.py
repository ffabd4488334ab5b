"""The process contract of tdam's commands, in one place: the exit codes of ``python -m tdam.train``,
``python -m tdam.data.convert``, ``python -m tdam.cache`` and ``python -m tdam.transfer``, the named errors they end
in, and :func:`run_command`, the wrapper every command's ``main`` runs in.

Every failure a user can cause or meet ends in one of these classes (or a data reader's
:class:`~tdam.data.errors.DatasetLayoutError` / :class:`~tdam.data.errors.BadImageError` /
:class:`~tdam.data.errors.BadRecordError`, a non-finite loss's :class:`NonFiniteLossError`, an ``OSError`` of the
file system), and :func:`exit_code` maps each to one exit code of the table below. A command prints the message on
one ``error:`` line (no traceback) and returns the code. Anything else is a bug in tdam: :func:`run_command` prints a
one-line summary, writes the traceback to the run's ``train.log`` (or, where there is no run, to a file it names) and
exits with :data:`EXIT_INTERNAL`.

====  ==================  =======================================================================================
code  name                meaning
====  ==================  =======================================================================================
0     EXIT_OK             done (or there was nothing to do)
1     EXIT_NONFINITE      the loss became NaN/inf; ``last.pth`` keeps the last good state (only this)
2     EXIT_CONFIG         invalid configuration or arguments: a value, a params file, a class count, a resume that
                          would change the model or the data, an output that exists
3     EXIT_DATA           bad data: a dataset layout, an index or annotation file that cannot be parsed, a shard,
                          parquet file, sample or label that cannot be used (file and record named), an unreadable
                          image (``skip_bad_images: true`` skips and counts those instead)
4     EXIT_IO             the output cannot be written: no space left, read-only, no permission, a file where a
                          folder must be (the path is named)
5     EXIT_INTERRUPTED    stopped by SIGTERM/SIGINT; the trainer saved a resumable ``last.pth`` (rerun with
                          ``--resume true``), the converter removed its partial output (rerun the command)
6     EXIT_BUSY           another live process holds the run folder's lock (its PID and host are named)
70    EXIT_INTERNAL       a bug in tdam (BSD sysexits' EX_SOFTWARE): the traceback is in the file the message
                          names; please report it with that file
====  ==================  =======================================================================================
"""
from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

__all__ = [
    "EXIT_OK", "EXIT_NONFINITE", "EXIT_CONFIG", "EXIT_DATA", "EXIT_IO", "EXIT_INTERRUPTED", "EXIT_BUSY",
    "EXIT_INTERNAL", "EXIT_CODES", "NonFiniteLossError", "ConfigError", "ResumeMismatchError", "ClassCountError",
    "RunLockedError", "RunWriteError", "MissingDependencyError", "IO_ERRNOS", "exit_code", "one_line", "writing",
    "run_command",
]

EXIT_OK = 0
EXIT_NONFINITE = 1
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_IO = 4
EXIT_INTERRUPTED = 5
EXIT_BUSY = 6
EXIT_INTERNAL = 70

EXIT_CODES = {   # code -> meaning in a few words (the module table says more)
    EXIT_OK: "done",
    EXIT_NONFINITE: "non-finite loss (last.pth keeps the last good state)",
    EXIT_CONFIG: "invalid configuration or arguments",
    EXIT_DATA: "bad data (file and record named)",
    EXIT_IO: "the output cannot be written (no space, read-only, no permission)",
    EXIT_INTERRUPTED: "stopped by a signal; resumable",
    EXIT_BUSY: "another live process holds the run folder",
    EXIT_INTERNAL: "internal error: a bug in tdam (traceback written to a file)",
}

# File-system errors that mean "this output cannot be written", whoever raised them: no space, read-only,
# no permission, and a file standing where a folder must be (or the reverse).
IO_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.EIO,
                       errno.EEXIST, errno.ENOTDIR, errno.EISDIR})


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the run stops and the last good checkpoint is kept."""


class ConfigError(ValueError):
    """A configuration that cannot be used: a YAML syntax error (with file, line and column), a duplicate key, a wrong
    ``base:``, an output that exists, ... Subclasses ValueError, like every "wrong value" error of the config
    checks."""


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


class MissingDependencyError(ImportError):
    """An optional dependency that the requested feature needs is not installed; the message names the extra that
    installs it (a configuration error: exit code 2)."""


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
    import tdam.checkpoint   # here: tdam.checkpoint loads torch, which --help and the config checks do without

    extra = getattr(tdam.checkpoint, "CheckpointWriteError", None)
    return (RunWriteError,) if extra is None else (RunWriteError, extra)


# torch re-raises an error of a DataLoader worker as ``type(e)(report)``, the report being "Caught <Name> in DataLoader
# worker process <n>.\nOriginal Traceback (most recent call last):\n...\n<module>.<Name>: <message>"
_WORKER_REPORT = re.compile(r"^Caught (?P<name>\w+) in DataLoader worker process \d+\.\nOriginal Traceback")


def unwrap_worker_message(text: str) -> str:
    """The original message of an error that torch re-raised from a DataLoader worker (``text`` unchanged for any
    other message): the text after the last ``<Name>: `` line of the worker's traceback."""
    found = _WORKER_REPORT.match(text)
    if not found:
        return text
    heads = list(re.finditer(rf"^(?:[\w.]+\.)?{found['name']}: ", text, flags=re.M))
    if not heads:
        return text
    message = text[heads[-1].end():].strip()
    if found["name"] == "KeyError" and len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
        message = message[1:-1]          # KeyError's str() quotes its argument
    return message


def one_line(e: BaseException) -> str:
    """The message of ``e`` for a command's single ``error:`` line: without chained tracebacks, unwrapped from a
    DataLoader worker's report (multi-line layout explanations are kept: they are part of the message)."""
    if isinstance(e, OSError) and not isinstance(e, _write_errors()) and e.errno in IO_ERRNOS:
        where = e.filename if e.filename is not None else "the output folder"
        blocked = " (a file stands where a folder is needed)" if e.errno in (errno.EEXIST, errno.ENOTDIR) else ""
        return f"cannot write {where}: {e.strerror or e}{blocked}"
    text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    return unwrap_worker_message(text)


def exit_code(e: BaseException) -> int:
    """The exit code for an exception that ended a command (see the module table); unknown exceptions are not
    mapped: ``TypeError`` (:func:`run_command` reports those as :data:`EXIT_INTERNAL`, a bug)."""
    # imported here: the tdam.data package loads torch, which the config checks and --help do without
    from tdam.data.errors import BadImageError, BadRecordError, DatasetLayoutError

    if isinstance(e, NonFiniteLossError):
        return EXIT_NONFINITE
    if isinstance(e, RunLockedError):
        return EXIT_BUSY
    if isinstance(e, (DatasetLayoutError, BadImageError, BadRecordError)):
        return EXIT_DATA
    if isinstance(e, _write_errors()) or (isinstance(e, OSError) and e.errno in IO_ERRNOS):
        return EXIT_IO
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(e, (ValueError, FileNotFoundError, MissingDependencyError)):
        return EXIT_CONFIG
    raise TypeError(f"no exit code for {type(e).__name__}") from e


def traceback_file(prog: str) -> Path:
    """Where :func:`run_command` writes the traceback of an internal error when there is no run log: a new file in
    the temporary folder, named by the command, the time and the process."""
    slug = re.sub(r"[^\w]+", "-", prog.removeprefix("python -m ")).strip("-")
    return Path(tempfile.gettempdir()) / f"tdam-{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.traceback"


def _report_internal(e: BaseException, prog: str, log_path: Path | None) -> str:
    """Write the traceback of ``e`` to ``log_path`` (appended; when its folder exists) or to :func:`traceback_file`;
    the one-line summary that names the file."""
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    stamp = f"{time.strftime('%Y-%m-%d %H:%M:%S')} internal error in {prog} (pid {os.getpid()}):\n"
    targets = ([log_path] if log_path is not None and log_path.parent.is_dir() else []) + [traceback_file(prog)]
    for path in targets:
        try:
            with open(path, "a") as f:
                f.write(stamp + text)
        except OSError:
            continue
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return (f"internal error (a bug in tdam): {type(e).__name__}{': ' + first if first else ''}; the traceback "
                f"is in {path}: please report it as a bug, with that file and the command line")
    sys.stderr.write(text)               # no file could be written: the traceback is the only trace left
    return f"internal error (a bug in tdam): {type(e).__name__}: please report it as a bug, with the traceback above"


def run_command(fn: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, *, prog: str,
                log_path_fn: Callable[[], Path | None] | None = None,
                explain: Callable[[BaseException], str | None] | None = None) -> int:
    """Run a command's body ``fn(argv)`` under the exit-code contract of the module table and return its code.

    A failure of the table prints ``error: <message>`` on stderr, one line naming the file, value or path
    (``explain(e)``, when it returns a message, replaces :func:`one_line`'s: a command's own hint). Any other
    exception is a bug: one ``error: internal error ...`` line, the traceback appended to ``log_path_fn()`` (the
    run's log, when its folder exists) or written to a new file of the temporary folder, and
    :data:`EXIT_INTERNAL`. ``SystemExit`` (argparse's usage errors: 2) passes through."""
    try:
        return fn(argv)
    except SystemExit:
        raise
    except BaseException as e:         # KeyboardInterrupt included: the signals' exit code
        try:
            code = exit_code(e)
        except TypeError:
            code = EXIT_INTERNAL
        if code == EXIT_INTERNAL:
            try:
                log_path = log_path_fn() if log_path_fn is not None else None
            except Exception:                   # the run folder is unknown: the temporary file then
                log_path = None
            message = _report_internal(e, prog, log_path)
        else:
            message = (explain(e) if explain is not None else None) or one_line(e) or type(e).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
        return code
