"""Checkpoint I/O: safe reading, the public TDAM layouts, mismatch diagnosis, atomic saving, safetensors export.

Checkpoints are pickles, so every ``torch.save`` file is read with ``torch.load(weights_only=True)`` and an allow-list
of exactly the harmless extra types real training scripts put in them (:data:`SAFE_GLOBALS`). A pickle that would
call anything else (``os.system``, a custom class, ...) is refused with :class:`UnsafeCheckpointError` before any of
it runs; there is no fallback to ``weights_only=False``.

Layouts understood by :func:`extract_state_dict` (spec 03):

- ``'tdam'``: our TD models (timm names plus ``td.*`` and the per-step norms ``bn{i}_{k}``);
- ``'timm'``: timm / torchvision baselines (the ResNet names of both libraries coincide) and our baseline models;
- ``'public_tdam_resnet'``: the authors' TD-ResNets (timm names plus ``RA_block.*``);
- ``'public_tdam_convnext'``: the authors' TD-ConvNeXt (ConvNeXt code-base names plus ``RA_block.*``);
- ``'convnext_official'``: plain checkpoints of the ConvNeXt code base (``downsample_layers.*``).

The authors' TD names map to ours as ``RA_block.Ug_mlp.0/2 -> td.fc1/fc2`` (mode top), ``RA_block.Ug_top_mlp.0 ->
td.fc_top``, ``RA_block.Ug_bottom_mlp.0 -> td.fc_bottom``, ``RA_block.Ug_mlp.0 -> td.fc_out`` (modes joint/additive)
and ``RA_block.Ug_conv -> td.conv`` (conv feedback); the per-step BatchNorms ``bn{i}_{k}`` keep their names.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import pickletools
import re
import uuid
import warnings
import zipfile
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

__all__ = [
    "SAFE_GLOBALS", "LAYOUTS", "CheckpointError", "UnsafeCheckpointError", "CorruptCheckpointError",
    "CheckpointMismatchError", "LoadResult", "BlockTD", "StateDictSummary", "read_checkpoint", "extract_state_dict",
    "detect_layout", "summarize_state_dict", "load_checkpoint", "save_checkpoint", "export_safetensors", "load_model",
    "unwrap_model",
]

#: Extra globals (beyond torch's weights-only defaults: tensors, dtypes, torch.device, torch.Size, OrderedDict,
#: Counter, set, bytearray, complex) that a checkpoint may contain. ``argparse.Namespace`` is the ``args`` entry of
#: checkpoints written by timm's ``train.py`` (the public TD-ResNets) and by the ConvNeXt code base's ``main.py``
#: (the public TD-ConvNeXt); unpickling it only creates an attribute bag (no ``__setstate__``, no code). Nothing else
#: is needed: the rest of those checkpoints (state dicts, optimizer / scaler states, epoch, metric, version, arch) is
#: tensors and plain python values.
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

LAYOUTS = ("tdam", "timm", "public_tdam_resnet", "public_tdam_convnext", "convnext_official")

_TD_LEAF = ("fc1", "fc2", "fc_top", "fc_bottom", "fc_out", "conv")
_TD_KEY = re.compile(r"^(?P<block>.+)\.td\.(?P<leaf>" + "|".join(_TD_LEAF) + r")\.weight$")
_STEP_NORM_KEY = re.compile(r"^(?P<block>.+)\.bn(?P<i>\d+)_(?P<k>\d+)\.[a-z_]+$")
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
_MAX_LISTED = 8


# ----------------------------------------------------------------------------------------------------------- errors
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


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys/shapes do not match the model (the message says which configuration each one has)."""


# ---------------------------------------------------------------------------------------------------------- reading
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


# ------------------------------------------------------------------------------------------------------- extraction
def _strip_prefixes(sd: Mapping[str, Any]) -> dict[str, Any]:
    keys = list(sd)
    changed = True
    while changed and keys:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in keys):
                sd = {k[len(p):]: v for k, v in sd.items()}
                keys, changed = list(sd), True
    return dict(sd)


