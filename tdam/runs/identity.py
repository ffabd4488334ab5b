"""A run's identity: one hash of everything that changes its weights, and the folder name that carries it.

The identity of a run is the SHA-1 (8 hex digits) of its *request*, the config values that change what is learned
(for an ImageNet run :func:`tdam.train.config.semantic_config`, ``epochs`` included; for a transfer run also its
WS-DAN / ASL settings and its backbone checkpoint's content digest), and of its *parent* when it continues another
run (``--epochs 5 --resume true`` on a finished 3-epoch run): the parent's identity and the epoch it branched at. So
two runs with one identity hold the same weights (up to the nondeterminism of the kernels), a 5-epoch run is never
the 3-epoch one, and a run extended from a 3-epoch run is not the run trained for 5 epochs from the start.

The folder name puts the facts a person tells runs apart by in front of the hash: ``resnet18_td_joint_t2_m1-smoke-
e3-1a2b3c4d`` (model, ``train_on`` when it is not the default ``last``, profile, epochs; an extended run adds
``from<parent epoch>``). The same name is the run's TensorBoard name and its line in ``python -m tdam.cache list``.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping, Sequence

from tdam.runs.layout import plain_json

__all__ = ["run_identity", "folder_name", "IDENTITY_LENGTH"]

IDENTITY_LENGTH = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")


def run_identity(request: Mapping[str, Any], parent: Mapping[str, Any] | None = None) -> str:
    """8 hex digits naming the run of ``request`` (plain JSON values) continued from ``parent`` (``{'identity',
    'epoch'}`` of the run it branches from; None for a run trained from scratch)."""
    blob: dict[str, Any] = {"request": plain_json(request)}
    if parent is not None:
        blob["parent"] = {"identity": str(parent["identity"]), "epoch": int(parent["epoch"])}
    return hashlib.sha1(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:IDENTITY_LENGTH]


def folder_name(parts: Sequence[str | None], identity: str) -> str:
    """``'-'.join(parts + [identity])``: the non-empty parts, each reduced to [A-Za-z0-9._] (runs of other
    characters become '_'), so the name is safe on any file system and splits on '-' into its parts."""
    clean = [_UNSAFE.sub("_", str(p)).strip("._") for p in parts if p not in (None, "")]
    if not re.fullmatch(r"[0-9a-f]{%d}" % IDENTITY_LENGTH, identity):
        raise ValueError(f"identity {identity!r}: expected {IDENTITY_LENGTH} hex digits (run_identity)")
    return "-".join([*[p for p in clean if p], identity])
