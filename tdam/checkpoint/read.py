"""Reading checkpoint files safely: a pickle's code never runs.

Checkpoints are pickles, so every ``torch.save`` file is read with ``torch.load(weights_only=True)`` and an allow-list
of exactly the harmless extra types real training scripts put in them (:data:`SAFE_GLOBALS`). A pickle that would
call anything else (``os.system``, a custom class, ...) is refused with :class:`UnsafeCheckpointError` before any of
it runs; there is no fallback to ``weights_only=False``. A truncated, damaged or foreign file raises
:class:`CorruptCheckpointError` saying what is wrong with it. ``*.safetensors`` files hold no code at all.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

__all__ = ["SAFE_GLOBALS", "CheckpointError", "UnsafeCheckpointError", "CorruptCheckpointError", "read_checkpoint"]

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


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}


def _static_pickle_globals(data: bytes, max_pickles: int = 5) -> tuple[list[str], bool]:
    """Names of the globals that the consecutive pickles at the start of ``data`` import, found by disassembling them
    (``pickletools``; nothing is executed). Returns (names, complete), ``complete`` False when the stream ended or
    broke inside a pickle. A legacy ``torch.save`` file is 5 pickles followed by raw storage bytes."""
    stream, names = io.BytesIO(data), []
    for _ in range(max_pickles):
        if stream.tell() >= len(data):
            return names, True
        strings: list[str | None] = []
        memo: dict[int, str | None] = {}
        last: str | None = None
        try:
            for op, arg, _pos in pickletools.genops(stream):
                pushed = None
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif op.name in _STRING_OPS:
                    pushed = arg if isinstance(arg, str) else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed = memo.get(int(arg))
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = last
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = last
                if pushed is not None:
                    strings.append(pushed)
                last = pushed if op.name not in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE") else last
        except ValueError:  # pickletools: truncated stream / bad opcode
            return names, False
    return names, True


def _unsafe_names(path: Path, error: Exception, allowed: Iterable[Any]) -> list[str]:
    """The globals that made the weights-only unpickler refuse ``path`` (empty: the refusal is damage, not code)."""
    allowed_names = {_qualname(g) for g in allowed}
    if zipfile.is_zipfile(path):
        with torch.serialization.safe_globals(list(allowed)):
            found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        return sorted(set(found) - allowed_names)
    names, _complete = _static_pickle_globals(path.read_bytes())
    named = re.findall(r"GLOBAL ([\w.]+)", str(error))  # the one torch stopped at, if the disassembly saw it whole
    harmless = ("torch.", "collections.", "_codecs.", "builtins.set", "builtins.bytearray", "builtins.complex")
    out = {n for n in named if n in names}
    out |= {n for n in names if not n.startswith(harmless) and n not in allowed_names}
    return sorted(out)


def _damage_reason(path: Path, error: Exception) -> str:
    head = path.read_bytes()[:8] if path.is_file() else b""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return (f"truncated or damaged zip archive ({size} bytes, no zip central directory; torch.save writes zip "
                    f"archives, so the write or the download was probably cut short) [{_first_line(error)}]")
        return f"damaged zip archive ({_first_line(error)})"
    if head[:1] == b"\x80":
        _names, complete = _static_pickle_globals(path.read_bytes())
        if not complete or isinstance(error, EOFError) or "EOF" in str(error):
            where = "inside a pickle" if not complete else f"in the tensor data ({_first_line(error)})"
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


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptCheckpointError(str(path), f"damaged or truncated safetensors file ({e})") from e
    out: dict[str, Any] = {"model": state, "metadata": metadata}
    if "model_config" in metadata:
        try:
            out["model_config"] = json.loads(metadata["model_config"])
        except json.JSONDecodeError as e:
            raise CorruptCheckpointError(str(path), f"metadata 'model_config' is not valid JSON ({e})") from e
    return out


def read_checkpoint(path: str | os.PathLike, *, extra_safe_globals: Sequence[Any] = ()) -> dict:
    """Load a checkpoint file safely and return its top-level dict.

    ``*.safetensors`` files come back as ``{'model': state_dict, 'metadata': {...}, 'model_config': {...}}``
    (``model_config`` when the metadata has it). Everything else goes through ``torch.load(map_location='cpu',
    weights_only=True)`` with :data:`SAFE_GLOBALS` (+ ``extra_safe_globals``) allowed.

    Raises ``FileNotFoundError``; :class:`UnsafeCheckpointError` when unpickling would import anything else (nothing
    runs); :class:`CorruptCheckpointError` for truncated/damaged/foreign files (the original error is chained).
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
    except pickle.UnpicklingError as e:
        offending = _unsafe_names(path, e, allowed)
        if offending:
            raise UnsafeCheckpointError(str(path), offending) from e
        raise CorruptCheckpointError(str(path), _damage_reason(path, e)) from e
    except Exception as e:  # noqa: BLE001 - a damaged stream can fail anywhere in the parser (struct.error, ...)
        raise CorruptCheckpointError(str(path), _damage_reason(path, e)) from e
    if not isinstance(obj, Mapping):
        raise CorruptCheckpointError(str(path), f"holds a {type(obj).__name__}, expected a dict (a checkpoint or a "
                                                "state dict)")
    return dict(obj)