def _find_weights(ckpt: Mapping[str, Any], use_ema: bool) -> Mapping[str, Any]:
    top = sorted(map(str, ckpt))
    if use_ema:
        for key in ("state_dict_ema", "model_ema"):
            if isinstance(ckpt.get(key), Mapping) and ckpt[key]:
                return ckpt[key]
        raise CheckpointError(f"use_ema=True but the checkpoint has no EMA weights ('state_dict_ema' as timm writes "
                              f"them or 'model_ema' as ours and the ConvNeXt code base do); its top-level keys are "
                              f"{top}")
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), Mapping):
            return ckpt[key]
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    raise CheckpointError(f"no weights found: expected a state dict under 'state_dict' (timm), 'model' (ours, "
                          f"ConvNeXt code base) or a bare state dict of tensors; top-level keys are {top[:20]}")


def detect_layout(sd: Mapping[str, Any]) -> str:
    """Which naming a (prefix-stripped) state dict uses; one of :data:`LAYOUTS`."""
    keys = list(sd)
    public_td = any(".RA_block." in k for k in keys)
    convnext_fb = any(k.startswith("downsample_layers.") for k in keys)
    if public_td:
        return "public_tdam_convnext" if convnext_fb else "public_tdam_resnet"
    if convnext_fb:
        return "convnext_official"
    if any(_TD_KEY.match(k) for k in keys) or any(_STEP_NORM_KEY.match(k) for k in keys):
        return "tdam"
    return "timm"


_RA_LEAVES = (  # (authors' leaf under RA_block, ours under td), 'Ug_mlp.0' depends on the mode (see below)
    ("Ug_top_mlp.0.", "fc_top."), ("Ug_bottom_mlp.0.", "fc_bottom."), ("Ug_mlp.2.", "fc2."), ("Ug_conv.", "conv."))


def _rename_ra_block(sd: Mapping[str, Any]) -> dict[str, Any]:
    """``<block>.RA_block.*`` (authors' names) -> ``<block>.td.*`` (ours); other keys unchanged.

    ``Ug_mlp.0`` is the first layer of the top-mode MLP (``td.fc1``) unless the block has ``Ug_top_mlp`` (modes
    joint/additive), where it is the output layer (``td.fc_out``). Unknown ``RA_block`` keys keep their name, so they
    surface as unexpected keys when loading."""
    two_branch = {k.split(".RA_block.")[0] for k in sd if ".RA_block.Ug_top_mlp." in k}
    out = {}
    for key, value in sd.items():
        if ".RA_block." in key:
            block, leaf = key.split(".RA_block.", 1)
            table = (*_RA_LEAVES, ("Ug_mlp.0.", "fc_out." if block in two_branch else "fc1."))
            for theirs, ours in table:
                if leaf.startswith(theirs):
                    key = f"{block}.td.{ours}{leaf[len(theirs):]}"
                    break
        out[key] = value
    return out


class _EchoModel:
    """Stands in for the model in timm's ``checkpoint_filter_fn`` (called one key at a time): answers every
    ``state_dict()[k]`` lookup with the tensor being converted, so timm's Linear->model-shape reshape is a no-op."""

    def __init__(self, value: torch.Tensor) -> None:
        self._value = value

    def state_dict(self) -> Mapping[str, torch.Tensor]:
        return defaultdict(lambda: self._value)


def _convnext_fb_to_timm(sd: Mapping[str, Any]) -> dict[str, Any]:
    """The ConvNeXt code base's names -> timm's, with timm's own ``checkpoint_filter_fn`` applied key by key."""
    from timm.models.convnext import checkpoint_filter_fn

    out = {}
    for key, value in sd.items():
        converted = checkpoint_filter_fn({key: value}, _EchoModel(value))
        out.update(converted)
    return out


def extract_state_dict(ckpt: Mapping[str, Any], use_ema: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """Find the weights in a loaded checkpoint and return them under our (timm) names, with the detected layout.

    Looks under ``state_dict_ema``/``model_ema`` (``use_ema=True``; an error when absent), else ``state_dict``, else
    ``model``, else the dict itself; strips ``module.`` / ``_orig_mod.``; renames the authors' ``RA_block`` keys to
    ``td.*`` and the ConvNeXt code base's names to timm's (via ``timm.models.convnext.checkpoint_filter_fn``).
    """
    if not isinstance(ckpt, Mapping):
        raise TypeError(f"expected a checkpoint dict, got {type(ckpt).__name__}")
    sd = _strip_prefixes(_find_weights(ckpt, use_ema))
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"the state dict has non-tensor entries, e.g. {bad[:3]}: not a state dict")
    layout = detect_layout(sd)
    if layout in ("public_tdam_convnext", "convnext_official"):
        sd = _convnext_fb_to_timm(sd)
    if layout in ("public_tdam_resnet", "public_tdam_convnext"):
        sd = _rename_ra_block(sd)
    return sd, layout


