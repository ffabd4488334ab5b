"""Errors raised by the data readers.

* :class:`DatasetLayoutError` -- a dataset root that does not exist or does not have the on-disk layout of the real
  dataset. It subclasses both :class:`FileNotFoundError` and :class:`ValueError`, so either ``except`` catches it; the
  message names the path that was missing/wrong and spells out the layout the reader expects.
* :class:`BadImageError` -- an image file that cannot be decoded (corrupt, truncated, not an image). Subclasses
  :class:`OSError` (like PIL's own ``UnidentifiedImageError``); the message names the file.
* :class:`BadRecordError` -- a record of a data file that cannot be used: a damaged tar shard or parquet file, a
  shard sample without its label, a label that is not an integer or lies outside the class range. Subclasses
  :class:`ValueError`; the message names the file and the sample key or row.

The commands map all three to exit code 3 (:mod:`tdam.errors`).
"""
from __future__ import annotations

import re
from pathlib import Path

__all__ = ["DatasetLayoutError", "BadImageError", "BadRecordError", "layout_error"]


class DatasetLayoutError(FileNotFoundError, ValueError):
    """A dataset root is missing or its layout differs from the real dataset's (see the message for the layout)."""


class BadImageError(OSError):
    """An image file could not be decoded; ``.path`` is the file."""

    def __init__(self, path: str | Path, cause: BaseException | None = None) -> None:
        path = str(path)
        # re-raised from a DataLoader worker: torch passes its whole report ("Caught BadImageError in DataLoader
        # worker ... Original Traceback ...") as the one argument; keep the file name and reason of the original
        found = re.findall(r"BadImageError: cannot read image file (.+?)(?:: (.*))?$", path, flags=re.M)
        if "\n" in path and found:
            path, why = found[-1][0], (f": {found[-1][1]}" if found[-1][1] else "")
        else:
            why = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        self.path = path
        super().__init__(f"cannot read image file {self.path}{why}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (BadImageError, (self.path,))


class BadRecordError(ValueError):
    """A record of a data file cannot be used (see the module docstring); the message names the file and record."""


def layout_error(kind: str, path: str | Path, problem: str, layout: str) -> DatasetLayoutError:
    """Build a :class:`DatasetLayoutError` whose message names ``path`` and the expected ``layout``."""
    return DatasetLayoutError(
        f"{kind}: {problem}: {path}\nExpected layout under the dataset root:\n{layout.rstrip()}"
    )
