"""Writing checkpoints atomically: ``torch.save`` files that :func:`~tdam.checkpoint.read_checkpoint` reads back, and
weights-only ``.safetensors`` exports, both with the content digest of their tensors (:mod:`tdam.checkpoint.digest`).

A crash or kill at any moment leaves either the previous file or the complete new one: the file is written as a
temporary ``.<name>.<pid>.<hex>.tmp`` beside it and renamed over it. A process killed mid-write (``kill -9``) leaves
its temporary behind; :func:`remove_stale_temps` deletes those of dead processes (a run calls it at start). A write
that fails for lack of space or permission raises :class:`CheckpointWriteError` (an ``OSError`` keeping the errno)
with a one-line message naming the path and the cause, and leaves no temporary file.
"""
from __future__ import annotations

import errno
import json
import os
import re
import uuid
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import torch
import torch.nn as nn

from tdam.checkpoint.digest import DIGEST_KEY, is_digest, make_digest
from tdam.checkpoint.layouts import extract_state_dict, unwrap_model
from tdam.checkpoint.read import SAFE_GLOBALS, _qualname

__all__ = ["CheckpointWriteError", "save_checkpoint", "export_safetensors", "remove_stale_temps"]

# errno -> the cause in words; other OSErrors keep their strerror
_CAUSES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only or not writable (read-only file system)",
           errno.EACCES: "read-only or not writable (permission denied)",
           errno.EPERM: "read-only or not writable (operation not permitted)"}
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<hex>[0-9a-f]{8})\.tmp$")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only folder, ...): ``errno`` and ``filename`` as in the
    ``OSError`` that caused it (chained), and a one-line message naming the path and the cause. Nothing was left
    behind: the previous file, if any, is intact and no temporary file remains."""

    def __init__(self, path: Path, cause: OSError) -> None:
        words = _CAUSES.get(cause.errno, cause.strerror or str(cause))
        name = errno.errorcode.get(cause.errno, "") if cause.errno else ""
        super().__init__(cause.errno, words, str(path))
        self.message = f"cannot write checkpoint {str(path)!r}: {words}" + (f" [{name}]" if name else "")

    def __str__(self) -> str:
        return self.message


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error`` (itself, or in its chain: torch.save reports a failed write as a RuntimeError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno is not None:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None

_PLAIN = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.device, torch.dtype, torch.Size)


def _check_loadable(obj: Any, where: str = "obj") -> None:
    """Raise ``ValueError`` naming the first value that ``read_checkpoint`` would refuse (not plain / tensor)."""
    kind = type(obj)
    if kind in _PLAIN or kind in (torch.Tensor, nn.Parameter):
        return
    if kind in (dict, OrderedDict, Counter):
        for k, v in obj.items():
            _check_loadable(k, f"{where} key {k!r}")
            _check_loadable(v, f"{where}[{k!r}]")
        return
    if kind in (list, tuple, set):
        for i, v in enumerate(obj):
            _check_loadable(v, f"{where}[{i}]")
        return
    if kind in SAFE_GLOBALS:
        _check_loadable(vars(obj), f"{where}.__dict__")
        return
    raise ValueError(f"cannot save {where}: a {_qualname(kind)}, which read_checkpoint would refuse as unsafe; "
                     "checkpoints hold only tensors and plain python values (dict, list, tuple, str, numbers, None) "
                     "- convert it first (e.g. numpy array -> torch.from_numpy / .tolist())")


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through a temp file in the same folder (flush, fsync, os.replace, fsync the folder): a crash or
    kill at any moment leaves either the previous file or the complete new one. An ``OSError`` on the way (also one
    that torch.save wraps in a RuntimeError) becomes :class:`CheckpointWriteError`; the temp file is removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass
                raise
            _fsync_dir(path.parent)
        except OSError as e:
            raise CheckpointWriteError(path, e) from e
    except CheckpointWriteError:
        raise
    except Exception as e:  # noqa: BLE001 - torch.save turns a failed write into "RuntimeError ... unexpected pos"
        cause = _os_error(e)
        if cause is None:
            raise
        raise CheckpointWriteError(path, cause) from e


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch; Linux ``/proc``), or None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 (starttime), counted after the ')' that ends the command name
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _writer_alive(pid: int, written: float) -> bool:
    """Whether the process that wrote a temp file (``pid``, file last written at ``written``) may still be writing
    it: the pid exists and (where the start time is known) started before the file was last written."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    started = _process_start(pid)
    return started is None or started <= written + 1.0  # a later start means the pid was reused


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files ``.<name>.<pid>.<hex>.tmp`` that :func:`save_checkpoint` / :func:`export_safetensors`
    left in ``folder`` when their process was killed mid-write (the pid is gone, or was reused by a process started
    after the file was written); temps of live writers stay. Returns the deleted paths. Assumes the writers ran on
    this host (a run folder has one writer at a time)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP.match(entry.name)
        if not match or not entry.is_file():
            continue
        try:
            written = entry.stat().st_mtime
        except FileNotFoundError:
            continue
        if not _writer_alive(int(match["pid"]), written):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def save_checkpoint(obj: Mapping[str, Any] | nn.Module, path: str | os.PathLike) -> Path:
    """Save a checkpoint dict, or a model, with ``torch.save``, atomically (see :func:`_atomic_write`); returns the
    path.

    A model is saved as ``{'model': state_dict, 'model_config': model.model_config, 'tdam_version': ...}``, which
    ``tdam.load_model(path)`` rebuilds; it needs the ``model_config`` that ``tdam.create_model`` sets (and
    ``tdam.add_td`` keeps when create_model can rebuild the converted model), otherwise ``ValueError`` says so.
    A dict may hold only what :func:`read_checkpoint` reads back (tensors, plain python values and containers,
    ``argparse.Namespace``); anything else raises ``ValueError`` naming where it is, before the file is touched. The
    file also holds the digest of every tensor under the reserved key ``"tdam_digest"`` (:mod:`~tdam.checkpoint.
    digest`), which ``read_checkpoint`` verifies and removes. Raises :class:`CheckpointWriteError` when the file
    cannot be written (disk full, read-only folder)."""
    if isinstance(obj, nn.Module):
        obj = _model_checkpoint(obj)
    path = Path(path)
    if path.suffix == ".safetensors":
        raise ValueError(f"{str(path)!r}: save_checkpoint writes torch.save files; use export_safetensors for "
                         "weights-only .safetensors files")
    if not isinstance(obj, Mapping):
        raise ValueError(f"save_checkpoint expects a checkpoint dict or a model, got {type(obj).__name__}")
    if DIGEST_KEY in obj and not is_digest(obj[DIGEST_KEY]):
        raise ValueError(f"cannot save: the top-level key {DIGEST_KEY!r} is reserved for the content digest that "
                         "save_checkpoint records; rename that entry")
    _check_loadable(obj)
    obj = {**{k: v for k, v in obj.items() if k != DIGEST_KEY}, DIGEST_KEY: make_digest(obj)}
    _atomic_write(path, lambda f: torch.save(obj, f))
    return path


def _tensors_for_export(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state_dict, nn.Module):
        sd = unwrap_model(model_or_state_dict).state_dict()
    else:
        sd, _layout = extract_state_dict(model_or_state_dict)
    out, seen = {}, set()
    for k, v in sd.items():
        v = v.detach().to("cpu").contiguous()
        if v.numel():
            ptr = v.untyped_storage().data_ptr()
            if ptr in seen:  # safetensors refuses tensors that share memory (tied weights, views)
                v = v.clone()
            seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


def export_safetensors(model_or_state_dict: nn.Module | Mapping[str, Any], path: str | os.PathLike,
                       metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the weights (only) to a ``.safetensors`` file, atomically; returns the path.

    Metadata (string -> string in the file): ``format='pt'``, ``tdam_version``, ``model_config`` (JSON; taken from
    ``model.model_config`` for a model, overridable in ``metadata``) and the entries of ``metadata`` (non-strings are
    JSON-encoded), and ``tdam_digest``, the content digest of the tensors (JSON; verified on reading). Raises
    :class:`CheckpointWriteError` when the file cannot be written. Accepts a model, a state dict, or a checkpoint
    dict (its weights are found as in :func:`extract_state_dict`). ``load_checkpoint`` / ``load_model`` read the file back (by its suffix)."""
    from safetensors.torch import save as st_save

    from tdam import __version__

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{str(path)!r}: a safetensors export must end in '.safetensors'")
    meta: dict[str, Any] = {"format": "pt", "tdam_version": __version__}
    config = getattr(model_or_state_dict, "model_config", None)
    if config is None and isinstance(model_or_state_dict, Mapping):
        config = model_or_state_dict.get("model_config")
    if isinstance(config, Mapping):
        meta["model_config"] = dict(config)
    meta.update(metadata or {})
    if DIGEST_KEY in meta:
        raise ValueError(f"metadata key {DIGEST_KEY!r} is reserved for the content digest export_safetensors records")
    tensors = _tensors_for_export(model_or_state_dict)
    meta[DIGEST_KEY] = make_digest(tensors)
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in meta.items()}
    data = st_save(tensors, metadata=meta)
    _atomic_write(path, lambda f: f.write(data))
    return path


def _model_checkpoint(model: nn.Module) -> dict[str, Any]:
    """A model's checkpoint dict for :func:`save_checkpoint`: its weights and the ``model_config`` that
    ``tdam.load_model`` rebuilds it from (``tdam.create_model(**model_config)``)."""
    from tdam import __version__

    model = unwrap_model(model)
    config = getattr(model, "model_config", None)
    if not isinstance(config, Mapping):
        raise ValueError(
            f"save_checkpoint(model, path): this {type(model).__name__} has no model_config, which tdam.load_model "
            "needs to rebuild it (tdam.create_model sets it; tdam.add_td keeps it only on a create_model model that "
            "create_model can rebuild). Save the weights alone with save_checkpoint({'model': model.state_dict()}, "
            "path), then build the model the same way in your code (e.g. torchvision's resnet50 + tdam.add_td) and "
            "call tdam.load_checkpoint(model, path)")
    return {"model": model.state_dict(), "model_config": dict(config), "tdam_version": __version__}
