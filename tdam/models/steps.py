"""Computation steps at inference (the paper's step protocol, supplement §1.2).

"To operate the TD model at different computational steps, the time steps of all blocks in the LAST TD stage are set
to 1 ... t" -- earlier stages keep their trained t. ``forward_steps`` returns the logits for every step count while
computing the stem and the earlier stages once. Every model built by ``tdam.create_model`` (plain ones too, with a
single step) is one of the classes below: timm's model class plus these methods. ``tdam.add_td`` gives a torchvision
ResNet :class:`TDTorchvisionResNet`, and any other model a class whose stages are the modules named in ``td_stages``
(:class:`NamedStagesMixin`: ``forward_steps`` there runs the whole model once per step count).

``forward_anytime(x, threshold)`` stops each image at the first step whose max-softmax reaches ``threshold``
(anytime prediction): the shared part once, each later step only on the images still going.
"""
from __future__ import annotations

import numbers
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
from timm.models.convnext import ConvNeXt
from timm.models.mobilenetv3 import MobileNetV3
from timm.models.resnet import ResNet
from torchvision.models import resnet as tv_resnet

from .blocks import TDBlock

__all__ = ["StepsMixin", "NamedStagesMixin", "TDResNet", "TDConvNeXt", "TDMobileNetV3", "TDTorchvisionResNet",
           "steps_class_for", "known_stages", "stage_modules"]


def _blocks(stage: nn.Module) -> nn.Module:
    """The blocks of a stage (ConvNeXt stages hold theirs in ``.blocks`` after the downsampling layer)."""
    return getattr(stage, "blocks", stage)


def _td_blocks_in(stage: nn.Module) -> list[TDBlock]:
    """The TD blocks inside a stage, in order (also a single named block or a module that holds blocks deeper)."""
    return [b for b in stage.modules() if isinstance(b, TDBlock)]


def stage_modules(model: nn.Module) -> list[nn.Module | None]:
    """The stages in order (stage number = index + 1) of a classifier or of the ``features_only`` network timm builds
    from it (FeatureListNet, FeatureHookNet, FeatureGetterNet, MobileNetV3Features). A stage that a feature network
    dropped because no requested feature comes after it (``out_indices``) is ``None``."""
    children = model._modules
    if len(children) == 1 and ("body" in children or "model" in children):  # FeatureHookNet / FeatureGetterNet
        return stage_modules(next(iter(children.values())))
    if "layer1" in children:  # ResNet
        return [children.get(f"layer{i}") for i in range(1, 5)]
    if "stages" in children:  # ConvNeXt
        return list(children["stages"])
    if "stages_0" in children:  # ConvNeXt (4 stages) flattened by a feature network
        return [children.get(f"stages_{i}") for i in range(4)]
    if "blocks" in children:  # MobileNetV3 / MobileNetV3Features
        return list(children["blocks"])
    raise ValueError(f"no stages found in {type(model).__name__}")


