"""Reading checkpoint files safely: a pickle's code never runs, and damaged tensors are never returned.

Checkpoints are pickles, so every ``torch.save`` file is read with ``torch.load(weights_only=True)`` and an allow-list
of exactly the harmless extra types real training scripts put in them (:data:`SAFE_GLOBALS`). A pickle that would
import anything else (``os.system``, ``torch.hub.download_url_to_file``, a custom class, ...), in whatever pickle
protocol or opcode spelling, is refused with :class:`UnsafeCheckpointError` naming it, before any of it runs; there is
no fallback to ``weights_only=False``. Which globals a refused file needs is found by a static scan of its pickles
(:mod:`tdam.checkpoint.pickle_scan`), so "unsafe" never depends on how far torch's reader got. A truncated, damaged or
foreign file raises :class:`CorruptCheckpointError` saying what is wrong with it; a file whose tensors do not match
the content digest recorded when we wrote it (:mod:`tdam.checkpoint.digest`) raises :class:`CheckpointDigestError`
naming the damaged tensors. ``*.safetensors`` files hold no code at all; their digest is checked the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from tdam.checkpoint.digest import DIGEST_KEY, DigestCheck, check_digest
from tdam.checkpoint.pickle_scan import PickleScan, file_globals

__all__ = ["SAFE_GLOBALS", "CheckpointError", "UnsafeCheckpointError", "CorruptCheckpointError",
           "CheckpointDigestError", "read_checkpoint", "verify_digest", "allowed_global_names"]

#: Extra globals (beyond torch's weights-only defaults: tensors, dtypes, torch.device, torch.Size, OrderedDict,
#: Counter, set, bytearray, complex) that a checkpoint may contain. ``argparse.Namespace`` is the ``args`` entry of
#: checkpoints written by timm's ``train.py`` (the public TD-ResNets) and by the ConvNeXt code base's ``main.py``
#: (the public TD-ConvNeXt); unpickling it only creates an attribute bag (no ``__setstate__``, no code). Nothing else
#: is needed: the rest of those checkpoints (state dicts, optimizer / scaler states, epoch, metric, version, arch) is
#: tensors and plain python values.
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


class CheckpointError(ValueError):
    """Base class of the checkpoint errors (all are ``ValueError``: the input data is not what was expected)."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle would import/call something outside the allow-list; it was refused and nothing in it ran."""

    def __init__(self, path: str, offending: Sequence[str]) -> None:
        self.path, self.offending = path, list(offending)
        super().__init__(
            f"refusing to load {path!r}: unpickling it would use {', '.join(self.offending)}, which is not a tensor, "
            f"a plain python value or one of the allowed types ({', '.join(_qualname(g) for g in SAFE_GLOBALS)}); "
            "nothing from the file was executed. Only load pickles from sources you trust; if you do trust this one "
            "and the types are harmless, pass them as read_checkpoint(path, extra_safe_globals=[...]).")


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, damaged, or not a checkpoint at all."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot read checkpoint {path!r}: {reason}")


class CheckpointDigestError(CorruptCheckpointError):
    """The tensors do not match the content digest recorded when the file was written: ``tensors`` names the damaged
    ones (``check`` has the damaged / missing / unexpected lists)."""

    def __init__(self, path: str, check: DigestCheck) -> None:
        self.check = check
        self.tensors = check.damaged or check.missing or check.unexpected
        super().__init__(path, check.describe())


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def allowed_global_names(extra: Iterable[Any] = ()) -> set[str]:
    """``module.name`` of every global the reader lets a pickle import: torch's weights-only defaults (tensor rebuild
    functions, storages, dtypes, ``OrderedDict``, ...), :data:`SAFE_GLOBALS` and ``extra``."""
    names = {_qualname(g) for g in (*SAFE_GLOBALS, *extra)}
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        names |= set(_get_allowed_globals())
    except (ImportError, AttributeError):  # torch moved its table: only the names every torch.save file uses
        names |= {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                  "torch.FloatStorage", "torch.LongStorage", "torch.device", "torch.Size"}
    return names


def _scan(path: Path) -> PickleScan:
    try:
        return file_globals(path)
    except Exception as e:  # noqa: BLE001 - the scan must never hide the original error
        return PickleScan(globals=[], complete=False, opcodes={f"<scan failed: {type(e).__name__}>"})


def _unsupported_opcode(error: Exception) -> str | None:
    """The opcode torch's weights-only unpickler stopped at ("Unsupported operand 149" -> 'FRAME'), if that was it."""
    match = re.search(r"Unsupported operand (\d+)", str(error))
    if not match:
        return None
    op = pickletools.code2op.get(chr(int(match.group(1))))
    return op.name if op is not None else f"byte {int(match.group(1))}"


def _damage_reason(path: Path, error: Exception, scan: PickleScan) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    opcode = _unsupported_opcode(error)
    if opcode is not None and scan.complete:
        return (f"its pickle (protocol {scan.protocol}) uses the opcode {opcode}, which the safe weights-only reader "
                "does not support; the file looks intact and needs only allowed types: re-save it with "
                "torch.save's default pickle protocol (2) where it was made")
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return (f"truncated or damaged zip archive ({size} bytes, no zip central directory; torch.save writes zip "
                    f"archives, so the write or the download was probably cut short) [{_first_line(error)}]")
        return f"damaged zip archive ({_first_line(error)})"
    if head[:1] == b"\x80":
        if not scan.complete or isinstance(error, EOFError) or "EOF" in str(error):
            where = "inside a pickle" if not scan.complete else f"in the tensor data ({_first_line(error)})"
            return (f"truncated file (legacy torch.save format, {size} bytes; it ends {where}, so the write or the "
                    "download was probably cut short)")
        return f"unreadable pickle stream (legacy torch.save format, {size} bytes): {_first_line(error)}"
    return (f"not a torch.save checkpoint (starts with {head!r}; expected a zip archive or a legacy torch pickle, "
            f"or a '.safetensors' file) [{type(error).__name__}: {_first_line(error)}]")


def _first_line(error: Exception) -> str:
    """The first sentence of an error message (torch's are long), at most 200 characters."""
    text = str(error).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    line = (text.splitlines() or [type(error).__name__])[0]
    return line.split(". ", 1)[0][:200]


def verify_digest(obj: Mapping[str, Any], name: str) -> dict:
    """``obj`` without its reserved digest entry, after checking its tensors against it (:mod:`~tdam.checkpoint.
    digest`); a dict without one (a file from elsewhere) comes back unchanged. Raises :class:`CheckpointDigestError`
    naming ``name`` and the first damaged tensors."""
    obj = dict(obj)
    if DIGEST_KEY not in obj:
        return obj
    check = check_digest(obj, obj.pop(DIGEST_KEY))
    if not check.ok:
        raise CheckpointDigestError(name, check)
    return obj


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptCheckpointError(str(path), f"damaged or truncated safetensors file ({e})") from e
    if DIGEST_KEY in metadata:
        try:
            entry = json.loads(metadata.pop(DIGEST_KEY))
        except json.JSONDecodeError as e:
            raise CorruptCheckpointError(str(path), f"metadata {DIGEST_KEY!r} is not valid JSON ({e})") from e
        state = verify_digest({**state, DIGEST_KEY: entry}, str(path))
    out: dict[str, Any] = {"model": state, "metadata": metadata}
    if "model_config" in metadata:
        try:
            out["model_config"] = json.loads(metadata["model_config"])
        except json.JSONDecodeError as e:
            raise CorruptCheckpointError(str(path), f"metadata 'model_config' is not valid JSON ({e})") from e
    return out


def read_checkpoint(path: str | os.PathLike, *, extra_safe_globals: Sequence[Any] = ()) -> dict:
    """Load a checkpoint file safely and return its top-level dict (the dict that was saved: a digest entry written
    by :func:`~tdam.checkpoint.save_checkpoint` is verified and removed).

    ``*.safetensors`` files come back as ``{'model': state_dict, 'metadata': {...}, 'model_config': {...}}``
    (``model_config`` when the metadata has it). Everything else goes through ``torch.load(map_location='cpu',
    weights_only=True)`` with :data:`SAFE_GLOBALS` (+ ``extra_safe_globals``) allowed.

    Raises ``FileNotFoundError``; :class:`UnsafeCheckpointError` when unpickling would import anything else (nothing
    runs); :class:`CheckpointDigestError` when tensors do not match the recorded digest; :class:`CorruptCheckpointError`
    for truncated/damaged/foreign files (the original error is chained).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CorruptCheckpointError(str(path), "is a directory; expected a file written by torch.save or a "
                                                "'.safetensors' file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    allowed = [*SAFE_GLOBALS, *extra_safe_globals]
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged stream can fail anywhere in the parser (struct.error, ...)
        scan = _scan(path)  # unsafe or damaged: decided by what the pickles import, not by where torch stopped
        allowed_names = allowed_global_names(extra_safe_globals)
        offending = [n for n in dict.fromkeys(scan.globals) if n not in allowed_names]
        if offending:
            raise UnsafeCheckpointError(str(path), offending) from e
        raise CorruptCheckpointError(str(path), _damage_reason(path, e, scan)) from e
    if not isinstance(obj, Mapping):
        raise CorruptCheckpointError(str(path), f"holds a {type(obj).__name__}, expected a dict (a checkpoint or a "
                                                "state dict)")
    return verify_digest(obj, str(path))
