"""What a run folder holds: the file names every writer and reader of runs shares, and the run record.

A run folder (``runs/<kind>/<folder>``; ``kind`` is :data:`IMAGENET_KIND` for the ImageNet runs of notebooks 01-09,
:data:`TRANSFER_KIND` for the WS-DAN / ASL runs of notebook 07) holds, once finished:

==========================  =================================================================================
``run.json``                the run record (:func:`write_record`): its identity, what it was asked to be (the
                            config that changes the weights), the run it continues (``parent``), creation time
``config.yaml``             the resolved config in force; ``config_history.jsonl`` one line per start / resume
``last.pth``                the last state (weights, optimizer, scheduler, RNG, metrics): resumable
``best.pth``                the best epoch's state (a hard link of that epoch's ``last.pth``); ``best_ema.pth``
                            the same by the EMA weights' evaluation (runs with ``model_ema``)
``best.safetensors``        the best weights only, for sharing
``summary.json``            final and best metrics, config, environment
``curves.png`` / ``.pdf``   loss and accuracy per epoch
``metrics.csv`` / ``.jsonl``one row per epoch; ``env.json`` versions and device; ``train.log``; ``tb/``
``.lock``                   the run's one lock (:mod:`tdam.runs.lock`), held by whoever works on the run
==========================  =================================================================================

:data:`FINAL_OUTPUTS` are the files a finished run must have (:mod:`tdam.runs.state`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

__all__ = ["IMAGENET_KIND", "TRANSFER_KIND", "KINDS", "LAST_FILE", "BEST_FILE", "BEST_EMA_FILE", "SAFETENSORS_FILE",
           "SUMMARY_FILE", "CURVES", "CONFIG_FILE", "ENV_FILE", "METRICS", "LOG_FILE", "RECORD_FILE", "LOCK_FILE",
           "INPUTS_FILE", "FINAL_OUTPUTS", "file_digest", "plain_json", "write_text_atomic", "write_json_atomic",
           "write_record", "read_record", "link_file"]

IMAGENET_KIND = "01_train_imagenet"      # runs/<kind>/: the ImageNet runs (notebook 01 trains them)
TRANSFER_KIND = "07_transfer"            # the WS-DAN / ASL transfer runs of notebook 07
KINDS = (IMAGENET_KIND, TRANSFER_KIND)

LAST_FILE, BEST_FILE, SAFETENSORS_FILE = "last.pth", "best.pth", "best.safetensors"
BEST_EMA_FILE = "best_ema.pth"   # the best epoch by the EMA weights' evaluation (runs with model_ema)
SUMMARY_FILE, CONFIG_FILE, ENV_FILE, LOG_FILE = "summary.json", "config.yaml", "env.json", "train.log"
CURVES = ("curves.png", "curves.pdf")
METRICS = ("metrics.csv", "metrics.jsonl")
RECORD_FILE = "run.json"         # the run record: identity, request, parent
LOCK_FILE = ".lock"              # the run's one lock
INPUTS_FILE = "inputs.json"      # upstream files a run was built from (path + SHA-256 prefix): `--unused` in prune

# What a finished run has: a run whose last.pth holds its final epoch but lacks one of these is completed (written
# without training) by the next request for it. best.pth / best.safetensors exist when the run validated.
FINAL_OUTPUTS = (SUMMARY_FILE, *CURVES, *METRICS)


def file_digest(path: str | os.PathLike, n: int = 12) -> str:
    """First ``n`` hex digits of the file's SHA-256 (streamed in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def plain_json(obj: Any) -> Any:
    """``obj`` as JSON would read it back (tuples -> lists, paths -> strings, sorted keys): the form identities and
    records are compared in."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file in the same folder, then ``os.replace``): a reader
    sees the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)                  # mkstemp's 0600 would hide the run's files from the group
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (sorted keys; paths and other objects as strings) atomically."""
    return write_text_atomic(path, json.dumps(plain_json(obj), indent=1, sort_keys=True) + "\n")


def write_record(folder: str | os.PathLike, *, identity: str, kind: str, request: Mapping[str, Any],
                 parent: Mapping[str, Any] | None = None) -> Path:
    """Write ``run.json``: the run's identity (the hash in its folder name), its kind, the request that names it
    (the config values that change the weights) and, for a run that continues another, ``parent`` (``folder``,
    ``identity``, ``epoch``: where it branched off). Written once, before the run trains; never rewritten."""
    record = {"identity": identity, "kind": kind, "request": dict(request), "parent": dict(parent) if parent else None,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return write_json_atomic(Path(folder) / RECORD_FILE, record)


def read_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The run record of ``folder`` (``run.json``), None when there is none; a damaged record raises ValueError naming
    the file."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: damaged run record ({e})") from None
    if not isinstance(record, dict) or "identity" not in record:
        raise ValueError(f"{path}: not a run record (no 'identity')")
    return record


def link_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """``dst`` becomes the same file as ``src``, atomically: a hard link swapped in (no second write; checkpoints are
    always replaced by new files, never written in place, so the link keeps this version), else -- another file
    system, or no hard links -- a copy swapped in."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst
