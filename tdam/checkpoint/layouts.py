"""The checkpoint layouts we read, and their renaming to our (timm) names.

Layouts understood by :func:`extract_state_dict`:

- ``'tdam'``: our TD models (timm names plus ``td.*`` and the per-step norms ``bn{i}_{k}``);
- ``'timm'``: timm / torchvision baselines (the ResNet names of both libraries coincide) and our baseline models;
- ``'public_tdam_resnet'``: the authors' TD-ResNets (timm names plus ``RA_block.*``);
- ``'public_tdam_convnext'``: the authors' TD-ConvNeXt (ConvNeXt code-base names plus ``RA_block.*``);
- ``'convnext_official'``: plain checkpoints of the ConvNeXt code base (``downsample_layers.*``).

The authors' TD names map to ours as ``RA_block.Ug_mlp.0/2 -> td.fc1/fc2`` (mode top), ``RA_block.Ug_top_mlp.0 ->
td.fc_top``, ``RA_block.Ug_bottom_mlp.0 -> td.fc_bottom``, ``RA_block.Ug_mlp.0 -> td.fc_out`` (modes joint/additive)
and ``RA_block.Ug_conv -> td.conv`` (conv feedback); the per-step BatchNorms ``bn{i}_{k}`` keep their names.

Wrappers add name prefixes: DataParallel/DDP ``module.`` and torch.compile ``_orig_mod.``. Keys lose them here, and
:func:`unwrap_model` takes the same wrappers off a model.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Mapping

import torch
import torch.nn as nn

from tdam.checkpoint.digest import DIGEST_KEY
from tdam.checkpoint.read import CheckpointError

__all__ = ["LAYOUTS", "extract_state_dict", "detect_layout", "unwrap_model"]

LAYOUTS = ("tdam", "timm", "public_tdam_resnet", "public_tdam_convnext", "convnext_official")

_TD_LEAF = ("fc1", "fc2", "fc_top", "fc_bottom", "fc_out", "conv")
_TD_KEY = re.compile(r"^(?P<block>.+)\.td\.(?P<leaf>" + "|".join(_TD_LEAF) + r")\.weight$")
_STEP_NORM_KEY = re.compile(r"^(?P<block>.+)\.bn(?P<i>\d+)_(?P<k>\d+)\.[a-z_]+$")
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module whose state dict has plain names (DataParallel/DDP ``.module``, torch.compile ``._orig_mod``)."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


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
    ckpt = {k: v for k, v in ckpt.items() if k != DIGEST_KEY}  # a bare state dict saved by save_checkpoint
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
