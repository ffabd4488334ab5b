"""The top-down attention module (TD) of TDAM (Jaiswal, Fernando, Tan, ECCV 2022, https://arxiv.org/abs/2111.13470).

Vocabulary used throughout ``tdam``:

* *bottom* ``B`` (N, Cb, H, W): a feature map inside a residual branch; *top* ``T`` (N, Ct, H', W'): what the block's
  last layers make of it. TD uses the top to decide which bottom features to keep.
* *searchlight* ``s`` (N, Cb): a channel-importance vector computed from the pooled top (mode ``top``) or from the
  pooled top and bottom (modes ``joint``, ``additive``) by a bias-free bottleneck MLP with ``rd = Ct // 16`` units.
* *order*: how ``s`` is applied. ``channel_spatial`` (the paper's Chn->Sp, default) gates channels with ``sigmoid(s)``
  and then space with ``sigmoid(sum_c s_c * B1_c)`` -- the RAW searchlight weights the channels of the channel-gated map.

The MLP weights are stored as bias-free 1x1 convolutions, as in the authors' code (so their checkpoints load by
renaming only), but applied to the pooled vectors as matrix products.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function

from tdam.validation import check_choice

__all__ = ["TDAttention", "ConvFeedback", "TD_MODES", "TD_ORDERS", "TD_POOLS", "TD_FEEDBACKS"]

TD_MODES = ("top", "joint", "additive")
TD_ORDERS = ("channel_spatial", "spatial_channel", "channel", "spatial", "parallel")
TD_POOLS = ("avg", "max", "avg+max")
TD_FEEDBACKS = ("attention", "identity", "conv")


def _conv1x1(cin: int, cout: int, **dd) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1, bias=False, **dd)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class _GlobalAvgPool(torch.autograd.Function):
    """Global average pooling (N, C, H, W) -> (N, C) whose gradient keeps the input's memory format.

    ``x.mean((2, 3))`` (or adaptive pooling) hands back a stride-0 or NCHW gradient also for a channels-last map; the
    BatchNorm that produced the map then runs its backward on mixed formats, a slow path (5x slower on CPU).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last)
        return x.mean((2, 3))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = ctx.shape
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        return (grad / (h * w))[:, :, None, None].expand(n, c, h, w).contiguous(memory_format=fmt)


def _global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """``x.mean((2, 3))`` with the memory-format-keeping gradient of :class:`_GlobalAvgPool`."""
    return _GlobalAvgPool.apply(x)


def _pool(x: torch.Tensor, how: str) -> torch.Tensor:
    return _global_avg_pool(x) if how == "avg" else x.amax((2, 3))


