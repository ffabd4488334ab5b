"""Block conversion, the mechanism of ``tdam.add_td`` (:mod:`.retrofit`) and ``tdam.create_model``: resolve where TD
goes and put TD blocks there, in place.

A model is converted block by block: every chosen block (timm's Bottleneck, BasicBlock, ConvNeXtBlock,
InvertedResidual, torchvision's BasicBlock, Bottleneck; see ``TD_BLOCK_TYPES``) is replaced by its TD version, which
reuses the block's layers under the same names. The model's class gains the step methods (``forward_steps(x)``,
``steps(k)``; see :mod:`.steps`). ``tdam.create_model(arch, attention='td')`` goes through the same code.

Stages are chosen by number (1-based, as the paper names them: ResNet ``layer3`` = 3) where tdam knows the model's
stages (timm ResNet/ConvNeXt/MobileNetV3, torchvision ResNet), or by module name (``'layer3'``, ``'features.5'``,
``'layer4.2'``) for any model. A stage's blocks are the supported blocks found inside it, in order; ``td_blocks``
picks some of them by 0-based index. The default placement is the paper's rule: all blocks of the last two stages
that hold supported blocks.
"""
from __future__ import annotations

from typing import Any, Mapping, Union

import torch.nn as nn

from tdam.validation import check_bool, check_choice

from .blocks import TDBlock, TDInvertedResidual, supported_block_names, td_block_class
from .steps import known_stages, stage_modules, steps_class_for
from .td import TD_FEEDBACKS, TD_MODES, TD_ORDERS, TD_POOLS

__all__ = ["stage_blocks", "default_td_stages", "convert_blocks"]

Stage = Union[int, str]  # a stage number (1-based) or a module name
_Slot = tuple[nn.Module, str, nn.Module]  # (parent, child name, block)


def stage_blocks(stage: nn.Module) -> list[_Slot]:
    """The supported blocks (and TD blocks) inside a stage, in order, as ``(parent, name, block)``; a stage that is
    itself one block gives an empty list here (see :func:`_resolve`)."""
    out: list[_Slot] = []
    for name, child in stage.named_children():
        if isinstance(child, TDBlock) or td_block_class(child) is not None:
            out.append((stage, name, child))
        else:
            out.extend(stage_blocks(child))
    return out


def _known_stage_list(model: nn.Module) -> list[nn.Module | None] | None:
    """The numbered stages of a model whose stages tdam knows, also of the ``features_only`` network timm builds
    from one (where a stage no requested feature needs is dropped: ``None``); None for other models."""
    if known_stages(model):
        return steps_class_for(model).stage_list(model)
    try:
        return stage_modules(model)
    except ValueError:
        return None


def default_td_stages(model: nn.Module, count: int = 2) -> tuple[int, ...]:
    """The paper's placement rule: the last ``count`` stages that hold supported blocks (numbers, 1-based)."""
    stages = _known_stage_list(model)
    if stages is None:
        raise ValueError(f"tdam does not know the stages of {type(model).__name__} (it knows timm ResNet/ConvNeXt/"
                         "MobileNetV3 and torchvision ResNet): name them, e.g. td_stages=['layer3', 'layer4'] or "
                         "['features.5']")
    with_blocks = [i + 1 for i, s in enumerate(stages) if s is not None and stage_blocks(s)]
    if not with_blocks:
        raise ValueError(f"{type(model).__name__} has no supported blocks; TD blocks exist for "
                         f"{supported_block_names()}")
    return tuple(with_blocks[-count:])


def _stage_names(model: nn.Module, stages: list[nn.Module] | None) -> list[str]:
    """Module names to suggest: the known stages' names, else the model's top-level children."""
    if stages is None:
        return [n for n, _ in model.named_children()]
    name_of = {id(m): n for n, m in model.named_modules()}
    return [name_of[id(s)] for s in stages if s is not None and id(s) in name_of]


