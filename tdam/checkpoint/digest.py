"""Content digests of the tensors in a checkpoint: every file we write records one, every read verifies it.

A digest is a SHA-256 per tensor, over its dtype, its shape and its bytes (C order), so a damaged file is refused
naming the damaged tensor. Where it lives:

- ``torch.save`` files (:func:`~tdam.checkpoint.save_checkpoint`): the reserved top-level key ``"tdam_digest"``, a
  plain dict ``{"format": "tdam-digest-1", "algorithm": "sha256", "tensors": {path: hex}}`` that ``torch.save``
  stores like any other value. ``path`` is the dotted path of every tensor reachable in the checkpoint through dicts,
  lists, tuples and ``argparse.Namespace`` attributes, e.g. ``model.layer1.0.conv1.weight`` or
  ``optimizer.state.0.exp_avg`` (a path met twice gets ``#2``, ``#3``, ... in walking order; tensors inside sets,
  which have no order, are not covered).
- ``.safetensors`` files (:func:`~tdam.checkpoint.export_safetensors`): the metadata entry ``"tdam_digest"``, the same
  dict as JSON, with the tensors' names in the file as paths.

:func:`~tdam.checkpoint.read_checkpoint` verifies the digest when the file has one and returns the checkpoint without
the reserved entry (the dict that was saved); files without one (the authors' checkpoints, timm's, older files of
ours) load exactly as before. The digest covers the tensors only: damage elsewhere in a pickle breaks the unpickling
itself, and is reported as a corrupt file.
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch

__all__ = ["DIGEST_KEY", "DIGEST_FORMAT", "tensor_digest", "tensor_paths", "make_digest", "DigestCheck",
           "check_digest"]

#: The reserved top-level key (``torch.save`` files) / metadata entry (``.safetensors``) that holds the digest.
DIGEST_KEY = "tdam_digest"
DIGEST_FORMAT = "tdam-digest-1"
_ALGORITHM = "sha256"  # ~0.1 s for the 102 MB of a ResNet-50 state dict on one CPU core (hardware SHA)


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's dtype, shape and bytes in C order (copied to the CPU first if needed)."""
    t = tensor.detach()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.is_meta or not t.numel():
        return h.hexdigest()  # no data
    if t.device.type != "cpu":
        t = t.cpu()
    if t.layout != torch.strided:  # sparse layouts: their dense values
        t = t.to_dense()
    if t.is_quantized:
        h.update(f"{t.qscheme()}|".encode())
        t = t.int_repr()
    t = t.resolve_conj().resolve_neg().contiguous()
    h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _walk(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{prefix}.{i}" if prefix else str(i))
    elif isinstance(obj, argparse.Namespace):
        yield from _walk(vars(obj), prefix)


def tensor_paths(obj: Mapping[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """``(dotted path, tensor)`` for every tensor reachable in ``obj`` (see the module docstring), the reserved
    :data:`DIGEST_KEY` entry excluded; a repeated path gets ``#2``, ``#3``, ... in walking order."""
    out, seen = [], {}
    for path, tensor in _walk({k: v for k, v in obj.items() if k != DIGEST_KEY}, ""):
        n = seen[path] = seen.get(path, 0) + 1
        out.append((path if n == 1 else f"{path}#{n}", tensor))
    return out


def make_digest(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The digest entry for ``obj``: ``{"format", "algorithm", "tensors": {path: hex}}`` (each tensor hashed once,
    however many paths reach it)."""
    by_id: dict[int, str] = {}
    tensors = {}
    for path, tensor in tensor_paths(obj):
        if id(tensor) not in by_id:
            by_id[id(tensor)] = tensor_digest(tensor)
        tensors[path] = by_id[id(tensor)]
    return {"format": DIGEST_FORMAT, "algorithm": _ALGORITHM, "tensors": tensors}


def is_digest(entry: Any) -> bool:
    """Whether ``entry`` is a digest written by :func:`make_digest` (of any format version)."""
    return isinstance(entry, Mapping) and str(entry.get("format", "")).startswith("tdam-digest-")


@dataclass
class DigestCheck:
    """What :func:`check_digest` found: tensors whose content changed, recorded tensors that are gone, tensors that
    the digest does not know, or a problem with the digest entry itself (``invalid``)."""

    damaged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    invalid: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.damaged or self.missing or self.unexpected or self.invalid)

    def describe(self, limit: int = 5) -> str:
        def names(keys: list[str]) -> str:
            more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
            return ", ".join(repr(k) for k in keys[:limit]) + more

        if self.invalid:
            return self.invalid
        parts = []
        if self.damaged:
            parts.append(f"the content of tensor(s) {names(self.damaged)} does not match the digest recorded when it "
                         "was written (the file was damaged on disk or in transfer)")
        if self.missing:
            parts.append(f"tensor(s) {names(self.missing)} recorded in the digest are missing")
        if self.unexpected:
            parts.append(f"tensor(s) {names(self.unexpected)} are not in the digest")
        return "; ".join(parts)


def check_digest(obj: Mapping[str, Any], entry: Any) -> DigestCheck:
    """Compare the tensors of ``obj`` with the digest ``entry`` recorded for them."""
    if not is_digest(entry) or not isinstance(entry.get("tensors"), Mapping):
        return DigestCheck(invalid=f"its '{DIGEST_KEY}' entry is not a tdam digest ({type(entry).__name__})")
    if entry["format"] != DIGEST_FORMAT or entry.get("algorithm") != _ALGORITHM:
        return DigestCheck(invalid=f"its '{DIGEST_KEY}' entry has format {entry['format']!r} / algorithm "
                                   f"{entry.get('algorithm')!r}; this version of tdam reads {DIGEST_FORMAT!r} / "
                                   f"{_ALGORITHM!r} (a newer tdam wrote it?)")
    recorded = entry["tensors"]
    actual = dict(tensor_paths(obj))
    by_id: dict[int, str] = {}
    check = DigestCheck()
    for path, expected in recorded.items():
        if path not in actual:
            check.missing.append(path)
            continue
        tensor = actual[path]
        if id(tensor) not in by_id:
            by_id[id(tensor)] = tensor_digest(tensor)
        if by_id[id(tensor)] != expected:
            check.damaged.append(path)
    check.unexpected = [p for p in actual if p not in recorded]
    return check
