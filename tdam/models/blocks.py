"""TD blocks: timm's residual blocks with top-down feedback over ``t`` computation steps.

A TD block re-runs the last ``m`` layers ``R`` of its residual branch (the *feedback distance*) ``t`` times. With
``B_0`` the branch activation just before ``R``: for k = 0 .. t-1, ``T_k = R_k(B_k)`` and, while k < t-1,
``B_{k+1} = TD(B_k, T_k)``. The branch output is ``T_{t-1}``; the shortcut always uses the block's original input, so
TD runs t-1 times and ``R`` runs t times. Step 0 uses the block's own norms, every later step k its own copy
``bn{i}_{k}`` (the authors' naming); convolutions are shared across steps. ``m = 0`` means no recurrence: the branch
output ``Y`` is modulated t times, ``Y <- TD(Y, Y)``.

Each TD block is built FROM a timm or torchvision block and reuses its layers under the same names, so a plain
timm/torchvision checkpoint initialises everything but the TD parts. :data:`TD_BLOCK_TYPES` lists the supported
blocks and their TD versions.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn as nn
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models.convnext import ConvNeXtBlock
from timm.models.resnet import BasicBlock, Bottleneck
from torchvision.models import resnet as tv_resnet

from tdam.validation import check_choice

from .td import TD_FEEDBACKS, ConvFeedback, TDAttention

__all__ = ["TDBlock", "TDBottleneck", "TDBasicBlock", "TDConvNeXtBlock", "TDInvertedResidual",
           "TDTorchvisionBottleneck", "TDTorchvisionBasicBlock", "TD_BLOCK_TYPES", "td_block_class", "td_block_from",
           "supported_block_names"]


class TDBlock(nn.Module):
    """Shared machinery of the TD blocks; subclasses list their branch layers and which of them are norms.

    Subclass attributes: ``layers`` (branch layer names in order), ``norms`` (the norm layers among them),
    and ``m_layers`` (feedback distance m -> number of trailing branch layers re-run).
    """

    layers: tuple[str, ...] = ()
    norms: tuple[str, ...] = ()
    m_layers: dict[int, int] = {}

    def _setup_td(
            self,
            *,
            t: int,
            m: int,
            mode: str,
            order: str,
            pool: str,
            feedback: str,
            bottom_channels: int,
            top_channels: int,
            same_size: bool,
            zero_init_step_norms: bool,
            init: Callable[[nn.Module], None] | None = None,
    ) -> None:
        if not isinstance(t, int) or isinstance(t, bool) or t < 1:
            raise ValueError(f"t={t!r} is not valid; the number of computation steps must be an integer >= 1")
        check_choice("td_feedback", feedback, TD_FEEDBACKS)
        if m == 0 and feedback != "attention":
            raise ValueError(f"td_feedback={feedback!r} needs m >= 1; with m=0 the only feedback is 'attention'")
        if feedback in ("identity", "conv") and not same_size:
            raise ValueError(
                f"td_feedback={feedback!r} replaces the bottom map by the top map, but in {type(self).__name__} "
                f"with m={m} they differ in spatial size (stride inside the re-run layers); use 'attention' or another m")
        if feedback == "identity" and bottom_channels != top_channels:
            raise ValueError(
                f"td_feedback='identity' needs equal bottom and top channels, got {bottom_channels} and {top_channels} "
                f"for {type(self).__name__} with m={m}; valid feedbacks here: 'attention', 'conv'")
        self.t, self.m, self.feedback = t, m, feedback
        self._rec = self.rec_layers(m)
        self._pre = self.layers[:len(self.layers) - len(self._rec)]
        self._rec_norms = tuple(n for n in self._rec if n in self.norms)
        ref = next(self.parameters(), None)  # the block's own layers: TD is created on their device, in their dtype
        dd = {} if ref is None else dict(device=ref.device, dtype=ref.dtype)
        if m and t == 1:
            self.td = None  # one step applies no feedback: no TD parameters that would never receive a gradient
        elif feedback == "attention":
            self.td = TDAttention(bottom_channels, top_channels, mode=mode, order=order, pool=pool, **dd)
        elif feedback == "conv":
            self.td = ConvFeedback(bottom_channels, top_channels, **dd)
        else:
            self.td = None
        if init is not None and self.td is not None:
            self.td.apply(init)
        self._n_step_norms = 0
        self.ensure_step_norms(t, zero_init=zero_init_step_norms)

    @classmethod
    def rec_layers(cls, m: int) -> tuple[str, ...]:
        """The names of the re-run layers R for feedback distance ``m`` (validated)."""
        check_choice(f"m (feedback distance of {cls.__name__})", m, tuple(cls.m_layers))
        return cls.layers[len(cls.layers) - cls.m_layers[m]:] if m else ()

    def ensure_step_norms(self, t: int, zero_init: bool = False) -> None:
        """Create the per-step norms ``bn{i}_{k}`` for steps k = 1 .. t-1 that do not exist yet (copies of the step-0
        norm, so on its device and in its dtype)."""
        for k in range(self._n_step_norms + 1, t):
            for name in self._rec_norms:
                norm = copy.deepcopy(getattr(self, name))
                norm.reset_parameters()
                if zero_init:
                    nn.init.zeros_(norm.weight)
                setattr(self, f"{name}_{k}", norm)
        self._n_step_norms = max(self._n_step_norms, t - 1)

    def _run(self, x: torch.Tensor, names: Sequence[str], k: int) -> torch.Tensor:
        for name in names:
            if k and name in self._rec_norms:
                name = f"{name}_{k}"
            x = getattr(self, name)(x)
        return x

    def _feedback(self, b: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        return top if self.td is None else self.td(b, top)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch over ``self.t`` steps (before attention/drop-path/shortcut)."""
        if self.t > self._n_step_norms + 1:
            raise ValueError(
                f"{type(self).__name__} was built for at most t={self._n_step_norms + 1} steps (it has per-step norms "
                f"for steps 1..{self._n_step_norms}); got t={self.t}")
        b = self._run(x, self._pre, 0)
        if self.m == 0:
            for _ in range(self.t):
                b = self.td(b, b)
            return b
        for k in range(self.t):
            top = self._run(b, self._rec, k)
            if k < self.t - 1:
                b = self._feedback(b, top)
        return top


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