def _resolve(model: nn.Module, td_stages: Any, td_blocks: Any) -> dict[Stage, list[_Slot]]:
    """Stage -> the blocks that get TD, validated against the model (nothing is changed here)."""
    stages = _known_stage_list(model)
    chosen = (td_stages,) if isinstance(td_stages, (int, str)) else tuple(td_stages)
    n = len(stages) if stages is not None else 0
    numbers = f"stage numbers in 1..{n} (1-based, as the paper names them: ResNet layer3 = 3) or " if n else ""
    hint = f"use {numbers}module names such as {_stage_names(model, stages)} (dotted names reach deeper)"
    td_stages = chosen  # as written in messages
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"td_stages={td_stages!r} is not valid; {hint}")
    out: dict[Stage, list[_Slot]] = {}
    for s in chosen:
        if isinstance(s, int) and not isinstance(s, bool):
            if not 1 <= s <= n:
                raise ValueError(f"td_stages={td_stages!r} is not valid; {hint}" if n else
                                 f"td_stages={td_stages!r}: {type(model).__name__}'s stages have no numbers in tdam "
                                 f"(it knows timm ResNet/ConvNeXt/MobileNetV3 and torchvision ResNet); {hint}")
            module = stages[s - 1]
            if module is None:       # dropped from a features_only network: no requested feature needs it
                continue
        elif isinstance(s, str):
            try:
                module = model.get_submodule(s)
            except AttributeError:
                raise ValueError(f"td_stages: {type(model).__name__} has no module {s!r}; {hint}") from None
        else:
            raise ValueError(f"td_stages={td_stages!r} is not valid; {hint}")
        slots = stage_blocks(module)
        if not slots and (isinstance(module, TDBlock) or td_block_class(module) is not None):
            parent, _, leaf = s.rpartition(".")  # a single named block (by name only: numbered stages hold blocks)
            slots = [(model.get_submodule(parent), leaf, module)]
        if not slots:
            kinds = sorted({type(c).__name__ for c in module.children()}) or [type(module).__name__]
            ok = [i + 1 for i, st in enumerate(stages or []) if st is not None and stage_blocks(st)]
            where = f"; stages with supported blocks: {ok}" if ok else ""
            raise ValueError(f"stage {s!r} holds no block TD supports (it holds {kinds}); TD blocks exist for "
                             f"{supported_block_names()}{where}")
        out[s] = slots
    # keys as in td_stages; digit strings (YAML/JSON keys) are stage numbers
    td_blocks = {int(k) if isinstance(k, str) and k.isdigit() else k: tuple(v) for k, v in (td_blocks or {}).items()}
    extra = [k for k in td_blocks if k not in chosen]
    if extra:
        raise ValueError(f"td_blocks names stages {extra} that are not in td_stages={list(chosen)}")
    for s, idx in td_blocks.items():
        if s not in out:             # a stage dropped from a features_only network
            continue
        nb = len(out[s])
        bad = [i for i in idx if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < nb]
        if bad:
            raise ValueError(f"td_blocks[{s!r}] has indices {bad} out of range; stage {s} has blocks 0..{nb - 1}")
        out[s] = [out[s][i] for i in sorted(set(idx))]
    seen: dict[int, Stage] = {}
    for s, slots in out.items():
        for _, _, block in slots:
            if isinstance(block, TDBlock):
                raise ValueError(f"stage {s!r} already has TD in the chosen block {type(block).__name__}; choose "
                                 "other stages or blocks (td_blocks)")
            if id(block) in seen:
                raise ValueError(f"td_stages {seen[id(block)]!r} and {s!r} choose the same block twice")
            seen[id(block)] = s
    return out


def _check_options(opts: Mapping[str, Any]) -> None:
    """The TD options' own checks (the choices come from :mod:`.td`); m is checked per block type, t by the TD
    blocks themselves (built before any is put in)."""
    check_choice("td_mode", opts["td_mode"], TD_MODES)
    check_choice("td_order", opts["td_order"], TD_ORDERS)
    check_choice("td_feedback", opts["td_feedback"], TD_FEEDBACKS)
    check_choice("td_pool", opts["td_pool"], TD_POOLS)
    check_bool("td_zero_init_step_norms", opts["td_zero_init_step_norms"])
    check_bool("td_keep_se", opts["td_keep_se"])


def convert_blocks(placement: Mapping[Stage, list[_Slot]], opts: Mapping[str, Any]) -> None:
    """Replace every chosen block by its TD version. All TD blocks are built before any is put in, so an invalid
    option (e.g. an ``m`` a block type does not have) leaves the model as it was."""
    _check_options(opts)
    slots = [slot for group in placement.values() for slot in group]
    if opts["td_keep_se"] and not any(td_block_class(b) is TDInvertedResidual for _, _, b in slots):
        raise ValueError("td_keep_se applies to InvertedResidual (MobileNetV3) blocks only, and none is chosen")
    kwargs = dict(t=opts["t"], m=opts["m"], mode=opts["td_mode"], order=opts["td_order"], pool=opts["td_pool"],
                  feedback=opts["td_feedback"], zero_init_step_norms=opts["td_zero_init_step_norms"],
                  keep_se=opts["td_keep_se"])
    for cls in {td_block_class(b) for _, _, b in slots}:
        cls.rec_layers(kwargs["m"])  # m is valid for every block type chosen (names the type and its choices)
    built = []
    for parent, name, block in slots:
        new = td_block_class(block)(block, **{k: v for k, v in kwargs.items()
                                              if k != "keep_se" or td_block_class(block) is TDInvertedResidual})
        built.append((parent, name, _like(new, block)))
    for parent, name, new in built:
        setattr(parent, name, new)


def _like(new: nn.Module, block: nn.Module) -> nn.Module:
    """The new TD parts on the block's device and in its floating-point dtype."""
    p = next(block.parameters(), None)
    if p is None:
        return new
    return new.to(device=p.device, dtype=p.dtype) if p.is_floating_point() else new.to(p.device)
