"""``tdam.create_model``: the paper's TD and baseline models on timm's ResNet, ConvNeXt and MobileNetV3.

Besides the paper's architectures (``ARCHS``), any timm ResNet-family, ConvNeXt or MobileNetV3 architecture whose
blocks TD supports (resnet26, resnet152, wide_resnet50_2, resnext50_32x4d, convnext_small, ...) is accepted, plain
or with TD (the baselines keep the paper's architectures). TD goes in through :func:`tdam.models.retrofit.add_td`'s
code; its default placement is the paper's rule, the last two stages, except for the paper's own architectures,
which keep the placement of ``TD_DEFAULTS``.

A TD model is timm's baseline model whose chosen blocks are replaced by TD blocks that reuse the baseline block's
layers (same parameter names, plus ``td.*`` and the per-step norms ``bn{i}_{k}``). The models are also registered in
timm's registry (``timm.create_model('td_resnet50', t=2, m=1)``).
"""
from __future__ import annotations

import inspect
from typing import Any, Iterable, Mapping

import timm
import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, load_pretrained, register_model, resolve_pretrained_cfg
from timm.models._builder import _resolve_pretrained_source, pretrained_cfg_for_features
from timm.models.convnext import ConvNeXt
from timm.models.mobilenetv3 import MobileNetV3
from timm.models.resnet import ResNet

from tdam.validation import check_choice

from .blocks import TDBlock
from .convert import _resolve, convert_blocks, default_td_stages
from .steps import StepsMixin, _blocks, stage_modules, steps_class_for

__all__ = ["create_model", "ModelOptionError", "is_td_model", "check_model", "model_spec", "canonical_model", "model_option_names",
           "MODEL_OPTIONS", "ARCHS", "ATTENTIONS", "PLAIN_ALIASES", "TD_DEFAULTS", "TD_OPTION_DEFAULTS", "trained_steps"]

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "convnext_tiny", "mobilenetv3_large_100")
ATTENTIONS = (None, "td", "se", "cbam", "eca", "fca")
PLAIN_ALIASES = ("plain", "none", "")  # how YAML files, notebooks and CLIs spell attention=None (the plain backbone)
_ATTENTIONS_FOR = {
    **{a: ATTENTIONS for a in ARCHS if a.startswith("resnet")},
    "convnext_tiny": (None, "td", "fca"),
    "mobilenetv3_large_100": (None, "td"),  # the plain model keeps its own SE blocks
}

# Where TD goes by default (supplement §1 and the authors' code). Stage numbers are 1-based as the paper names them.
# ResNet-101: the authors' list for layer3 is (0, 1, 2, 8, 13, 18, 22, 23, 24, 25), but layer3 has 23 blocks (0..22)
# and their code skips the indices that do not exist, so 7 blocks get TD (this gives the published 46,754,856 params).
TD_DEFAULTS: dict[str, dict[str, Any]] = {
    "resnet18": dict(td_stages=(3, 4)),
    "resnet34": dict(td_stages=(3, 4)),
    "resnet50": dict(td_stages=(3, 4)),
    "resnet101": dict(td_stages=(3, 4), td_blocks={3: (0, 1, 2, 8, 13, 18, 22)}),
    "convnext_tiny": dict(td_stages=(3, 4)),
    "mobilenetv3_large_100": dict(td_stages=(4, 5, 6)),  # the last three InvertedResidual stages (80/112/160 ch)
}


# The TD options create_model uses when they are not given (the paper's TDjoint with t=2 steps, m=1).
TD_OPTION_DEFAULTS: dict[str, Any] = dict(t=2, m=1, td_mode="joint", td_order="channel_spatial",
                                          td_feedback="attention", td_pool="avg")