def _spatial_logits(b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_c w[n, c] * b[n, c, h, w]`` -> (N, 1, H, W).

    For NCHW-contiguous maps one batched matrix product (N, 1, C) @ (N, C, HW); for channels-last (or other strided)
    maps a multiply and a reduction over the innermost channel axis, which avoids copying the map to NCHW. Both beat
    ``torch.einsum`` (which copies) by 1.5-3x forward+backward on CPU in our measurements.
    """
    n, c, h, wd = b.shape
    if b.is_contiguous():
        return torch.bmm(w.unsqueeze(1).to(b.dtype), b.view(n, c, h * wd)).view(n, 1, h, wd)
    return (b * w[:, :, None, None]).sum(1, keepdim=True)


# FX symbolic tracing (torchvision's create_feature_extractor, timm's fx features) cannot enter an autograd Function or
# branch on a tensor's layout: both functions stay single call nodes of the traced graph (torch.fx.wrap serves every
# tracer, timm's list serves the tracer timm builds). torch.export and ONNX trace through them as usual.
torch.fx.wrap("_global_avg_pool")
torch.fx.wrap("_spatial_logits")
register_notrace_function(_global_avg_pool)
register_notrace_function(_spatial_logits)


class TDAttention(nn.Module):
    """Top-down attention: modulates a bottom map ``B`` with a searchlight computed from the top map ``T``.

    Args:
        bottom_channels: ``Cb``, channels of the map being modulated.
        top_channels: ``Ct``, channels of the top map; the MLP width is ``rd = Ct // reduction``.
        mode: ``'top'`` (``s = W2 relu(W1 pt)``), ``'joint'`` (``s = W3 [relu(Wt pt), relu(Wb pb)]``, top part first) or
            ``'additive'`` (``s = W3 (relu(Wt pt) + relu(Wb pb))``; the public code calls it "bilinear").
        order: ``'channel_spatial'`` (default), ``'spatial_channel'``, ``'channel'``, ``'spatial'``, ``'parallel'``
            (both gates from the unmodulated ``B``). In ``spatial_channel`` the channel gate is computed after the
            spatial gate, so in ``joint``/``additive`` modes the bottom is re-pooled from the spatially gated map.
        pool: ``'avg'`` (default), ``'max'`` or ``'avg+max'`` (the searchlight is computed per pooling and summed).
        device, dtype: where and in which dtype the MLP weights are created (timm's factory keywords).
    """

    def __init__(
            self,
            bottom_channels: int,
            top_channels: int,
            mode: str = "joint",
            order: str = "channel_spatial",
            pool: str = "avg",
            reduction: int = 16,
            *,
            device=None,
            dtype=None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        check_choice("td_mode", mode, TD_MODES)
        check_choice("td_order", order, TD_ORDERS)
        check_choice("td_pool", pool, TD_POOLS)
        rd = top_channels // reduction
        if rd < 1:
            raise ValueError(f"top_channels={top_channels} is too small for reduction {reduction} (need >= {reduction})")
        self.mode, self.order, self.pool = mode, order, pool
        self.pools = ("avg", "max") if pool == "avg+max" else (pool,)
        if mode == "top":
            self.fc1 = _conv1x1(top_channels, rd, **dd)
            self.fc2 = _conv1x1(rd, bottom_channels, **dd)
        else:
            self.fc_top = _conv1x1(top_channels, rd, **dd)
            self.fc_bottom = _conv1x1(bottom_channels, rd, **dd)
            self.fc_out = _conv1x1(2 * rd if mode == "joint" else rd, bottom_channels, **dd)

    def _searchlight1(self, pb: torch.Tensor | None, pt: torch.Tensor) -> torch.Tensor:
        if self.mode == "top":
            return F.linear(F.relu(F.linear(pt, self.fc1.weight.flatten(1))), self.fc2.weight.flatten(1))
        ht = F.relu(F.linear(pt, self.fc_top.weight.flatten(1)))
        hb = F.relu(F.linear(pb, self.fc_bottom.weight.flatten(1)))
        h = torch.cat((ht, hb), 1) if self.mode == "joint" else ht + hb
        return F.linear(h, self.fc_out.weight.flatten(1))

    def searchlight(self, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The searchlight ``s`` (N, Cb) from the bottom and top maps."""
        s = None
        for how in self.pools:
            pb = None if self.mode == "top" else _pool(b, how)
            si = self._searchlight1(pb, _pool(t, how))
            s = si if s is None else s + si
        return s

    def forward(self, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self.searchlight(b, t)
        if self.order == "channel_spatial":
            # B1 = B * g, a = sigmoid(sum_c s_c B1_c) = sigmoid(sum_c (s_c g_c) B_c): no need to materialise B1 first.
            g = torch.sigmoid(s)
            a = torch.sigmoid(_spatial_logits(b, s * g))
            return b * g[:, :, None, None] * a
        if self.order == "channel":
            return b * torch.sigmoid(s)[:, :, None, None]
        if self.order == "spatial":
            return b * torch.sigmoid(_spatial_logits(b, s))
        if self.order == "parallel":
            return b * torch.sigmoid(s)[:, :, None, None] * torch.sigmoid(_spatial_logits(b, s))
        # spatial_channel
        b1 = b * torch.sigmoid(_spatial_logits(b, s))
        if self.mode != "top":
            s = self.searchlight(b1, t)
        return b1 * torch.sigmoid(s)[:, :, None, None]


class ConvFeedback(nn.Module):
    """The ``'conv'`` feedback of the ablation table: ``B_{k+1} = conv1x1(T_k)`` (Ct -> Cb, no bias)."""

    def __init__(self, bottom_channels: int, top_channels: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.conv = _conv1x1(top_channels, bottom_channels, device=device, dtype=dtype)

    def forward(self, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.conv(t)
