"""The TD module against a direct transcription of the paper's equations (a searchlight from the pooled top map, mode
'top', or from the pooled top and bottom maps, 'joint' / 'additive', applied to the bottom map as channel and spatial
gates), for every mode x order x pooling."""
import itertools
import re

import pytest
import torch

from tdam.models import TD_MODES, TD_ORDERS, TD_POOLS, TDAttention

sig, relu = torch.sigmoid, torch.relu


def reference_td(mod: TDAttention, B: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    def w(conv):
        return conv.weight[:, :, 0, 0]

    def searchlight(Bx):
        s = 0
        for how in (("avg", "max") if mod.pool == "avg+max" else (mod.pool,)):
            pool = (lambda x: x.mean(dim=(2, 3))) if how == "avg" else (lambda x: x.amax(dim=(2, 3)))
            pt, pb = pool(T), pool(Bx)
            if mod.mode == "top":
                s = s + relu(pt @ w(mod.fc1).T) @ w(mod.fc2).T
            elif mod.mode == "joint":
                s = s + torch.cat([relu(pt @ w(mod.fc_top).T), relu(pb @ w(mod.fc_bottom).T)], 1) @ w(mod.fc_out).T
            else:
                s = s + (relu(pt @ w(mod.fc_top).T) + relu(pb @ w(mod.fc_bottom).T)) @ w(mod.fc_out).T
        return s

    def chan(x, s):
        return x * sig(s)[:, :, None, None]

    def spat(x, s):
        return x * sig((s[:, :, None, None] * x).sum(1, keepdim=True))

    s = searchlight(B)
    if mod.order == "channel_spatial":
        return spat(chan(B, s), s)
    if mod.order == "spatial_channel":
        B1 = spat(B, s)
        return chan(B1, searchlight(B1))  # the channel gate sees the spatially gated map
    if mod.order == "channel":
        return chan(B, s)
    if mod.order == "spatial":
        return spat(B, s)
    return B * sig(s)[:, :, None, None] * sig((s[:, :, None, None] * B).sum(1, keepdim=True))  # parallel


@pytest.mark.parametrize("mode,order,pool", list(itertools.product(TD_MODES, TD_ORDERS, TD_POOLS)))
def test_td_module_matches_spec(mode, order, pool):
    torch.manual_seed(0)   # in float64, so that the maths is compared and not the kernels' float32 summation order
    mod = TDAttention(24, 64, mode=mode, order=order, pool=pool).double()
    B, T = torch.randn(3, 24, 9, 7, dtype=torch.float64), torch.randn(3, 64, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(mod(B, T), reference_td(mod, B, T), rtol=1e-12, atol=1e-12)


def test_td_module_shapes_and_names():
    top, joint, add = (TDAttention(32, 128, mode=m) for m in TD_MODES)
    assert {k: tuple(v.shape) for k, v in top.state_dict().items()} == {
        "fc1.weight": (8, 128, 1, 1), "fc2.weight": (32, 8, 1, 1)}
    assert {k: tuple(v.shape) for k, v in joint.state_dict().items()} == {
        "fc_top.weight": (8, 128, 1, 1), "fc_bottom.weight": (8, 32, 1, 1), "fc_out.weight": (32, 16, 1, 1)}
    assert tuple(add.fc_out.weight.shape) == (32, 8, 1, 1)


def test_spatial_map_uses_raw_searchlight():
    """Chn->Sp: the spatial logits are sum_c s_c * (B * sigmoid(s))_c with the RAW s, not sigmoid(s)."""
    torch.manual_seed(1)
    mod = TDAttention(16, 32, mode="top")
    B, T = torch.randn(2, 16, 4, 4), torch.randn(2, 32, 2, 2)
    s = mod.searchlight(B, T)
    B1 = B * sig(s)[:, :, None, None]
    wrong = B1 * sig((sig(s)[:, :, None, None] * B1).sum(1, keepdim=True))
    right = B1 * sig((s[:, :, None, None] * B1).sum(1, keepdim=True))
    torch.testing.assert_close(mod(B, T), right)
    assert not torch.allclose(mod(B, T), wrong)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(mode="both"), "'top', 'joint', 'additive'"),
    (dict(order="chn_sp"), "'channel_spatial'"),
    (dict(pool="min"), "'avg+max'"),
])
def test_td_module_rejects_bad_options(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        TDAttention(16, 32, **kwargs)


def test_channels_last_and_autocast():
    torch.manual_seed(2)
    mod = TDAttention(16, 64)
    B, T = torch.randn(2, 16, 6, 6), torch.randn(2, 64, 3, 3)
    ref = mod(B, T)
    out = mod(B.to(memory_format=torch.channels_last), T.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = mod(B, T)
    torch.testing.assert_close(low.float(), ref, rtol=5e-2, atol=5e-2)


def test_gradients_keep_channels_last():
    """The top map's gradient must stay channels-last, or the BatchNorm before it takes a slow mixed-format path."""
    mod = TDAttention(16, 64)
    B = torch.randn(2, 16, 6, 6).to(memory_format=torch.channels_last).requires_grad_()
    T = torch.randn(2, 64, 3, 3).to(memory_format=torch.channels_last).requires_grad_()
    gB, gT = torch.autograd.grad(mod(B, T).square().sum(), (B, T))
    assert gT.is_contiguous(memory_format=torch.channels_last) and gB.is_contiguous(memory_format=torch.channels_last)
    B2, T2 = B.detach().contiguous().requires_grad_(), T.detach().contiguous().requires_grad_()
    gB2, gT2 = torch.autograd.grad(mod(B2, T2).square().sum(), (B2, T2))
    torch.testing.assert_close(gT, gT2)
    torch.testing.assert_close(gB, gB2)
