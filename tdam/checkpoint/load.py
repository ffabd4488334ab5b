"""Loading weights into a model: :func:`load_checkpoint` (strict or partial) and :func:`load_model` (rebuilt from the
checkpoint's ``model_config``)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn

from tdam.checkpoint.diagnose import CheckpointDtypeError, mismatch_error
from tdam.checkpoint.layouts import extract_state_dict, unwrap_model
from tdam.checkpoint.read import CheckpointError, read_checkpoint, verify_digest

__all__ = ["LoadResult", "load_checkpoint", "load_model"]


def _kind(tensor: torch.Tensor) -> str:
    if tensor.dtype == torch.bool:
        return "bool"
    if tensor.is_complex():
        return "complex"
    return "floating" if tensor.is_floating_point() else "integer"


def _read(source: str | os.PathLike | Mapping[str, Any]) -> dict:
    """The checkpoint dict of a path (read safely) or of a dict (its digest verified if it has one)."""
    if isinstance(source, (str, os.PathLike)):
        return read_checkpoint(source)
    return verify_digest(source, "the checkpoint dict")


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

    dtypes: a tensor loads into a model entry of the same kind of number only - floating point, integer, boolean or
    complex - and :class:`CheckpointDtypeError` (strict or not) names every tensor of another kind (integer or boolean
    data for a floating point weight would otherwise be cast silently). Within a kind the precision may differ and
    the values are converted as ``load_state_dict`` copies them: a float16/bfloat16 export loads into a float32 model
    (and the reverse, rounding), an int32 counter into an int64 buffer.
    """
    name = f"checkpoint {str(source)!r}" if isinstance(source, (str, os.PathLike)) else "the checkpoint dict"
    ckpt = _read(source)
    sd, layout = extract_state_dict(ckpt, use_ema=use_ema)
    target = unwrap_model(model)
    model_sd = target.state_dict()
    missing = [k for k in model_sd if k not in sd and not (
        k.endswith(".num_batches_tracked") and k.replace(".num_batches_tracked", ".running_mean") in sd)]
    unexpected = [k for k in sd if k not in model_sd]
    mismatched = [(k, tuple(sd[k].shape), tuple(model_sd[k].shape)) for k in sd
                  if k in model_sd and sd[k].shape != model_sd[k].shape]
    if strict and (missing or unexpected or mismatched):
        raise mismatch_error(name, layout, sd, target, missing, unexpected, mismatched)
    bad = {k for k, _, _ in mismatched}
    kinds = [(k, sd[k].dtype, model_sd[k].dtype) for k in sd if k in model_sd and k not in bad
             and _kind(sd[k]) != _kind(model_sd[k])]
    if kinds:
        raise CheckpointDtypeError(name, kinds)
    target.load_state_dict({k: v for k, v in sd.items() if k in model_sd and k not in bad}, strict=False)
    return LoadResult(missing_keys=missing, unexpected_keys=unexpected, mismatched_keys=mismatched, layout=layout)


def load_model(path: str | os.PathLike | Mapping[str, Any], *, use_ema: bool = False, strict: bool = True,
               **overrides: Any) -> nn.Module:
    """Rebuild a model with ``tdam.create_model(**checkpoint['model_config'] | overrides)`` and load its weights
    (``strict`` as in :func:`load_checkpoint`). Works for our checkpoints (the trainer's, and
    ``tdam.save_checkpoint(model, path)`` of a model that has a ``model_config``) and our safetensors exports (``path``
    may also be an already-read checkpoint dict). The model is returned as ``create_model`` builds it (training mode):
    call ``.eval()`` for inference."""
    from tdam.models import create_model

    ckpt = _read(path)
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