# ---------------------------------------------------------------------------------------------------------- summary
_M_FROM_STEP_NORMS = {  # block kind -> {indices i of the per-step norms bn{i}_k: feedback distance m} (spec 03 §3.2)
    "bottleneck": {(3,): 1, (2, 3): 2, (1, 2, 3): 3},
    "basic": {(2,): 1, (1, 2): 2},
    "inverted_residual": {(3,): 1},
}


@dataclass(frozen=True)
class BlockTD:
    """What the weights of one TD block say about its configuration (None: the weights do not tell)."""

    kind: str        # bottleneck | basic | convnext | inverted_residual | unknown
    feedback: str    # attention | conv | identity
    mode: str | None  # top | joint | additive (feedback 'attention')
    m: int | None
    t_min: int | None  # 1 + the highest per-step norm index k (a block with norms up to k runs at least k+1 steps)

    def describe(self, t: int | None = None) -> str:
        what = f"td {self.mode}" if self.feedback == "attention" else f"feedback {self.feedback}"
        m = "m=?" if self.m is None else f"m={self.m}"
        if t is not None:
            steps = f"t={t}"
        elif self.t_min is not None:
            steps = f"t>={self.t_min}"
        else:
            steps = "t=? (no per-step norms)"
        return f"{what}, {m}, {steps}"


@dataclass
class StateDictSummary:
    """The model configuration a state dict (in our names) implies: architecture, classes and TD blocks."""

    arch: str | None
    num_classes: int | None
    td: dict[str, BlockTD] = field(default_factory=dict)
    t: dict[str, int] = field(default_factory=dict)  # exact steps per block, known for models (not for weights)

    def groups(self) -> list[tuple[str, list[str]]]:
        """Blocks grouped by their description, in order of first appearance."""
        out: dict[str, list[str]] = {}
        for block, info in self.td.items():
            out.setdefault(info.describe(self.t.get(block)), []).append(block)
        return list(out.items())

    def describe(self) -> str:
        parts = [self.arch or "unknown architecture"]
        if self.td:
            parts.append("; ".join(f"{d} in {_compress_blocks(b)}" for d, b in self.groups()))
        else:
            parts.append("no TD blocks")
        parts.append("? classes" if self.num_classes is None else f"{self.num_classes} classes")
        return ", ".join(parts)


def _compress_blocks(blocks: Sequence[str]) -> str:
    """['layer3.0', 'layer3.1', 'layer3.2', 'layer4.0'] -> 'layer3.0-2, layer4.0'."""
    by_parent: dict[str, list[int]] = {}
    for b in blocks:
        parent, _, idx = b.rpartition(".")
        by_parent.setdefault(parent, []).append(int(idx) if idx.isdigit() else -1)
    out = []
    for parent, idx in by_parent.items():
        idx = sorted(idx)
        runs, start = [], idx[0]
        for a, b in zip(idx, idx[1:] + [None]):
            if b != a + 1:
                runs.append(f"{start}" if start == a else f"{start}-{a}")
                start = b
        out.append(f"{parent}.{','.join(runs)}")
    return ", ".join(out)


def _guess_arch(sd: Mapping[str, torch.Tensor]) -> str | None:
    keys = set(sd)
    if "layer1.0.conv1.weight" in keys:
        depths = tuple(len({k.split(".")[1] for k in keys if k.startswith(f"layer{i}.")}) for i in range(1, 5))
        bottleneck = "layer1.0.conv3.weight" in keys
        names = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
                 ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
                 ((3, 8, 36, 3), True): "resnet152"}
        return names.get((depths, bottleneck), f"resnet ({'Bottleneck' if bottleneck else 'BasicBlock'} {depths})")
    if "stem.0.weight" in keys and any(k.startswith("stages.0.blocks.") for k in keys):
        depths = tuple(len({k.split(".")[3] for k in keys if k.startswith(f"stages.{i}.blocks.")}) for i in range(4))
        dims = sd["stem.0.weight"].shape[0]
        return {((3, 3, 9, 3), 96): "convnext_tiny", ((3, 3, 27, 3), 96): "convnext_small",
                ((3, 3, 27, 3), 128): "convnext_base"}.get((depths, dims), f"convnext (depths {depths}, dim {dims})")
    if "conv_stem.weight" in keys:
        return "mobilenetv3" if "conv_head.weight" in keys else "efficientnet-like"
    return None


