"""What a state dict says about the model it came from, and the error that compares it with the model at hand.

:func:`summarize_state_dict` reads the configuration off the keys and shapes alone: architecture, classes and, per TD
block, feedback kind, mode, feedback distance ``m`` and the least number of steps ``t``. A strict load that does not
fit raises :class:`CheckpointMismatchError` (:func:`mismatch_error`): it lists the offending keys, describes the
checkpoint's configuration next to the model's and names the ``create_model`` options that would make them match.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from tdam.checkpoint.layouts import _STEP_NORM_KEY, _TD_KEY
from tdam.checkpoint.read import CheckpointError

__all__ = ["BlockTD", "StateDictSummary", "CheckpointMismatchError", "CheckpointDtypeError", "summarize_state_dict",
           "mismatch_error"]

_MAX_LISTED = 8


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys/shapes do not match the model (the message says which configuration each one has)."""


class CheckpointDtypeError(CheckpointMismatchError):
    """A checkpoint tensor holds another kind of number than the model's (e.g. integers or booleans for a floating
    point weight): loading would silently cast it. ``mismatched`` lists (name, checkpoint dtype, model dtype)."""

    def __init__(self, name: str, mismatched: Sequence[tuple[str, torch.dtype, torch.dtype]]) -> None:
        self.mismatched = list(mismatched)
        listed = "; ".join(f"{k}: {a} in the checkpoint, {b} in the model" for k, a, b in self.mismatched[:5])
        more = f" (and {len(self.mismatched) - 5} more)" if len(self.mismatched) > 5 else ""
        super().__init__(f"{name} does not fit the model: {len(self.mismatched)} tensor(s) hold another kind of "
                         f"number than the model's ({listed}{more}); a floating point weight cannot be loaded from "
                         "integer or boolean data (or the reverse) without silently changing it")


# block kind -> {indices i of the per-step norms bn{i}_k: feedback distance m}. A TD block re-runs the last m layers
# of its residual branch and only their norms bn{i} get per-step copies, so the indices present give m (bottleneck:
# bn3 only -> m=1, bn2 and bn3 -> m=2, all three -> m=3).
_M_FROM_STEP_NORMS = {
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


def mismatch_error(name: str, layout: str, sd: Mapping[str, torch.Tensor], model: nn.Module,
                   missing: Sequence[str], unexpected: Sequence[str],
                   mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> CheckpointMismatchError:
    """The error for a strict load of ``sd`` (checkpoint ``name``, in our names) into the unwrapped ``model``: the
    offending keys, both configurations and the ``create_model`` options that would match."""
    ckpt_summary, model_summary = summarize_state_dict(sd), _summarize_model(model, model.state_dict())
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
    return CheckpointMismatchError("\n".join(lines))
