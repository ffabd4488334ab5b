"""``tdam.add_td``: put TD into an existing CNN built from supported blocks, in place.

The blocks are converted by :mod:`.convert` (the same code ``tdam.create_model`` uses); this module adds what a
retrofit needs on top: ``create_model``'s TD options with their defaults and checks, the step methods on the model's
class, and a ``model_config`` kept only when ``create_model`` can rebuild the converted model.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from .blocks import TDBlock
from .convert import Stage, _resolve, convert_blocks, default_td_stages, stage_blocks
from .factory import MODEL_OPTIONS, TD_DEFAULTS, TD_OPTION_DEFAULTS, create_model
from .steps import known_stages, steps_class_for

__all__ = ["add_td", "td_option_names"]


def td_option_names() -> tuple[str, ...]:
    """The TD options of ``tdam.create_model`` (``t``, ``m`` and every ``td_*`` keyword), read from its signature."""
    return tuple(p for p in MODEL_OPTIONS if p in ("t", "m") or p.startswith("td_"))


def _options(td_options: Mapping[str, Any]) -> dict[str, Any]:
    names = td_option_names()
    unknown = sorted(set(td_options) - set(names))
    if unknown:
        raise ValueError(f"unknown TD options {unknown}; valid TD options are {list(names)} (as in "
                         "tdam.create_model)")
    opts = {k: v for k, v in td_options.items() if v is not None}
    return {**TD_OPTION_DEFAULTS, "td_zero_init_step_norms": False, "td_keep_se": False, **opts}


def _stage_order(model: nn.Module, names: Iterable[str]) -> tuple[str, ...]:
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return tuple(sorted(set(names), key=order.__getitem__))


def add_td(model: nn.Module, td_stages: Stage | Iterable[Stage] | None = None, **td_options: Any) -> nn.Module:
    """Convert ``model`` to a TD model IN PLACE and return it.

    Args:
        model: a CNN built from supported blocks: timm's ``Bottleneck``, ``BasicBlock``, ``ConvNeXtBlock``,
            ``InvertedResidual`` or torchvision's ``BasicBlock``, ``Bottleneck`` (e.g. ``torchvision.models.resnet50()``
            or any timm ResNet/ConvNeXt/MobileNetV3).
        td_stages: where TD goes. Stage numbers (1-based, as the paper names them; timm ResNet/ConvNeXt/MobileNetV3
            and torchvision ResNet), module names (``['layer3', 'layer4']``, dotted names such as ``'features.5'``
            or a single block ``'layer4.2'``), or a mix. Default: the paper's rule, all blocks of the last two stages
            that hold supported blocks (models with numbered stages only).
        **td_options: ``tdam.create_model``'s TD options with the same defaults and checks: ``t`` (steps, 2),
            ``m`` (feedback distance, 1; the valid values depend on the block type), ``td_mode``, ``td_order``,
            ``td_feedback``, ``td_pool``, ``td_blocks`` (stage -> 0-based indices of the stage's blocks; stages keyed
            as in ``td_stages``), ``td_zero_init_step_norms``, ``td_keep_se`` (InvertedResidual only).

    Returns:
        The same model, whose class now also has ``forward_steps(x)`` (logits for steps 1..t of the last TD stage)
        and ``steps(k)`` (a context manager running that stage at k steps), see :mod:`tdam.models.steps`. A model
        from ``tdam.create_model`` keeps a ``model_config`` (so ``tdam.save_checkpoint(model, path)`` and
        ``tdam.load_model`` work) when create_model can rebuild the converted model; other models have none.

    Raises:
        ValueError: naming the valid stages, block types or option values; the model is left unchanged.
    """
    opts = _options(td_options)
    td_blocks = opts.pop("td_blocks", None)
    if td_stages is None:
        td_stages = default_td_stages(model)
    placement = _resolve(model, td_stages, td_blocks)
    convert_blocks(placement, opts)
    if known_stages(model):
        model.__class__ = steps_class_for(model)
    else:
        names = [s for s in placement if isinstance(s, str)]
        model.__class__ = steps_class_for(model, tuple(names))
        model.td_stage_names = _stage_order(model, (*model.td_stage_names, *names))
    _update_model_config(model, opts, {k: v for k, v in td_options.items() if v is not None and k != "td_blocks"})
    return model


def _update_model_config(model: nn.Module, opts: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Keep ``model.model_config`` (create_model's keyword arguments) only if it rebuilds the converted model: the
    same parameter and buffer names and shapes from a meta-device build; drop it otherwise (see add_td)."""
    old = getattr(model, "model_config", None)
    if not isinstance(old, Mapping):
        return
    config = dict(old)
    if config.get("attention") not in (None, "td") or (
            config.get("attention") == "td" and _options({k: v for k, v in old.items() if k in opts}) != opts):
        config = None  # TD on top of a baseline, or new TD blocks whose options differ from the model's
    else:
        arch = config.get("arch")
        placement: dict[int, list[int]] = {}
        for i, stage in enumerate(model.stage_list(), 1):
            slots = stage_blocks(stage)
            idx = [j for j, (_, _, b) in enumerate(slots) if isinstance(b, TDBlock)]
            if idx:
                placement[i] = idx
        config.update(attention="td", **given, td_stages=list(placement))
        config.pop("td_blocks", None)
        default_subsets = TD_DEFAULTS.get(arch, {}).get("td_blocks", {})
        subsets = {s: idx for s, idx in placement.items()
                   if s in default_subsets or len(idx) != len(stage_blocks(model.stage_list()[s - 1]))}
        if subsets:
            config["td_blocks"] = subsets
        try:
            with torch.device("meta"):
                again = create_model(**config)
        except (ValueError, TypeError):
            config = None
        else:
            shapes = {k: tuple(v.shape) for k, v in again.state_dict().items()}
            if shapes != {k: tuple(v.shape) for k, v in model.state_dict().items()}:
                config = None
    if config is None:
        del model.model_config
    else:
        model.model_config = config