def _num_classes(sd: Mapping[str, torch.Tensor]) -> int | None:
    for key in ("fc.weight", "head.fc.weight", "classifier.weight", "head.weight"):
        if key in sd and sd[key].ndim >= 1:
            return int(sd[key].shape[0])
    return None


def _block_kind(sd: Mapping[str, torch.Tensor], block: str) -> str:
    if f"{block}.conv3.weight" in sd:
        return "bottleneck"
    if f"{block}.conv_pwl.weight" in sd:
        return "inverted_residual"
    if f"{block}.conv_dw.weight" in sd:
        return "convnext"
    if f"{block}.conv2.weight" in sd:
        return "basic"
    return "unknown"


def _block_td(sd: Mapping[str, torch.Tensor], block: str, leaves: set[str], norms: dict[int, int]) -> BlockTD:
    """Read one block's TD configuration from its ``td.*`` weights and per-step norms (index i -> highest k)."""
    kind = _block_kind(sd, block)
    w = lambda leaf: sd[f"{block}.td.{leaf}.weight"]  # noqa: E731
    mode = None
    if "conv" in leaves:
        feedback, bottom = "conv", w("conv").shape[0]
    elif "fc1" in leaves or "fc2" in leaves:
        feedback, mode = "attention", "top"
        bottom = w("fc2").shape[0] if "fc2" in leaves else None
    elif leaves:
        feedback = "attention"
        if {"fc_top", "fc_out"} <= leaves:
            mode = "joint" if w("fc_out").shape[1] == 2 * w("fc_top").shape[0] else "additive"
        bottom = w("fc_out").shape[0] if "fc_out" in leaves else None
    else:
        feedback, bottom = "identity", None
    if norms:
        m = _M_FROM_STEP_NORMS.get(kind, {}).get(tuple(sorted(norms)))
    elif kind == "convnext" and bottom is not None:
        dim = sd[f"{block}.conv_dw.weight"].shape[0]
        m = {4 * dim: 1, dim: 2}.get(bottom)
    else:
        m = 0 if kind in _M_FROM_STEP_NORMS and leaves else None
    t_min = 1 + max(norms.values()) if norms else None
    return BlockTD(kind=kind, feedback=feedback, mode=mode, m=m, t_min=t_min)


def summarize_state_dict(sd: Mapping[str, torch.Tensor]) -> StateDictSummary:
    """Which configuration a state dict in our names implies: architecture, classes, and per TD block its mode,
    feedback, m (from which per-step norms exist) and the least t (from the highest per-step norm index)."""
    leaves: dict[str, set[str]] = defaultdict(set)
    norms: dict[str, dict[int, int]] = defaultdict(dict)
    for key in sd:
        if m := _TD_KEY.match(key):
            leaves[m["block"]].add(m["leaf"])
        elif m := _STEP_NORM_KEY.match(key):
            i, k = int(m["i"]), int(m["k"])
            norms[m["block"]][i] = max(k, norms[m["block"]].get(i, 0))
    blocks = sorted(set(leaves) | set(norms), key=_natural_key)
    td = {b: _block_td(sd, b, leaves.get(b, set()), norms.get(b, {})) for b in blocks}
    return StateDictSummary(arch=_guess_arch(sd), num_classes=_num_classes(sd), td=td)


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module whose state dict has plain names (DataParallel/DDP ``.module``, torch.compile ``._orig_mod``)."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _summarize_model(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> StateDictSummary:
    summary = summarize_state_dict(sd)
    for name in summary.td:
        try:
            t = getattr(model.get_submodule(name), "t", None)
        except AttributeError:
            continue
        if isinstance(t, int) and not isinstance(t, bool):
            summary.t[name] = t
    config = getattr(model, "model_config", None)
    if isinstance(config, Mapping) and isinstance(config.get("arch"), str):
        summary.arch = config["arch"]
    return summary


