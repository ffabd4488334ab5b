"""Which globals a pickle would import, found without running it: the static scan behind "unsafe" versus "corrupt".

Importing a global is the only way a pickle reaches code, and it can ask for one with ``GLOBAL`` / ``INST`` (protocols
0-3, ``module name`` in the opcode), ``STACK_GLOBAL`` (protocols 4-5, module and name taken from the stack, often
fetched from the memo) or ``EXT1/2/4`` (a code in :mod:`copyreg`'s extension registry). :func:`scan_pickles` walks
the opcodes with :mod:`pickletools`' table and keeps a model of the stack and the memo, so each of those is resolved
to ``module.name`` however the pickle spells it; nothing is unpickled and nothing is imported. The walk is tolerant:
an unknown opcode or a truncated argument marks the scan incomplete and the walk resumes at the next byte, so globals
after damage are still found. Random or damaged bytes readily decode as a ``GLOBAL`` of gibberish, a ``STACK_GLOBAL``
of unknown strings or a fragment of a real name (``tions.OrderedDict`` after resuming inside ``collections``), and such
a file is damaged, not unsafe. So what counts: before the first damage, every global (those with unresolvable names
only when the whole pickle parses); after it, only well-formed names whose top-level module exists here (looked up
with :func:`importlib.util.find_spec`, which imports nothing). :func:`file_globals` applies it to the pickles of a checkpoint file (the ``*.pkl``
members of a ``torch.save`` zip archive, or the five pickles at the start of a legacy ``torch.save`` file / a plain
pickle).
"""
from __future__ import annotations

import _compat_pickle
import copyreg
import importlib.util
import io
import pickletools
import re
import struct
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PickleScan", "scan_pickles", "file_globals"]

_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_MARK = object()  # a MARK on the modelled stack
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"}
_LEGACY_PICKLES = 5  # a legacy torch.save file: magic, protocol, sys info, the object, the storage keys; then raw data


@dataclass
class PickleScan:
    """Result of a static scan: ``globals`` in order of appearance (``module.name``; unresolvable ones as
    ``<...>``), the opcodes seen (names), the protocol they need (the highest ``PROTO`` or opcode protocol), and
    whether every pickle parsed to its ``STOP``."""

    globals: list[str] = field(default_factory=list)
    opcodes: set[str] = field(default_factory=set)
    protocol: int = 0
    complete: bool = True


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None


def _certain(name: str) -> bool:
    return not name.startswith("<")


def _module_exists(name: str) -> bool:
    top = name.split(".", 1)[0]
    if top in sys.modules:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _global_name(module: object, name: object, protocol: int) -> str:
    """``module.name`` as the unpickler would import it (protocols 0-2 map Python 2 names: ``__builtin__.exec`` is
    ``builtins.exec``, as :class:`pickle.Unpickler` does with ``fix_imports``)."""
    module, name = _text(module), _text(name)
    if module is None or name is None:
        return "<a global whose name is computed at unpickling time>"
    if protocol < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    full = f"{module}.{name}"
    return full if _NAME.match(full) else f"<global {full!r}>"


def _extension(code: int) -> str:
    key = copyreg._inverted_registry.get(code)  # noqa: SLF001 - read-only lookup, nothing is imported
    return f"{key[0]}.{key[1]}" if key else f"<copyreg extension code {code}>"


#: After the first damage the walk goes on for at most this many bytes (a damaged legacy file or a foreign one can be
#: gigabytes of tensor data that no pickle opcode walk needs to cross; the pickles come first).
MAX_BYTES_AFTER_DAMAGE = 1 << 20
#: How much of a file the scan reads: the pickles of any checkpoint are far smaller (tensor data follows them).
MAX_SCAN_BYTES = 256 << 20


def scan_pickles(data: bytes, max_pickles: int | None = 1) -> PickleScan:
    """Scan the consecutive pickles at the start of ``data`` (at most ``max_pickles``; None: to the end)."""
    with warnings.catch_warnings():  # decoding damaged text arguments warns (invalid escapes)
        warnings.simplefilter("ignore")
        return _scan_pickles(data, max_pickles)