BASELINES = ("se", "cbam", "eca", "fca")
_TIMM_FAMILIES = (ResNet, ConvNeXt, MobileNetV3)  # timm model classes whose other architectures create_model takes
_ARCH_HINT = ("or any timm ResNet-family, ConvNeXt or MobileNetV3 architecture whose blocks TD supports (e.g. "
              "resnet26, resnet152, wide_resnet50_2, resnext50_32x4d, convnext_small)")


def _check_arch(arch: str, attention: str | None) -> None:
    """The paper's architectures take their attentions (``_ATTENTIONS_FOR``); any other timm name is checked for its
    family once built (:func:`_check_family`) and takes None or 'td'."""
    if arch in ARCHS:
        check_choice(f"attention (for {arch})", attention, _ATTENTIONS_FOR[arch])
        return
    if not isinstance(arch, str) or not timm.is_model(arch):
        raise ValueError(f"arch={arch!r} is not valid; valid choices are {list(ARCHS)} (the paper's), {_ARCH_HINT}")
    if attention in BASELINES:
        papers = [a for a in ARCHS if attention in _ATTENTIONS_FOR[a]]
        raise ValueError(f"attention={attention!r} (a baseline) exists for the paper's architectures only, {papers}; "
                         f"the baselines keep their own architecture lists. {arch} takes attention None or 'td'")
    check_choice(f"attention (for {arch})", attention, (None, "td"))


def _check_family(model: nn.Module, arch: str) -> None:
    if not isinstance(model, _TIMM_FAMILIES):
        raise ValueError(f"arch={arch!r} is a timm {type(model).__name__}, not a ResNet, ConvNeXt or MobileNetV3: "
                         f"create_model takes {list(ARCHS)} {_ARCH_HINT}; for other models build them yourself and "
                         "call tdam.add_td(model, td_stages=[module names])")


def _add_td(model: nn.Module, arch: str, *, td_stages, td_blocks, **opts: Any) -> None:
    """TD in the chosen blocks (add_td's code); the paper's architectures default to ``TD_DEFAULTS``, the others to
    the last two stages with supported blocks."""
    defaults = TD_DEFAULTS.get(arch, {})
    if td_stages is None:
        td_stages = defaults.get("td_stages") or default_td_stages(model)
    chosen = (td_stages,) if isinstance(td_stages, (int, str)) else tuple(td_stages)
    if td_blocks is None:  # the default block subsets (ResNet-101 layer3) apply to whichever stages are chosen
        td_blocks = {s: b for s, b in defaults.get("td_blocks", {}).items() if s in chosen}
    convert_blocks(_resolve(model, td_stages, td_blocks), opts)


def _strip_attention(model: nn.Module, attn_stages: Iterable[int]) -> None:
    """Keep the baseline attention (``block.se``) only in the given 1-based stages (Table 2's "SE(L3+4)")."""
    keep = set(attn_stages)
    stages = stage_modules(model)
    bad = [s for s in keep if not isinstance(s, int) or not 1 <= s <= len(stages)]
    if bad:
        raise ValueError(f"attn_stages has invalid stages {bad}; use numbers in 1..{len(stages)}")
    for i, stage in enumerate(stages, 1):
        if i not in keep and stage is not None:
            for block in _blocks(stage):
                block.se = None


class ModelOptionError(ValueError, TypeError):
    """An option neither create_model nor timm's model knows, or one of the wrong type: a ValueError for tdam's
    callers and the TypeError timm's own ``create_model`` raises for unknown model arguments."""