def _td_stage(block: str) -> int | None:
    """Paper's 1-based stage number of a block name (ResNet 'layer3.0' -> 3, ConvNeXt 'stages.2.blocks.0' -> 3)."""
    if m := re.match(r"^layer(\d+)\.", block):
        return int(m[1])
    if m := re.match(r"^stages\.(\d+)\.", block):
        return int(m[1]) + 1
    return None


def _hint(ckpt: StateDictSummary, model: StateDictSummary) -> str:
    """create_model options that would make the model match the checkpoint (those that can be read off the keys)."""
    fixes = []
    if ckpt.num_classes is not None and model.num_classes is not None and ckpt.num_classes != model.num_classes:
        fixes.append(f"num_classes={ckpt.num_classes}")
    if ckpt.arch and model.arch and ckpt.arch != model.arch:
        fixes.append(f"arch={ckpt.arch!r}")
    if not ckpt.td and model.td:
        fixes.append("attention=None (the checkpoint has no TD blocks) or strict=False to initialise from it")
    elif ckpt.td and not model.td:
        fixes.append("attention='td'")
    elif ckpt.td:
        c = list(ckpt.td.values())
        mdl = list(model.td.values())
        pick = lambda vals: vals[0] if len(set(vals)) == 1 else None  # noqa: E731
        for opt, attr in (("td_feedback", "feedback"), ("td_mode", "mode"), ("m", "m")):
            want, have = pick([getattr(b, attr) for b in c]), pick([getattr(b, attr) for b in mdl])
            if want is not None and want != have:
                fixes.append(f"{opt}={want!r}")
        t_min = pick([b.t_min for b in c])
        t_model = pick(list(model.t.values())) or pick([b.t_min for b in mdl])
        if t_min is not None and t_min != t_model:
            fixes.append(f"t={t_min}")
        stages_c = sorted({s for s in map(_td_stage, ckpt.td) if s})
        stages_m = sorted({s for s in map(_td_stage, model.td) if s})
        if stages_c != stages_m:
            fixes.append(f"td_stages={tuple(stages_c)}")
        elif list(ckpt.td) != list(model.td):
            fixes.append(f"td_blocks matching {_compress_blocks(list(ckpt.td))}")
    if not fixes:
        return ""
    note = ""
    if ckpt.num_classes != model.num_classes:
        note = " (to fine-tune on other classes, load with strict=False: the classifier keeps its new initialisation)"
    return f"build the model with {', '.join(fixes)}{note}"