def _scan_pickles(data: bytes, max_pickles: int | None) -> PickleScan:
    scan = PickleScan()
    stream = io.BytesIO(data)
    stack: list[object] = []
    memo: dict[int, object] = {}
    done, pos, end, last, protocol, damaged_at = 0, 0, len(data), None, 0, 0
    found: list[tuple[str, bool]] = []  # (name, found before any damage)
    while pos < end and (max_pickles is None or done < max_pickles):
        if not scan.complete and end > damaged_at + MAX_BYTES_AFTER_DAMAGE:
            end = damaged_at + MAX_BYTES_AFTER_DAMAGE
        op = pickletools.code2op.get(chr(data[pos]))
        arg = None
        if op is None:
            damaged_at = pos if scan.complete else damaged_at
            scan.complete, pos = False, pos + 1
            continue
        if op.arg is not None:
            stream.seek(pos + 1)
            try:
                arg = op.arg.reader(stream)
            except Exception:  # noqa: BLE001 - a damaged argument: resume at the next byte
                damaged_at = pos if scan.complete else damaged_at
                scan.complete, pos = False, pos + 1
                continue
            nxt = stream.tell()
        else:
            nxt = pos + 1
        scan.opcodes.add(op.name)
        scan.protocol = max(scan.protocol, op.proto)
        pushed: list[object] = [None] * len(op.stack_after)
        if op.name in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            found.append((_global_name(module, name, protocol), scan.complete))
        elif op.name == "STACK_GLOBAL":
            module, name = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
            found.append((_global_name(module, name, protocol), scan.complete))
        elif op.name in ("EXT1", "EXT2", "EXT4"):
            found.append((_extension(int(arg)), scan.complete))
        elif op.name in _STRING_OPS:
            pushed = [arg]
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            pushed = [memo.get(int(arg))]
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1] if stack else None
        elif op.name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif op.name == "PROTO":
            protocol = int(arg)
            scan.protocol = max(scan.protocol, protocol)
        elif op.name == "MARK":
            pushed = [_MARK]
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            before, pushed = [], []  # they leave the stack as it is (the table lists them as [any] -> [any])
        else:
            before = list(op.stack_before)
        # pop what the opcode consumes: everything down to the MARK for those that take a stack slice
        if pickletools.markobject in before:
            while stack and stack[-1] is not _MARK:
                stack.pop()
            if stack:
                stack.pop()
            before = before[:before.index(pickletools.markobject)]
        del stack[max(0, len(stack) - len(before)):]
        stack.extend(pushed)
        pos, last = nxt, op.name
        if op.name == "STOP":
            done += 1
            stack, memo, protocol = [], {}, 0
    if max_pickles is not None and done < max_pickles and not (pos >= end and last == "STOP"):
        scan.complete = False  # the data ended inside a pickle (ending after a whole pickle is a plain pickle file)
    scan.globals = [g for g, in_sync in found
                    if (scan.complete or _certain(g)) if in_sync or _module_exists(g)]
    return scan


def _zip_pickles(path: Path) -> list[bytes]:
    """The ``*.pkl`` members of a zip archive; for an archive too damaged for :mod:`zipfile`, the members found by
    walking the local file headers from the start (``torch.save`` stores them uncompressed, ``data.pkl`` first)."""
    try:
        with zipfile.ZipFile(path) as z:
            return [z.read(n) for n in z.namelist() if n.endswith(".pkl")]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        pass
    with open(path, "rb") as f:
        data = f.read(MAX_SCAN_BYTES)
    out, pos = [], 0
    while (pos := data.find(b"PK\x03\x04", pos)) >= 0 and pos + 30 <= len(data):
        _sig, _v, _f, _m, _t, _d, _crc, csize, _usize, nlen, xlen = struct.unpack("<IHHHHHIIIHH", data[pos:pos + 30])
        name = data[pos + 30:pos + 30 + nlen]
        start = pos + 30 + nlen + xlen
        if name.endswith(b".pkl"):
            out.append(data[start:start + csize] if csize else data[start:])
        pos = start if csize == 0 else start + csize
    return out


def file_globals(path: Path) -> PickleScan:
    """Scan every pickle of a checkpoint file (zip archive or legacy / plain pickle stream)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        total = PickleScan()
        members = _zip_pickles(path)
        if not members:
            total.complete = False
        for data in members:
            scan = scan_pickles(data, max_pickles=1)
            total.globals += scan.globals
            total.opcodes |= scan.opcodes
            total.protocol = max(total.protocol, scan.protocol)
            total.complete &= scan.complete
        return total
    with open(path, "rb") as f:
        return scan_pickles(f.read(MAX_SCAN_BYTES), max_pickles=_LEGACY_PICKLES)