class _ResNetTDBlock(TDBlock):
    """Common constructor and forward of the ResNet TD blocks (attributes shared with timm's or torchvision's block;
    torchvision's have no ``drop_path``/``dilation``, and reuse one ``relu`` module for every activation)."""

    last_act: str = ""

    def __init__(self, block: nn.Module, *, t: int = 2, m: int = 1, mode: str = "joint",
                 order: str = "channel_spatial", pool: str = "avg", feedback: str = "attention",
                 zero_init_step_norms: bool = False) -> None:
        super().__init__()
        rec = self.rec_layers(m)
        for name in (*self.layers, self.last_act, "downsample", "stride"):
            setattr(self, name, getattr(block, name))
        for name in ("drop_path", "dilation"):
            setattr(self, name, getattr(block, name, None))
        self.se = None  # a TD block's channel attention is the TD module itself
        strided = any(isinstance(getattr(self, n), nn.Conv2d) and getattr(self, n).stride != (1, 1) for n in rec) \
            or ("aa" in rec and not isinstance(self.aa, nn.Identity))
        self._setup_td(t=t, m=m, mode=mode, order=order, pool=pool, feedback=feedback,
                       bottom_channels=getattr(self, rec[0]).in_channels if m else self.out_channels,
                       top_channels=self.out_channels, same_size=not strided,
                       zero_init_step_norms=zero_init_step_norms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.branch(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        return getattr(self, self.last_act)(x)


class TDBottleneck(_ResNetTDBlock):
    """ResNet Bottleneck with TD. m=1: R = conv3, bn3; m=2: R = conv2 .. bn3; m=3: R = the whole branch."""

    layers = ("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3")
    norms = ("bn1", "bn2", "bn3")
    m_layers = {0: 0, 1: 2, 2: 7, 3: 10}
    last_act = "act3"

    @property
    def out_channels(self) -> int:
        return self.conv3.out_channels


class TDBasicBlock(_ResNetTDBlock):
    """ResNet BasicBlock with TD. m=1: R = conv2, bn2; m=2: R = the whole branch."""

    layers = ("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2")
    norms = ("bn1", "bn2")
    m_layers = {0: 0, 1: 2, 2: 7}
    last_act = "act2"

    @property
    def out_channels(self) -> int:
        return self.conv2.out_channels


class TDTorchvisionBottleneck(_ResNetTDBlock):
    """torchvision's ResNet Bottleneck with TD; m as in :class:`TDBottleneck` (m=1: R = conv3, bn3; m=2: R = conv2 ..
    bn3; m=3: the whole branch). Its one ``relu`` module serves every activation, as in torchvision."""

    layers = ("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3")
    norms = ("bn1", "bn2", "bn3")
    m_layers = {0: 0, 1: 2, 2: 5, 3: 8}
    last_act = "relu"

    @property
    def out_channels(self) -> int:
        return self.conv3.out_channels


class TDTorchvisionBasicBlock(_ResNetTDBlock):
    """torchvision's ResNet BasicBlock with TD; m as in :class:`TDBasicBlock` (m=1: R = conv2, bn2; m=2: the whole
    branch)."""

    layers = ("conv1", "bn1", "relu", "conv2", "bn2")
    norms = ("bn1", "bn2")
    m_layers = {0: 0, 1: 2, 2: 5}
    last_act = "relu"

    @property
    def out_channels(self) -> int:
        return self.conv2.out_channels


class TDConvNeXtBlock(TDBlock):
    """ConvNeXt block with TD (no per-step norms). m=1: R = pwconv2 (``mlp.fc2``), B = after GELU (4C channels);
    m=2: R = pwconv1, GELU, pwconv2, B = after the LayerNorm (C). Layer scale and drop-path apply once, to T_{t-1}."""

    layers = ("norm", "mlp.fc1", "mlp.act", "mlp.drop1", "mlp.norm", "mlp.fc2", "mlp.drop2")
    m_layers = {1: 2, 2: 6}

    def __init__(self, block: ConvNeXtBlock, *, t: int = 2, m: int = 1, mode: str = "joint",
                 order: str = "channel_spatial", pool: str = "avg", feedback: str = "attention",
                 zero_init_step_norms: bool = False) -> None:
        super().__init__()
        self.rec_layers(m)
        if block.use_conv_mlp:
            raise ValueError("TD supports ConvNeXt blocks with Linear MLPs (conv_mlp=False), as in convnext_tiny")
        for name in ("conv_dw", "norm", "mlp", "gamma", "shortcut", "drop_path"):
            setattr(self, name, getattr(block, name))
        width, chs = self.mlp.fc1.out_features, self.mlp.fc2.out_features
        self._setup_td(t=t, m=m, mode=mode, order=order, pool=pool, feedback=feedback,
                       bottom_channels=width if m == 1 else chs, top_channels=chs, same_size=True,
                       zero_init_step_norms=zero_init_step_norms, init=_convnext_init)

    def _run(self, x: torch.Tensor, names: Sequence[str], k: int) -> torch.Tensor:
        for name in names:
            x = self.get_submodule(name)(x)
        return x

    def _feedback(self, b: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        # branch maps are channels-last (N, H, W, C) here; TD works on (N, C, H, W) views of them
        if self.td is None:
            return top
        return self.td(b.permute(0, 3, 1, 2), top.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return super().branch(self.conv_dw(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.branch(x)
        if self.gamma is not None:
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(x) + self.shortcut(shortcut)


def _convnext_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.trunc_normal_(module.weight, std=0.02)


class TDInvertedResidual(TDBlock):
    """MobileNetV3 InvertedResidual with TD (not in the authors' code; our adaptation of their ResNet block).

    m=1 only: R = conv_pwl, bn3 (per-step bn3_k), B = the depthwise output after its activation. The block's SE is
    removed by default (TD is the block's channel attention); ``keep_se=True`` keeps it in front of B.
    """

    layers = ("conv_pw", "bn1", "conv_dw", "bn2", "aa", "se", "conv_pwl", "bn3")
    norms = ("bn1", "bn2", "bn3")
    m_layers = {1: 2}

    def __init__(self, block: nn.Module, *, t: int = 2, m: int = 1, mode: str = "joint",
                 order: str = "channel_spatial", pool: str = "avg", feedback: str = "attention",
                 zero_init_step_norms: bool = False, keep_se: bool = False) -> None:
        super().__init__()
        self.rec_layers(m)
        if getattr(block, "conv_s2d", None) is not None:
            raise ValueError("TD does not support InvertedResidual blocks with space-to-depth stems")
        for name in (*self.layers, "has_skip", "drop_path"):
            setattr(self, name, getattr(block, name))
        if not keep_se:
            self.se = nn.Identity()
        self._setup_td(t=t, m=m, mode=mode, order=order, pool=pool, feedback=feedback,
                       bottom_channels=self.conv_pwl.in_channels, top_channels=self.conv_pwl.out_channels,
                       same_size=True, zero_init_step_norms=zero_init_step_norms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.branch(x)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


# The supported blocks (exact library classes) and their TD versions; every TD option applies to every block, except
# that each TD version allows its own feedback distances m (its ``m_layers``) and only InvertedResidual has keep_se.
TD_BLOCK_TYPES: dict[type, type[TDBlock]] = {
    Bottleneck: TDBottleneck,
    BasicBlock: TDBasicBlock,
    ConvNeXtBlock: TDConvNeXtBlock,
    InvertedResidual: TDInvertedResidual,
    tv_resnet.Bottleneck: TDTorchvisionBottleneck,
    tv_resnet.BasicBlock: TDTorchvisionBasicBlock,
}


def supported_block_names() -> list[str]:
    """The supported blocks by their full names (timm's and torchvision's Bottleneck differ), for error messages."""
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in TD_BLOCK_TYPES]


def td_block_class(block: nn.Module) -> type[TDBlock] | None:
    """The TD version of ``block``'s type (subclasses included), or None when there is none."""
    for src, td_cls in TD_BLOCK_TYPES.items():
        if isinstance(block, src):
            return td_cls
    return None


def td_block_from(block: nn.Module, **td_options) -> TDBlock:
    """Build the TD version of a supported block (see :data:`TD_BLOCK_TYPES`); it reuses the block's layers."""
    td_cls = td_block_class(block)
    if td_cls is None:
        kind = type(block)
        raise ValueError(f"no TD version of {kind.__module__}.{kind.__qualname__}; TD blocks exist for "
                         f"{supported_block_names()}")
    if td_cls is not TDInvertedResidual:
        td_options.pop("keep_se", None)
    return td_cls(block, **td_options)