def create_model(
        arch: str,
        *,
        attention: str | None = None,
        num_classes: int = 1000,
        t: int | None = None,
        m: int | None = None,
        td_mode: str | None = None,
        td_order: str | None = None,
        td_feedback: str | None = None,
        td_pool: str | None = None,
        td_stages: Iterable[int] | None = None,
        td_blocks: Mapping[int, Iterable[int]] | None = None,
        td_zero_init_step_norms: bool | None = None,
        td_keep_se: bool | None = None,
        attn_stages: Iterable[int] | None = None,
        eca_kernels: str | None = None,
        pretrained: bool = False,
        **timm_kwargs: Any,
) -> nn.Module:
    """Build one of the paper's models.

    Args:
        arch: the paper's ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``convnext_tiny`` or
            ``mobilenetv3_large_100``, or any timm ResNet-family, ConvNeXt or MobileNetV3 architecture whose blocks TD
            supports (``resnet26``, ``resnet152``, ``wide_resnet50_2``, ``resnext50_32x4d``, ``convnext_small``, ...).
        attention: ``None`` (plain), ``'td'``, or a baseline: ``'se'``, ``'cbam'``, ``'eca'``, ``'fca'`` (the official
            modules in every ResNet block; FCA also on ConvNeXt-T; the paper's architectures only).
        num_classes: classifier size.
        t: computation steps (>= 1, default 2). m: feedback distance (default 1): 0-3 for Bottleneck, 0-2 for
            BasicBlock, 1-2 for ConvNeXt, 1 for MobileNetV3.
        td_mode: ``'top'``, ``'joint'`` (default) or ``'additive'``. td_order: ``'channel_spatial'`` (default),
            ``'spatial_channel'``, ``'channel'``, ``'spatial'``, ``'parallel'``. td_feedback: ``'attention'`` (default),
            ``'identity'``, ``'conv'``. td_pool: ``'avg'`` (default), ``'max'``, ``'avg+max'``.
        td_stages: 1-based stages (or module names) with TD (default: the paper's, see ``TD_DEFAULTS``; for other
            architectures the paper's rule, the last two stages with supported blocks). td_blocks: stage -> 0-based
            block indices (default: all blocks, except ResNet-101's layer3, which uses the authors' subset whenever
            layer3 has TD; pass ``td_blocks={3: range(23)}`` for all of it).
        td_zero_init_step_norms: zero-init the per-step norms' weights (default False: the authors' code keeps them at
            1 while zero-initialising the block's own last norm, timm's ``zero_init_last``).
        td_keep_se: MobileNetV3 only: keep the block's SE inside TD blocks (default False).
        attn_stages: baselines only: 1-based stages that keep the attention module (default: all).
        eca_kernels: ECA only: ``'adaptive'`` (the paper's rule, default) or ``'released'`` (per-stage kernels of the
            released checkpoints).
        pretrained: must be False: no downloads; load weights with ``tdam.load_checkpoint``.
        **timm_kwargs: passed to timm's model (``drop_rate``, ``drop_path_rate``, ``global_pool``, ...).

    timm's ``features_only=True`` (with ``out_indices``, ``output_stride``, ``feature_cls``), ``device`` and ``dtype``
    apply to the whole model, TD parts included; a features_only network has no step-wise methods (no logits).

    Raises:
        ValueError: for any invalid choice, naming the valid ones (ModelOptionError, also a TypeError, for an unknown
            model option).
    """
    _check_arch(arch, attention)
    if pretrained:
        raise ValueError("pretrained=True is not supported: tdam never downloads weights; build the model and load a "
                         "checkpoint file with tdam.load_checkpoint(model, path)")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes={num_classes!r} must be a non-negative integer")
    td_given = {k: v for k, v in dict(t=t, m=m, td_mode=td_mode, td_order=td_order, td_feedback=td_feedback,
                                      td_pool=td_pool, td_stages=td_stages, td_blocks=td_blocks,
                                      td_zero_init_step_norms=td_zero_init_step_norms,
                                      td_keep_se=td_keep_se).items() if v is not None}
    if td_given and attention != "td":
        raise ValueError(f"TD options {sorted(td_given)} given, but attention={attention!r}; "
                         "they apply only with attention='td'")
    if attention not in ("se", "cbam", "eca", "fca"):
        if attn_stages is not None:
            raise ValueError("attn_stages applies to the baselines 'se', 'cbam', 'eca', 'fca' only")
    if eca_kernels is not None and attention != "eca":
        raise ValueError("eca_kernels applies to attention='eca' only")

    base_kwargs = dict(timm_kwargs, num_classes=num_classes)
    if attention in ("se", "cbam", "eca", "fca") and arch.startswith("resnet"):
        from .attention import resnet_attn_layer

        layer = resnet_attn_layer(attention, arch=arch, eca_kernels=eca_kernels or "adaptive")
        base_kwargs["block_args"] = dict(base_kwargs.get("block_args") or {}, attn_layer=layer)
    try:
        model = timm.create_model(arch, pretrained=False, **base_kwargs)
    except TypeError as e:  # an option neither create_model nor timm's model knows, or one of the wrong type
        raise ModelOptionError(f"{arch}: {e}; valid model options are {model_option_names(arch)}") from None
    if not base_kwargs.get("features_only"):     # a features_only network has no logits to step
        _check_family(model, arch)
        model.__class__ = steps_class_for(model)  # timm's class + step-wise evaluation methods (adds no state)

    if attention == "fca" and arch == "convnext_tiny":
        from .attention import add_fca_to_convnext

        add_fca_to_convnext(model)
    if attention in ("se", "cbam", "eca", "fca") and attn_stages is not None:
        _strip_attention(model, attn_stages)
    if attention == "td":
        td = {**TD_OPTION_DEFAULTS, **{k: v for k, v in td_given.items() if k in TD_OPTION_DEFAULTS}}
        _add_td(model, arch, **td, td_stages=td_stages, td_blocks=td_blocks,
                td_zero_init_step_norms=bool(td_zero_init_step_norms), td_keep_se=bool(td_keep_se))

    config = dict(arch=arch, attention=attention, num_classes=num_classes, **td_given,
                  **{k: v for k, v in timm_kwargs.items() if k not in _PLACEMENT_KWARGS})
    for key, value in (("attn_stages", attn_stages), ("eca_kernels", eca_kernels)):
        if value is not None:
            config[key] = value
    if "td_stages" in config:
        config["td_stages"] = list(td_stages) if not isinstance(td_stages, (int, str)) else [td_stages]
    if "td_blocks" in config:
        config["td_blocks"] = {int(k) if isinstance(k, int) or str(k).isdigit() else k: list(v)
                               for k, v in config["td_blocks"].items()}
    model.model_config = config
    _describe_for_timm(model, config)
    return model