class StepsMixin:
    """Step-wise evaluation for models whose stages may hold TD blocks (see the module docstring)."""

    def stage_list(self) -> list[nn.Module]:
        """The stages in order (stage number = index + 1), as run by ``forward_features``."""
        raise NotImplementedError

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_post(self, x: torch.Tensor) -> torch.Tensor:
        """What ``forward_features`` does after the last stage (e.g. ConvNeXt's ``norm_pre``)."""
        return x

    def td_blocks(self, stage: int | None = None) -> list[TDBlock]:
        """TD blocks of a stage (1-based number) or, by default, of the last stage that has any."""
        stages = self.stage_list()
        if stage is None:
            stage = self.last_td_stage
            if stage is None:
                return []
        if not 1 <= stage <= len(stages):
            raise ValueError(f"stage={stage} is not valid; this model has stages 1..{len(stages)}")
        return _td_blocks_in(stages[stage - 1])

    @property
    def last_td_stage(self) -> int | None:
        """1-based number of the last stage holding TD blocks (None for a model without TD)."""
        found = [i + 1 for i, s in enumerate(self.stage_list()) if _td_blocks_in(s)]
        return found[-1] if found else None

    @property
    def td_steps(self) -> int:
        """Current number of computation steps of the last TD stage (1 for a model without TD)."""
        blocks = self.td_blocks()
        return blocks[0].t if blocks else 1

    @contextmanager
    def steps(self, t: int, stage: int | None = None) -> Iterator[None]:
        """Run the blocks of the last TD stage (or ``stage``) at ``t`` steps inside the ``with``; always restores."""
        blocks = self.td_blocks(stage)
        if not blocks:
            if t != 1:
                raise ValueError(f"t={t}: this model has no TD blocks{'' if stage is None else f' in stage {stage}'}, "
                                 "so only t=1 is valid")
            yield
            return
        most = min(b._n_step_norms + 1 for b in blocks)
        if not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= most:
            raise ValueError(f"t={t!r} is not valid; these TD blocks have per-step norms for t in 1..{most}")
        saved = [b.t for b in blocks]
        try:
            for b in blocks:
                b.t = t
            yield
        finally:
            for b, old in zip(blocks, saved):
                b.t = old

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """What every step starts from: the stem and the stages before the last TD stage (run once per image)."""
        stages = self.stage_list()
        x = self.forward_stem(x)
        for stage in stages[:(self.last_td_stage or len(stages)) - 1]:
            x = stage(x)
        return x

    def forward_step(self, h: torch.Tensor, k: int, features: bool = False):
        """Step ``k`` from the shared map ``h`` (:meth:`forward_shared`): the last TD stage at ``k`` steps, the
        stages after it and the head; logits, or ``(feature_map, logits)`` with ``features=True``."""
        stages = self.stage_list()
        with self.steps(k):
            for stage in stages[(self.last_td_stage or len(stages)) - 1:]:
                h = stage(h)
            f = self.forward_post(h)
            logits = self.forward_head(f)
        return (f, logits) if features else logits

    def forward_steps(self, x: torch.Tensor, features: bool = False) -> list:
        """Logits for steps 1 .. t of the last TD stage; stem and earlier stages run once.

        With ``features=True`` each entry is ``(feature_map, logits)``, the feature map being what
        ``forward_features`` returns at that step (still in the autograd graph, e.g. for Grad-CAM).
        Meant for evaluation: in train mode every step updates the BatchNorm statistics it uses.
        """
        h = self.forward_shared(x)
        return [self.forward_step(h, k, features) for k in range(1, self.td_steps + 1)]

    def forward_anytime(self, x: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Anytime prediction: each image stops at the first step whose max-softmax is >= ``threshold``.

        Returns ``(logits, steps)``: logits (B, classes) of the step each image stopped at and ``steps`` (B,) int64,
        that step (1-based). The rule: the first step k in 1 .. t (``td_steps``) with ``softmax(logits_k).max() >=
        threshold`` (confidence computed in float32), else t. So ``threshold`` 0 stops every image at step 1 and any
        ``threshold`` > 1 runs every image to step t.

        Computation: :meth:`forward_shared` (the stem and earlier stages) runs once for the whole batch; step 1 runs
        on every image; step k+1 runs only on the images not yet confident after step k: their rows of the shared map
        are gathered (``h[keep]``, which keeps channels_last), the step runs on that smaller batch, and its logits are
        written back into the output (``index_copy``). An image that stops at step k has cost the shared part once
        plus steps 1 .. k, each a full run of the last TD stage at that step count (step k+1 re-runs the whole stage:
        only the first TD block's work of steps 1 .. k would carry over, every later block gets a different input);
        :func:`tdam.complexity.anytime_macs` counts it. When every image runs to step t this is ``forward_steps``.

        In eval mode the logits equal ``forward_steps(x)[steps[i] - 1][i]`` for every image i (up to the floating-
        point effect of the smaller batch). In train mode each step's BatchNorm layers normalise with, and update
        their running statistics from, the images still going at that step (a smaller batch than in
        ``forward_steps``; like any BatchNorm in train mode, it fails on a single image with a 1 x 1 map); gradients
        flow through the selected logits only. ``torch.compile``: the number of images going on to the next step is
        data-dependent (inherent to early exit), so the graph breaks there (``torch._dynamo.explain`` counts 2 breaks
        for t=2) and the later steps' batch sizes vary; ``torch.compile(model.forward_anytime, dynamic=True)`` gives
        the eager results with symbolic batch sizes.
        """
        threshold = _check_threshold(threshold)
        h = self.forward_shared(x)
        logits = self.forward_step(h, 1)
        n = logits.shape[0]
        steps = torch.ones(n, dtype=torch.long, device=logits.device)
        going = torch.arange(n, device=logits.device)  # batch indices of the images that ran the last step
        last = logits
        for k in range(2, self.td_steps + 1):
            keep = (last.detach().float().softmax(1).amax(1) < threshold).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            if keep.numel() < going.numel():
                going = going[keep]
                h = h[keep]  # advanced indexing keeps the memory format (index_select would drop channels_last)
            last = self.forward_step(h, k)
            logits = logits.index_copy(0, going, last.to(logits.dtype))
            steps = steps.index_fill(0, going, k)
        return logits, steps


def _check_threshold(threshold) -> float:
    """``threshold`` as a float; a clear error for anything but a real number >= 0."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not threshold >= 0:
        raise ValueError(f"threshold={threshold!r} is not valid: a max-softmax confidence, a real number >= 0 "
                         "(0: every image stops at step 1; > 1: every image runs all t steps)")
    return float(threshold)


class TDResNet(StepsMixin, ResNet):
    """timm ResNet with TD blocks in some stages (``layer1`` .. ``layer4`` are stages 1 .. 4)."""

    def stage_list(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))


class TDConvNeXt(StepsMixin, ConvNeXt):
    """timm ConvNeXt with TD blocks (``stages[0..3]`` are stages 1 .. 4, each with its downsampling)."""

    def stage_list(self) -> list[nn.Module]:
        return list(self.stages)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def forward_post(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_pre(x)


class TDMobileNetV3(StepsMixin, MobileNetV3):
    """timm MobileNetV3 with TD blocks (``blocks[0..6]`` are stages 1 .. 7)."""

    def stage_list(self) -> list[nn.Module]:
        return list(self.blocks)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv_stem(x))


class TDTorchvisionResNet(StepsMixin, tv_resnet.ResNet):
    """torchvision ResNet with TD blocks (``layer1`` .. ``layer4`` are stages 1 .. 4; head: avgpool, flatten, fc)."""

    def stage_list(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


class NamedStagesMixin(StepsMixin):
    """Steps for a model whose stages tdam does not know: its stages are the modules named in ``td_stages_names``
    (dotted names, in the model's order). The model's own ``forward`` is the only way through it, so
    ``forward_steps`` runs the whole model once per step count (same results, no shared stem computation), and
    ``forward_anytime`` runs it once per step on the images still going."""

    td_stage_names: tuple[str, ...] = ()  # set on the model by tdam.add_td
    _model_class: type = nn.Module  # the model's own class, under the derived one

    def stage_list(self) -> list[nn.Module]:
        return [self.get_submodule(name) for name in self.td_stage_names]

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """Nothing is shared between steps here: every step runs the whole model."""
        return x

    def forward_step(self, h: torch.Tensor, k: int, features: bool = False):
        """The whole model at ``k`` steps (its own ``forward``); logits only."""
        if features:
            raise ValueError(f"forward_steps(features=True) needs the feature map before the head, which tdam knows "
                             f"only for timm ResNet/ConvNeXt/MobileNetV3 and torchvision ResNet, not for "
                             f"{self._model_class.__name__}")
        with self.steps(k):
            return self(h)


# library model class -> its steps class (whose stage_list, forward_stem and head tdam knows)
_STEPS_CLASSES = ((ResNet, TDResNet), (ConvNeXt, TDConvNeXt), (MobileNetV3, TDMobileNetV3),
                  (tv_resnet.ResNet, TDTorchvisionResNet))
_DERIVED: dict[tuple[type, type], type] = {}


def _derive(steps_cls: type, model_cls: type) -> type:
    """``steps_cls`` mixed into a subclass of a library model (the subclass's own methods keep precedence over the
    library's, the step methods over both); one class per pair, so isinstance checks stay stable."""
    key = (steps_cls, model_cls)
    if key not in _DERIVED:
        _DERIVED[key] = type(f"TD{model_cls.__name__}", (steps_cls, model_cls),
                             {"__module__": model_cls.__module__, "_model_class": model_cls})
    return _DERIVED[key]


def known_stages(model: nn.Module) -> bool:
    """True when tdam knows the model's stages (numbered stages, a shared-stem ``forward_steps``)."""
    return isinstance(model, StepsMixin) and not isinstance(model, NamedStagesMixin) or any(
        isinstance(model, base) for base, _ in _STEPS_CLASSES)


def steps_class_for(model: nn.Module, stage_names: tuple[str, ...] | None = None) -> type:
    """The class that adds the step methods to ``model``'s class (no state: ``model.__class__`` can be swapped).

    timm ResNet/ConvNeXt/MobileNetV3 and torchvision ResNet get their known stages; any other model needs
    ``stage_names`` (the dotted names of its stages) and gets :class:`NamedStagesMixin`."""
    kind = type(model)
    if isinstance(model, StepsMixin) and not isinstance(model, NamedStagesMixin):
        return kind
    for base, cls in _STEPS_CLASSES:
        if isinstance(model, base):
            return cls if kind is base else _derive(cls, kind)
    if stage_names is None:
        raise ValueError(f"no step-wise version of {kind.__name__}: tdam knows the stages of timm ResNet/ConvNeXt/"
                         "MobileNetV3 and torchvision ResNet; name this model's stages (td_stages=['features.5', ...])")
    if isinstance(model, NamedStagesMixin):
        return kind
    return _derive(NamedStagesMixin, kind)
