"""The transfer models: our ImageNet-trained backbones inside WS-DAN and with ASL's multi-label head.

A backbone comes from one of our checkpoints (``tdam.checkpoint.load_model``: rebuilt from its ``model_config``, a
TD model keeps its trained t) or, without a checkpoint, from ``tdam.create_model`` with random weights (smoke runs
only). The built model carries ``model_config`` so the trainer's checkpoints can be reloaded:
``tdam.checkpoint.load_model`` for ASL models (a backbone with a K-class classifier), :func:`load_wsdan` for WS-DAN.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch.nn as nn

from tdam.transfer.wsdan import WSDAN

__all__ = ["load_backbone", "build_wsdan", "build_asl_model", "load_wsdan"]


def load_backbone(checkpoint: str | os.PathLike | None = None, *, use_ema: bool = False,
                  model_config: Mapping[str, Any] | None = None) -> nn.Module:
    """ImageNet backbone from ``checkpoint`` (ours; EMA weights with ``use_ema``), or a randomly initialised
    ``tdam.create_model(**model_config)`` when no checkpoint is given."""
    if checkpoint is not None:
        from tdam.checkpoint import load_model

        return load_model(checkpoint, use_ema=use_ema)
    if not model_config or "arch" not in model_config:
        raise ValueError("load_backbone needs a checkpoint path or a model_config with at least 'arch' "
                         "(e.g. {'arch': 'resnet50', 'attention': 'td'})")
    from tdam.models import create_model

    return create_model(**dict(model_config))


def build_wsdan(backbone: nn.Module, num_classes: int, *, num_attentions: int = 32, beta: float = 5e-2) -> WSDAN:
    """WS-DAN on ``backbone``'s last feature map; the backbone's classifier is dropped."""
    backbone_config = dict(getattr(backbone, "model_config", {}) or {})
    model = WSDAN(backbone, num_classes, num_attentions=num_attentions, beta=beta)
    if backbone_config:
        backbone_config["num_classes"] = 0
    model.model_config = {"transfer": "wsdan", "backbone": backbone_config, "num_classes": num_classes,
                          "num_attentions": num_attentions, "beta": beta}
    return model


def build_asl_model(backbone: nn.Module, num_classes: int) -> nn.Module:
    """The backbone with a new ``num_classes``-way classifier (the ImageNet head is not transferred, as in ASL)."""
    backbone.reset_classifier(num_classes)
    config = dict(getattr(backbone, "model_config", {}) or {})
    if config:
        config["num_classes"] = num_classes
        backbone.model_config = config
    return backbone


def load_wsdan(source: str | os.PathLike | Mapping[str, Any], *, use_ema: bool = False) -> WSDAN:
    """Rebuild a WS-DAN model (and its feature centers) from a checkpoint written by the trainer."""
    from tdam.checkpoint import read_checkpoint
    from tdam.models import create_model

    ckpt = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    cfg = ckpt.get("model_config")
    if not isinstance(cfg, Mapping) or cfg.get("transfer") != "wsdan" or not cfg.get("backbone"):
        raise ValueError(f"{source if isinstance(source, (str, os.PathLike)) else 'the checkpoint'} is not a WS-DAN "
                         f"checkpoint (model_config {cfg!r}); expected model_config['transfer'] == 'wsdan'")
    backbone = create_model(**cfg["backbone"])
    model = build_wsdan(backbone, cfg["num_classes"], num_attentions=cfg["num_attentions"], beta=cfg["beta"])
    key = "model_ema" if use_ema else "model"
    if not isinstance(ckpt.get(key), Mapping):
        raise ValueError(f"the WS-DAN checkpoint has no {key!r} weights (top-level keys {sorted(map(str, ckpt))})")
    model.load_state_dict(ckpt[key])
    return model