def _listing(title: str, items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f", ... (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"  {title} ({len(items)}): {shown}{more}"


# ---------------------------------------------------------------------------------------------------------- loading
@dataclass
class LoadResult:
    """What :func:`load_checkpoint` did: model keys the checkpoint lacks, checkpoint keys the model lacks, keys with
    different shapes (name, checkpoint shape, model shape; not loaded), and the checkpoint's detected layout."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    mismatched_keys: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    layout: str


def load_checkpoint(model: nn.Module, source: str | os.PathLike | Mapping[str, Any], *, strict: bool = True,
                    use_ema: bool = False) -> LoadResult:
    """Load weights into ``model`` from a checkpoint path or an already-loaded dict (any layout of :data:`LAYOUTS`).

    ``strict=True``: any missing, unexpected or shape-mismatched key raises :class:`CheckpointMismatchError`, whose
    message lists them and compares the configuration the checkpoint's keys imply (mode, m, least t, TD blocks,
    classes) with the model's, plus the ``create_model`` options that would match. ``strict=False``: loads every key
    present in both with equal shapes and reports the rest in the returned :class:`LoadResult` (a TD model initialised
    from a plain timm/torchvision ResNet misses exactly its ``td.*`` weights and per-step norms ``bn{i}_{k}.*``).
    A ``*.num_batches_tracked`` buffer absent from an old checkpoint is not counted missing (torch sets it to 0).
    """
    name = f"checkpoint {str(source)!r}" if isinstance(source, (str, os.PathLike)) else "the checkpoint dict"
    ckpt = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    sd, layout = extract_state_dict(ckpt, use_ema=use_ema)
    target = unwrap_model(model)
    model_sd = target.state_dict()
    missing = [k for k in model_sd if k not in sd and not (
        k.endswith(".num_batches_tracked") and k.replace(".num_batches_tracked", ".running_mean") in sd)]
    unexpected = [k for k in sd if k not in model_sd]
    mismatched = [(k, tuple(sd[k].shape), tuple(model_sd[k].shape)) for k in sd
                  if k in model_sd and sd[k].shape != model_sd[k].shape]
    if strict and (missing or unexpected or mismatched):
        ckpt_summary, model_summary = summarize_state_dict(sd), _summarize_model(target, model_sd)
        lines = [f"{name} (layout {layout!r}) does not match the model:"]
        if missing:
            lines.append(_listing("missing in the checkpoint", missing))
        if unexpected:
            lines.append(_listing("unexpected in the checkpoint", unexpected))
        if mismatched:
            lines.append(_listing("shape mismatch (checkpoint vs model)",
                                  [f"{k}: {list(a)} vs {list(b)}" for k, a, b in mismatched]))
        lines.append(f"checkpoint looks like: {ckpt_summary.describe()}")
        lines.append(f"model is:              {model_summary.describe()}")
        if hint := _hint(ckpt_summary, model_summary):
            lines.append(f"hint: {hint}")
        raise CheckpointMismatchError("\n".join(lines))
    bad = {k for k, _, _ in mismatched}
    target.load_state_dict({k: v for k, v in sd.items() if k in model_sd and k not in bad}, strict=False)
    return LoadResult(missing_keys=missing, unexpected_keys=unexpected, mismatched_keys=mismatched, layout=layout)


# ----------------------------------------------------------------------------------------------------------- saving
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
    kill at any moment leaves either the previous file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Save a checkpoint dict with ``torch.save``, atomically (see :func:`_atomic_write`); returns the path.

    ``obj`` may hold only what :func:`read_checkpoint` reads back (tensors, plain python values and containers,
    ``argparse.Namespace``); anything else raises ``ValueError`` naming where it is, before the file is touched."""
    path = Path(path)
    if path.suffix == ".safetensors":
        raise ValueError(f"{str(path)!r}: save_checkpoint writes torch.save files; use export_safetensors for "
                         "weights-only .safetensors files")
    if not isinstance(obj, Mapping):
        raise ValueError(f"save_checkpoint expects a dict, got {type(obj).__name__}")
    _check_loadable(obj)
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
    JSON-encoded). Accepts a model, a state dict, or a checkpoint dict (its weights are found as in
    :func:`extract_state_dict`). ``load_checkpoint`` / ``load_model`` read the file back (by its suffix)."""
    from safetensors.torch import save as st_save

    from . import __version__

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
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in meta.items()}
    data = st_save(_tensors_for_export(model_or_state_dict), metadata=meta)
    _atomic_write(path, lambda f: f.write(data))
    return path


def load_model(path: str | os.PathLike | Mapping[str, Any], *, use_ema: bool = False, strict: bool = True,
               **overrides: Any) -> nn.Module:
    """Rebuild a model with ``tdam.create_model(**checkpoint['model_config'] | overrides)`` and load its weights
    (``strict`` as in :func:`load_checkpoint`). Works for our checkpoints and our safetensors exports (``path`` may
    also be an already-read checkpoint dict). The model is returned as ``create_model`` builds it (training mode):
    call ``.eval()`` for inference."""
    from .models import create_model

    ckpt = read_checkpoint(path) if isinstance(path, (str, os.PathLike)) else path
    config = ckpt.get("model_config")
    if not isinstance(config, Mapping):
        try:
            layout = extract_state_dict(ckpt, use_ema=use_ema)[1]
        except CheckpointError:
            layout = "unknown"
        raise CheckpointError(
            f"{path if isinstance(path, (str, os.PathLike)) else 'the checkpoint'} has no 'model_config' to rebuild "
            f"the model from (layout {layout!r}; top-level keys {sorted(map(str, ckpt))[:12]}): build the model with "
            "tdam.create_model(...) and call tdam.load_checkpoint(model, path)")
    config = {**config, **overrides}
    model = create_model(**config)
    load_checkpoint(model, ckpt, strict=strict, use_ema=use_ema)
    return model
