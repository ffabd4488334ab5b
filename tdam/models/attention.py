"""Baseline attention modules in their OFFICIAL form: SE, CBAM, ECA and FcaNet (FCA).

These are the comparison baselines of the TDAM paper (Jaiswal, Fernando, Tan, ECCV 2022,
https://arxiv.org/abs/2111.13470), which says it used the authors' released implementations:

- SE     Hu et al., "Squeeze-and-Excitation Networks" (CVPR 2018), as in moskomule/senet.pytorch.
- CBAM   Woo et al., "CBAM: Convolutional Block Attention Module" (ECCV 2018), Jongchan/attention-module.
- ECA    Wang et al., "ECA-Net: Efficient Channel Attention" (CVPR 2020), BangguWu/ECANet.
- FCA    Qin et al., "FcaNet: Frequency Channel Attention Networks" (ICCV 2021), cfzd/FcaNet ('top16' = FcaNet-TS).

timm ships SE/CBAM/ECA too, but its SE has biases and a hidden width rounded to multiples of 8, and its CBAM has no MLP
bias and pools [mean, max]; the classes below follow the official code (attribute names included, so official weights
map one-to-one). Every module takes the channel count as its first positional argument and accepts timm's
``device``/``dtype`` keywords, so it plugs into timm's ResNet through ``block_args=dict(attn_layer=...)`` (see
:func:`resnet_attn_layer`). :func:`add_fca_to_convnext` adds FCA to every block of a timm ConvNeXt.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function, trunc_normal_
from timm.models._features import FeatureGetterNet, FeatureHookNet, FeatureListNet
from timm.models.convnext import ConvNeXt, ConvNeXtBlock
from torch import nn

from tdam.validation import check_int

__all__ = [
    "SE", "CBAM", "ChannelGate", "SpatialGate", "ECA", "FCA", "MultiSpectralDCTLayer",
    "eca_kernel_size", "fca_frequency_indices", "dct_filters",
    "RESNET_ATTENTIONS", "RESNET_ARCHS", "RESNET_STAGE_CHANNELS", "ECA_KERNEL_RULES", "ECA_RELEASED_KERNELS",
    "FCA_RESNET_DCT_SIZES", "FCA_FREQ_METHODS", "CONVNEXT_FCA_DCT_SIZES",
    "ResNetAttnLayer", "resnet_attn_layer", "ConvNeXtBlockFCA", "add_fca_to_convnext",
]


def _hidden_width(channels: int, reduction: int) -> int:
    """Official bottleneck width of SE/CBAM/FCA: floor(C / r) (no rounding to multiples of 8 as in timm)."""
    check_int("channels", channels, 1)
    check_int("reduction", reduction, 1)
    hidden = channels // reduction
    if hidden < 1:
        raise ValueError(f"channels // reduction must be >= 1, got {channels} // {reduction} = 0")
    return hidden


# ---------------------------------------------------------------------------------------------------------------------
# SE (moskomule/senet.pytorch `SELayer`)
# ---------------------------------------------------------------------------------------------------------------------
def _excitation(channels: int, hidden: int, **dd) -> nn.Sequential:
    """The bias-free excitation MLP shared by SE (moskomule) and FcaNet: Linear, ReLU, Linear, Sigmoid."""
    return nn.Sequential(
        nn.Linear(channels, hidden, bias=False, **dd),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, channels, bias=False, **dd),
        nn.Sigmoid(),
    )


class SE(nn.Module):
    """Squeeze-and-Excitation, moskomule's ``SELayer``: GAP -> Linear(C, C//r) -> ReLU -> Linear(C//r, C) -> sigmoid.

    Both linears are bias-free (moskomule since Dec 2018), hidden width ``C // r``; they keep PyTorch's default init.
    Params: ``2 * C * (C // r)``.

    The squeeze is written ``x.mean((2, 3))`` (the official ``AdaptiveAvgPool2d(1)`` computes the same): ptflops'
    pytorch backend counts an ``nn.AdaptiveAvgPool2d`` twice (module hook + functional patch) and a mean not at all,
    so written as a mean SE, ECA and FCA (whose DCT pooling is not counted either) get comparable MACs, as in the
    paper's table.
    """

    def __init__(self, channels: int, reduction: int = 16, *, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        hidden = _hidden_width(channels, reduction)
        self.fc = _excitation(channels, hidden, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        y = self.fc(x.mean((2, 3))).view(n, c, 1, 1)  # squeeze = GAP, see the note in the class docstring
        return x * y


# ---------------------------------------------------------------------------------------------------------------------
# CBAM (Jongchan/attention-module, MODELS/cbam.py)
# ---------------------------------------------------------------------------------------------------------------------
class ChannelGate(nn.Module):
    """CBAM channel attention: one shared MLP (Linear WITH bias, C -> C//r -> C) applied to the global average- and
    the global max-pooled descriptors; the two outputs are summed, then passed through a sigmoid."""

    def __init__(self, gate_channels: int, reduction_ratio: int = 16, *, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        hidden = _hidden_width(gate_channels, reduction_ratio)
        self.gate_channels = gate_channels
        self.mlp = nn.Sequential(  # indices 1 and 3 hold the linears, as in the official `mlp`
            nn.Flatten(),
            nn.Linear(gate_channels, hidden, **dd),
            nn.ReLU(),
            nn.Linear(hidden, gate_channels, **dd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        # kernel = stride = (H, W): global pooling, written the official way
        pooled = torch.cat([F.avg_pool2d(x, size, stride=size), F.max_pool2d(x, size, stride=size)])
        att = self.mlp(pooled).view(2, x.shape[0], -1).sum(0)  # shared MLP on both descriptors, summed
        return x * torch.sigmoid(att)[:, :, None, None]


class _ConvBN(nn.Module):
    """The official ``BasicConv(..., relu=False)``: bias-free conv then BatchNorm(eps 1e-5, momentum 0.01)."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, *, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, padding=(kernel_size - 1) // 2, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    """CBAM spatial attention: channel pool [max over C, mean over C] (that order) -> Conv2d(2, 1, 7, pad 3, no bias)
    -> BatchNorm2d(1) -> sigmoid -> multiply (broadcast over channels). Params: 98 + 2 = 100."""

    kernel_size = 7

    def __init__(self, *, device=None, dtype=None) -> None:
        super().__init__()
        self.spatial = _ConvBN(2, 1, self.kernel_size, device=device, dtype=dtype)

    @staticmethod
    def compress(x: torch.Tensor) -> torch.Tensor:
        """The official ``ChannelPool``: (N, 2, H, W) with channel 0 = max over C and channel 1 = mean over C."""
        return torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class CBAM(nn.Module):
    """CBAM (official): :class:`ChannelGate` followed by :class:`SpatialGate`, applied in sequence.

    Initialisation reproduces the official ResNet's init loop for the module's own keys: spatial conv kaiming-normal
    (fan_out), spatial BN gamma = 0 and beta = 0 (so each spatial gate starts at sigmoid(0) = 0.5), all biases
    (the MLP's included) = 0; the MLP weights keep PyTorch's default Linear init.
    Params: ``2*C*(C//r) + C//r + C + 100``.
    """

    def __init__(self, gate_channels: int, reduction_ratio: int = 16, *, device=None, dtype=None) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(gate_channels, reduction_ratio, device=device, dtype=dtype)
        self.SpatialGate = SpatialGate(device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.SpatialGate.spatial.conv.weight, mode="fan_out")
        nn.init.zeros_(self.SpatialGate.spatial.bn.weight)
        nn.init.zeros_(self.SpatialGate.spatial.bn.bias)
        nn.init.zeros_(self.ChannelGate.mlp[1].bias)
        nn.init.zeros_(self.ChannelGate.mlp[3].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


# ---------------------------------------------------------------------------------------------------------------------
# ECA (BangguWu/ECANet `eca_layer`)
# ---------------------------------------------------------------------------------------------------------------------
def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size (paper Eq. 9), ``k = |log2(C)/gamma + b/gamma|_odd`` with gamma=2, b=1.

    ``|t|_odd`` is implemented as in the paper's code form: ``t = int(|(log2 C + b) / gamma|)`` (truncation), then
    ``k = t`` if t is odd else ``t + 1``. C = 64 -> 3, 128/256/512/1024 -> 5, 2048 -> 7 (16..127 -> 3).
    """
    check_int("channels", channels, 1)
    check_int("gamma", gamma, 1)
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient Channel Attention: GAP -> Conv1d(1, 1, k, padding (k-1)//2, no bias) along the channel axis (zero
    padding at both ends, not circular) -> sigmoid -> multiply. ``k_size=None`` uses :func:`eca_kernel_size`.
    The Conv1d keeps PyTorch's default init (the official ResNet re-initialises only Conv2d and BN). Params: k.
    """

    def __init__(self, channels: int, k_size: int | None = None, *, device=None, dtype=None) -> None:
        super().__init__()
        if k_size is not None:
            check_int("k_size", k_size, 1)
        k = eca_kernel_size(channels) if k_size is None else k_size
        if k % 2 == 0:
            raise ValueError(f"k_size must be odd (padding (k-1)//2 keeps the channel count only then), got {k}")
        self.k_size = k
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False, device=device, dtype=dtype)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        y = self.conv(x.mean((2, 3)).view(n, 1, c))  # GAP (see SE's note), channels as a 1-D sequence
        return x * self.sigmoid(y).view(n, c, 1, 1)


# ---------------------------------------------------------------------------------------------------------------------
# FcaNet (cfzd/FcaNet, model/layer.py)
# ---------------------------------------------------------------------------------------------------------------------
# Frequency lists of `get_freq_indices`, on a 7x7 grid: x/u indexes H (dim 2), y/v indexes W (dim 3).
_FREQ_TABLES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "top": ((0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1),
            (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3)),
    "low": ((0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4),
            (0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3)),
    "bot": ((6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6),
            (6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3)),
}
FCA_FREQ_METHODS: tuple[str, ...] = tuple(f"{kind}{n}" for kind in _FREQ_TABLES for n in (1, 2, 4, 8, 16, 32))


def fca_frequency_indices(freq_sel: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The official ``get_freq_indices``: the first N (u, v) pairs of the 'top' (FcaNet-TS), 'low' or 'bot' list,
    on the 7x7 grid, as two tuples (u along H, v along W)."""
    if freq_sel not in FCA_FREQ_METHODS:
        raise ValueError(f"freq_sel must be one of {FCA_FREQ_METHODS}, got {freq_sel!r}")
    u, v = _FREQ_TABLES[freq_sel[:3]]
    n = int(freq_sel[3:])
    return u[:n], v[:n]


def dct_filters(channels: int, dct_h: int, dct_w: int, u: Sequence[int], v: Sequence[int],
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """FcaNet's fixed DCT filter bank, shape (C, dct_h, dct_w).

    The channels are split into ``len(u)`` contiguous groups; group i holds the 2-D orthonormal DCT-II basis
    ``b(h, u_i, H) * b(w, v_i, W)`` with ``b(p, f, N) = cos(pi f (p + 0.5) / N) / sqrt(N)``, times sqrt(2) if f != 0.
    The frequencies are used as given (scaling to the DCT size is the caller's job). Built in float64 like the
    official python-``math`` loop, then cast to ``dtype`` (default: torch's default dtype).
    """
    if len(u) != len(v) or not u:
        raise ValueError(f"u and v must be non-empty and of equal length, got {len(u)} and {len(v)}")
    if channels % len(u):
        raise ValueError(f"channels ({channels}) must be divisible by the number of frequencies ({len(u)})")

    def basis(freqs: Sequence[int], size: int) -> torch.Tensor:  # (F, size)
        f = torch.tensor(freqs, dtype=torch.float64)[:, None]
        p = torch.arange(size, dtype=torch.float64)[None, :]
        scale = torch.where(f == 0, torch.ones_like(f), torch.full_like(f, math.sqrt(2.0))) / math.sqrt(size)
        return torch.cos(math.pi * f * (p + 0.5) / size) * scale

    filters = basis(u, dct_h)[:, :, None] * basis(v, dct_w)[:, None, :]  # (F, H, W)
    return filters.repeat_interleave(channels // len(u), dim=0).to(dtype or torch.get_default_dtype())


def _check_4d(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")


def _resize_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``x`` itself if its (H, W) is (h, w), else ``adaptive_avg_pool2d(x, (h, w))`` (FCA's descriptor input)."""
    return x if tuple(x.shape[-2:]) == (h, w) else F.adaptive_avg_pool2d(x, (h, w))


# FX symbolic tracing (torchvision's create_feature_extractor, timm's fx features) cannot branch on a traced tensor's
# shape: the checks above stay single call nodes of the traced graph (torch.fx.wrap serves every tracer, timm's list
# serves the tracer timm builds). torch.export and ONNX trace through them as usual (shapes are static there).
torch.fx.wrap("_check_4d")
torch.fx.wrap("_resize_to")
register_notrace_function(_check_4d)
register_notrace_function(_resize_to)


class MultiSpectralDCTLayer(nn.Module):
    """FcaNet's multi-spectral pooling: ``y[n, c] = sum_{h,w} x[n, c, h, w] * weight[c, h, w]``.

    ``weight`` is a fixed (non-learnable) buffer, persistent in the state_dict and not counted in ``parameters()``.
    Group 0 of 'top16' is frequency (0, 0), i.e. ``sqrt(H*W) * GAP``.
    """

    weight: torch.Tensor

    def __init__(self, height: int, width: int, mapper_x: Sequence[int], mapper_y: Sequence[int], channel: int,
                 *, device=None, dtype=None) -> None:
        super().__init__()
        weight = dct_filters(channel, height, width, mapper_x, mapper_y, dtype=dtype)
        self.register_buffer("weight", weight.to(device), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d(x)
        return (x * self.weight).sum((2, 3))


class FCA(nn.Module):
    """FcaNet's ``MultiSpectralAttentionLayer`` (frequency channel attention).

    The 7x7-grid frequencies of ``freq_sel`` are scaled by ``dct_h // 7`` and ``dct_w // 7`` (same absolute
    frequency at every resolution). If the input's (H, W) differs from (dct_h, dct_w) it is first resized with
    ``adaptive_avg_pool2d`` for the descriptor only. Then DCT pooling -> Linear(C, C//r, no bias) -> ReLU ->
    Linear(C//r, C, no bias) -> sigmoid, and the ORIGINAL x is rescaled. Params: ``2*C*(C//r)``; buffer C*dct_h*dct_w.

    DCT sizes below 7 are rejected: the official integer scaling would turn every frequency into (0, 0).
    """

    def __init__(self, channels: int, dct_h: int, dct_w: int, reduction: int = 16, freq_sel: str = "top16",
                 *, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        for name, size in (("dct_h", dct_h), ("dct_w", dct_w)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 7:
                raise ValueError(f"{name} must be an int >= 7 (the 7x7-grid frequencies are scaled by {name} // 7, "
                                 f"which is 0 below 7 and collapses every frequency to (0, 0)), got {size!r}")
        hidden = _hidden_width(channels, reduction)
        u, v = fca_frequency_indices(freq_sel)
        if channels % len(u):
            raise ValueError(f"FCA with freq_sel={freq_sel!r} needs channels divisible by {len(u)} "
                             f"(one contiguous channel group per frequency), got channels={channels}")
        self.dct_h, self.dct_w, self.freq_sel = dct_h, dct_w, freq_sel
        u_scaled = [f * (dct_h // 7) for f in u]
        v_scaled = [f * (dct_w // 7) for f in v]
        self.dct_layer = MultiSpectralDCTLayer(dct_h, dct_w, u_scaled, v_scaled, channels, **dd)
        self.fc = _excitation(channels, hidden, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.dct_layer(_resize_to(x, self.dct_h, self.dct_w)))
        return x * y[:, :, None, None]


# ---------------------------------------------------------------------------------------------------------------------
# timm ResNet integration
# ---------------------------------------------------------------------------------------------------------------------
RESNET_ATTENTIONS: tuple[str, ...] = ("se", "cbam", "eca", "fca")
RESNET_ARCHS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101")
# Channel count C the module sees in layer1..layer4 (block output: planes * expansion).
RESNET_STAGE_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}
ECA_KERNEL_RULES: tuple[str, ...] = ("adaptive", "released")
# k per stage of the released ECA-Net checkpoints (names k3577 / k3357 / k3557 / k3357); not what Eq. 9 gives.
ECA_RELEASED_KERNELS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (3, 5, 7, 7),
    "resnet34": (3, 3, 5, 7),
    "resnet50": (3, 5, 5, 7),
    "resnet101": (3, 3, 5, 7),
}
# FcaNet's c2wh = {64: 56, 128: 28, 256: 14, 512: 7}, keyed by planes, i.e. by stage: the 224-input block-output sizes.
FCA_RESNET_DCT_SIZES: tuple[int, int, int, int] = (56, 28, 14, 7)


class ResNetAttnLayer:
    """``channels -> nn.Module`` factory plugging an official baseline into every block of a timm ResNet.

    timm's BasicBlock/Bottleneck call ``create_attn(attn_layer, outplanes, device=..., dtype=...)``, which calls a
    non-string ``attn_layer`` as ``attn_layer(outplanes, **kwargs)``. Each ResNet stage has its own block-output width,
    so the channel count identifies the stage, which fixes ECA's released per-stage k and FCA's DCT size (c2wh).
    """

    def __init__(self, name: str, arch: str, eca_kernels: str = "adaptive") -> None:
        if name not in RESNET_ATTENTIONS:
            raise ValueError(f"attention must be one of {RESNET_ATTENTIONS}, got {name!r}")
        if arch not in RESNET_ARCHS:
            raise ValueError(f"arch must be one of {RESNET_ARCHS}, got {arch!r}")
        if eca_kernels not in ECA_KERNEL_RULES:
            raise ValueError(f"eca_kernels must be one of {ECA_KERNEL_RULES}, got {eca_kernels!r}")
        self.name, self.arch, self.eca_kernels = name, arch, eca_kernels

    def stage_index(self, channels: int) -> int:
        """0-based stage (layer1 -> 0) whose blocks output ``channels``."""
        widths = RESNET_STAGE_CHANNELS[self.arch]
        if channels not in widths:
            raise ValueError(f"{self.arch} blocks output one of {widths} channels, got {channels}")
        return widths.index(channels)

    def __call__(self, channels: int, *, device=None, dtype=None) -> nn.Module:
        dd = {"device": device, "dtype": dtype}
        stage = self.stage_index(channels)
        if self.name == "se":
            return SE(channels, **dd)
        if self.name == "cbam":
            return CBAM(channels, **dd)
        if self.name == "eca":
            k = ECA_RELEASED_KERNELS[self.arch][stage] if self.eca_kernels == "released" else None
            return ECA(channels, k, **dd)
        size = FCA_RESNET_DCT_SIZES[stage]
        return FCA(channels, size, size, **dd)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, arch={self.arch!r}, eca_kernels={self.eca_kernels!r})"


def resnet_attn_layer(name: str, *, arch: str, eca_kernels: str = "adaptive") -> ResNetAttnLayer:
    """The ``attn_layer`` for ``timm.create_model(arch, block_args=dict(attn_layer=...))``.

    ``name`` in {'se', 'cbam', 'eca', 'fca'}; ``arch`` in {'resnet18', 'resnet34', 'resnet50', 'resnet101'};
    ``eca_kernels``: 'adaptive' (paper Eq. 9, :func:`eca_kernel_size`) or 'released' (:data:`ECA_RELEASED_KERNELS`).
    """
    return ResNetAttnLayer(name, arch, eca_kernels)


# ---------------------------------------------------------------------------------------------------------------------
# timm ConvNeXt integration (FCA only)
# ---------------------------------------------------------------------------------------------------------------------
# True block-output sizes of ConvNeXt-T stages for a 224 input (reductions 4/8/16/32), like FcaNet's c2wh for ResNet.
CONVNEXT_FCA_DCT_SIZES: tuple[int, int, int, int] = (56, 28, 14, 7)


class ConvNeXtBlockFCA(ConvNeXtBlock):
    """timm ConvNeXt block with FCA on the residual branch: dwconv -> LN -> MLP (pwconv1, GELU, pwconv2) -> **FCA**
    -> layer-scale gamma -> drop-path -> + shortcut.

    FCA sits where it sits in ResNet: at the end of the residual branch, before the addition. It comes before the
    layer scale so that its descriptor sees the branch's features rather than features scaled by gamma (1e-6 at
    init); the gate is per channel like gamma, so only the descriptor depends on this choice.
    """

    fca: FCA

    def __init__(self, *args: Any, dct_size: int = 7, **kwargs: Any) -> None:
        """``ConvNeXtBlock``'s arguments plus the FCA's DCT size."""
        super().__init__(*args, **kwargs)
        self.fca = FCA(self.conv_dw.out_channels, dct_size, dct_size,
                       device=kwargs.get("device"), dtype=kwargs.get("dtype"))

    @classmethod
    def from_block(cls, block: ConvNeXtBlock, dct_size: int) -> ConvNeXtBlockFCA:
        """A block that REUSES ``block``'s layers (same objects, same parameter names) plus a new ``fca``."""
        if type(block) is not ConvNeXtBlock:
            raise TypeError(f"expected a timm ConvNeXtBlock, got {type(block).__name__}")
        new = cls.__new__(cls)
        # shallow copies of the Module's dicts: the submodules/parameters are shared, the containers are not
        new.__dict__.update({k: copy.copy(v) if isinstance(v, dict) else v for k, v in vars(block).items()})
        ref = block.conv_dw.weight
        channels = block.conv_dw.out_channels
        new.fca = FCA(channels, dct_size, dct_size, device=ref.device, dtype=ref.dtype)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        x = self.fca(x)
        if self.gamma is not None:
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(x) + self.shortcut(shortcut)


_FEATURE_NETS = (FeatureListNet, FeatureHookNet, FeatureGetterNet)


def add_fca_to_convnext(model: ConvNeXt, dct_sizes: int | Sequence[int] = CONVNEXT_FCA_DCT_SIZES) -> ConvNeXt:
    """Replace, in place, every block of a timm ConvNeXt (or of a ``features_only`` network timm builds from one) by
    a :class:`ConvNeXtBlockFCA` (parameter names unchanged, plus ``stages.i.blocks.j.fca.*``). Returns ``model``.

    ``dct_sizes``: one DCT size per stage (default the true 224-input sizes 56/28/14/7, so no pooling is needed at
    224), or one int for all stages (7 = the FcaNet maintainer's "just set all to 7"). The FCA linears get ConvNeXt's
    init (truncated normal, std 0.02), as they would inside ConvNeXt's constructor.
    """
    from .steps import stage_modules

    stages = stage_modules(model) if isinstance(model, (ConvNeXt, *_FEATURE_NETS)) else None
    if stages is None or not any(isinstance(b, ConvNeXtBlock) for st in stages if st is not None
                                     for b in getattr(st, "blocks", ())):
        raise TypeError(f"expected a timm ConvNeXt (or its features_only network), got {type(model).__name__}")
    n_stages = len(stages)
    sizes = (dct_sizes,) * n_stages if isinstance(dct_sizes, int) else tuple(dct_sizes)
    if len(sizes) != n_stages:
        raise ValueError(f"dct_sizes needs one size per stage ({n_stages}), got {dct_sizes!r}")
    for stage, size in zip(stages, sizes):
        if stage is None:  # dropped by a features_only network (no requested feature after it)
            continue
        for j, block in enumerate(stage.blocks):
            new = ConvNeXtBlockFCA.from_block(block, size)
            for layer in new.fca.fc:
                if isinstance(layer, nn.Linear):
                    trunc_normal_(layer.weight, std=0.02)
            stage.blocks[j] = new
    return model