# create_model's own options (timm's model options, e.g. drop_path_rate, are accepted too: see model_option_names).
MODEL_OPTIONS = tuple(p for p in inspect.signature(create_model).parameters if p not in ("timm_kwargs", "pretrained"))


def model_option_names(arch: str) -> list[str]:
    """Every keyword a model description may hold for ``arch``: create_model's own and those of timm's model class
    (``drop_rate``, ``drop_path_rate``, ``global_pool``, ...)."""
    own = list(MODEL_OPTIONS)
    with torch.device("meta"):
        timm_cls = type(timm.create_model(arch, pretrained=False))
    theirs = {p.name for p in inspect.signature(timm_cls.__init__).parameters.values()
              if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"}
    return own + sorted(theirs - set(own))


def model_spec(arch: str | None = None, attention: str | None = None, **options: Any) -> dict[str, Any]:
    """A model description from flat parameters (notebook 01, ``ensure_checkpoint``): the mapping of
    :func:`create_model` keyword arguments. Options left at ``None`` are dropped (create_model's default, or the
    params file's value, applies); ``attention`` 'plain'/'none' becomes ``None``, the plain backbone.
    Example: ``model_spec('resnet50', 'td', t=3, m=None) == {'arch': 'resnet50', 'attention': 'td', 't': 3}``."""
    spec = {k: v for k, v in dict(arch=arch, attention=attention, **options).items() if v is not None}
    return canonical_model(spec)


def canonical_model(model: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the model description as YAML and JSON write it: the plain backbone spelled ``attention: None``
    (YAML/CLI 'plain'), tuples as lists (``td_stages``, the ``td_blocks`` block lists)."""
    out = dict(model)
    if isinstance(out.get("attention"), str) and out["attention"].lower() in PLAIN_ALIASES:
        out["attention"] = None
    for k, v in out.items():
        if isinstance(v, tuple):
            out[k] = list(v)
        elif isinstance(v, Mapping):
            out[k] = {kk: list(vv) if isinstance(vv, (tuple, range)) else vv for kk, vv in v.items()}
    return out


def check_model(model: Any) -> None:
    """Validate a model description (the mapping of :func:`create_model` keyword arguments) the only way that cannot
    drift from create_model: by building it on the meta device (no memory, no weights; well under a second for the
    largest models). Raises ValueError naming the valid choices, the option that does not apply to the chosen model
    (e.g. ``t`` with attention 'se'), or the valid model options for an unknown key."""
    if not isinstance(model, Mapping):
        raise ValueError(f"model={model!r}: expected a mapping of tdam.create_model options, e.g. "
                         "{arch: resnet50, attention: td, t: 2, m: 1}")
    if "arch" not in model:
        raise ValueError(f"model: 'arch' is missing; valid choices are {list(ARCHS)}")
    with torch.device("meta"):
        create_model(**model)


def trained_steps(model_config: Mapping) -> int:
    """The computation steps ``t`` a model description was trained with: its ``t`` (``create_model``'s default when
    unset) for a TD model; 1 without TD."""
    if model_config.get("attention") != "td":
        return 1
    return int(model_config.get("t") or TD_OPTION_DEFAULTS["t"])


def is_td_model(model: nn.Module) -> bool:
    """True for a model with TD blocks (computation steps); plain models get only the ``last`` metric."""
    return any(isinstance(m, TDBlock) for m in model.modules())


# ---------------------------------------------------------------------------------------------------------------------
# timm registry entries: td_<arch> and the official baselines <attn>_<arch>, e.g. timm.create_model('td_resnet50').

def _cfg(**kwargs: Any) -> dict[str, Any]:
    """timm's pretrained_cfg fields for the paper's ImageNet protocol: train and test at 224 px, resize to 256 and
    center-crop 224 (crop_pct 0.875), ImageNet mean/std. ``url`` is empty: tdam publishes no weights."""
    return dict(url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                interpolation="bilinear", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                test_input_size=(3, 224, 224), test_crop_pct=0.875, license="mit", **kwargs)


_RESNET_CFG = dict(first_conv="conv1", classifier="fc")
# Tag 'untrained' (timm's tag for a config without weights): ``timm.create_model('td_resnet50')`` resolves to it.
default_cfgs = generate_default_cfgs({f"{name}.untrained": cfg for name, cfg in {
    **{f"td_{a}": _cfg(**_RESNET_CFG) for a in ARCHS if a.startswith("resnet")},
    **{f"{att}_{a}": _cfg(**_RESNET_CFG) for att in ("se", "cbam", "eca", "fca") for a in ARCHS
       if a.startswith("resnet")},
    "td_convnext_tiny": _cfg(first_conv="stem.0", classifier="head.fc"),
    "fca_convnext_tiny": _cfg(first_conv="stem.0", classifier="head.fc"),
    "td_mobilenetv3_large_100": _cfg(first_conv="conv_stem", classifier="classifier"),
}.items()})


def _describe_for_timm(model: nn.Module, config: Mapping[str, Any]) -> None:
    """What timm's tools read from a model built by :func:`create_model`: ``pretrained_cfg`` (the registered name's
    config, so ``architecture`` names the tdam model, not timm's base arch) and ``_model_args`` (the options that
    rebuild it; timm.create_model adds the keywords it was called with, and ``save_for_hf`` writes them to
    ``config.json``)."""
    name = f"{config['attention']}_{config['arch']}"
    if config["attention"] is not None and name in default_cfgs:
        cfg = resolve_pretrained_cfg(name).to_dict()
        features = not isinstance(model, StepsMixin)      # a features_only network (timm's wrapper)
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(cfg) if features else cfg
    # timm's own build recorded the base model's keywords (e.g. a baseline's attn_layer object, not JSON): replace
    # them by create_model's options, minus what the registered name already fixes
    model._model_args = {k: v for k, v in canonical_model(config).items() if k not in ("arch", "attention")}


_PLACEMENT_KWARGS = ("device", "dtype")  # runtime placement: not part of the model description
_LOCAL_SOURCES = ("file", "local-dir")  # timm's weight sources that need no network


def _entry(arch: str, attention: str, pretrained: bool, kwargs: dict) -> nn.Module:
    """Build a registered model for ``timm.create_model``. ``pretrained=True`` loads weights only from a local source:
    a folder written by ``timm.models.save_for_hf`` (``timm.create_model('local-dir:<folder>', pretrained=True)``)
    or ``pretrained_cfg_overlay=dict(file=<path>)``; tdam never downloads."""
    name = f"{attention}_{arch}"
    cfg = resolve_pretrained_cfg(name, pretrained_cfg=kwargs.pop("pretrained_cfg", None),
                                 pretrained_cfg_overlay=kwargs.pop("pretrained_cfg_overlay", None)).to_dict()
    kwargs.pop("cache_dir", None)
    source_args = kwargs.pop("pretrained_model_args", None) or {}
    features = bool(kwargs.get("features_only"))
    if pretrained:
        source = _resolve_pretrained_source(cfg)[0]
        if source not in _LOCAL_SOURCES:
            raise ValueError(f"pretrained=True for {name}: tdam publishes no weights and never downloads; load a local "
                             "folder saved by timm.models.save_for_hf with timm.create_model('local-dir:<folder>', "
                             "pretrained=True), or a checkpoint with tdam.load_checkpoint(model, path)")
        if features:
            raise ValueError("pretrained=True with features_only=True: build the classifier from the local weights, "
                             "then take its features (model.forward_intermediates or timm's FeatureListNet)")
    model = create_model(arch, attention=attention, **kwargs)
    model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(cfg) if features else cfg
    model.pretrained_model_args = dict(source_args)
    if pretrained:
        load_pretrained(model, pretrained_cfg=cfg, num_classes=model.num_classes,
                        in_chans=kwargs.get("in_chans", 3), strict=True)
    return model


@register_model
def td_resnet18(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _entry("resnet18", "td", pretrained, kwargs)


@register_model
def td_resnet34(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _entry("resnet34", "td", pretrained, kwargs)


@register_model
def td_resnet50(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _entry("resnet50", "td", pretrained, kwargs)


@register_model
def td_resnet101(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _entry("resnet101", "td", pretrained, kwargs)


@register_model
def td_convnext_tiny(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _entry("convnext_tiny", "td", pretrained, kwargs)


@register_model
def td_mobilenetv3_large_100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _entry("mobilenetv3_large_100", "td", pretrained, kwargs)


@register_model
def fca_convnext_tiny(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _entry("convnext_tiny", "fca", pretrained, kwargs)


def _register_resnet_baselines() -> None:
    for att in ("se", "cbam", "eca", "fca"):
        for arch in ARCHS:
            if arch.startswith("resnet"):
                def fn(pretrained: bool = False, _arch=arch, _att=att, **kwargs: Any) -> nn.Module:
                    return _entry(_arch, _att, pretrained, kwargs)
                fn.__name__ = fn.__qualname__ = f"{att}_{arch}"
                fn.__module__ = __name__
                fn.__doc__ = f"ResNet{arch[6:]} with the official {att.upper()} module in every block."
                register_model(fn)


_register_resnet_baselines()
