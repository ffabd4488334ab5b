"""Official baseline attention modules (SE, CBAM, ECA, FcaNet) against direct computations and the parameter / MAC
counts of the official implementations (measured with their code on timm's ResNets)."""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from ptflops import get_model_complexity_info
from timm.models.convnext import ConvNeXt, ConvNeXtBlock
from torch import nn

from tdam.models.attention import (
    CBAM,
    ECA,
    ECA_RELEASED_KERNELS,
    FCA,
    FCA_FREQ_METHODS,
    SE,
    ConvNeXtBlockFCA,
    SpatialGate,
    add_fca_to_convnext,
    dct_filters,
    eca_kernel_size,
    fca_frequency_indices,
    resnet_attn_layer,
)

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial values for every parameter (zeros from the official init would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# ---------------------------------------------------------------------------------------------------------------- SE
def test_se_matches_direct_computation():
    torch.manual_seed(0)
    se = SE(64)
    randomize_(se)
    x = torch.randn(3, 64, 5, 6)
    w1, w2 = se.fc[0].weight, se.fc[2].weight
    assert w1.shape == (4, 64) and w2.shape == (64, 4)  # floor(64/16) = 4 (timm would round up to 8)
    assert se.fc[0].bias is None and se.fc[2].bias is None
    gap = x.mean(dim=(2, 3))
    gate = torch.sigmoid(torch.relu(gap @ w1.T) @ w2.T)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])
    assert n_params(se) == 2 * 64 * 4


# -------------------------------------------------------------------------------------------------------------- CBAM
def test_cbam_matches_direct_computation():
    torch.manual_seed(1)
    c = 48
    cbam = CBAM(c)
    randomize_(cbam)
    bn = cbam.SpatialGate.spatial.bn
    bn.running_mean.fill_(0.3)
    bn.running_var.fill_(2.0)
    cbam.eval()
    x = torch.randn(2, c, 7, 9)
    lin1, lin2 = cbam.ChannelGate.mlp[1], cbam.ChannelGate.mlp[3]

    def mlp(v):
        return torch.relu(v @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias

    att = mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3)))  # avg + max, summed before the sigmoid
    x1 = x * torch.sigmoid(att)[:, :, None, None]
    pooled = torch.stack([x1.max(dim=1).values, x1.mean(dim=1)], dim=1)  # [max, mean]
    s = F.conv2d(pooled, cbam.SpatialGate.spatial.conv.weight, padding=3)
    s = (s - 0.3) / math.sqrt(2.0 + 1e-5) * bn.weight + bn.bias
    torch.testing.assert_close(cbam(x), x1 * torch.sigmoid(s))

    # the same check with [mean, max] (timm's order) must fail: the test sees the order
    swapped = torch.stack([x1.mean(dim=1), x1.max(dim=1).values], dim=1)
    s_swapped = F.conv2d(swapped, cbam.SpatialGate.spatial.conv.weight, padding=3)
    s_swapped = (s_swapped - 0.3) / math.sqrt(2.0 + 1e-5) * bn.weight + bn.bias
    assert not torch.allclose(cbam(x), x1 * torch.sigmoid(s_swapped))


def test_cbam_channel_pool_order_and_official_layers():
    x = torch.randn(2, 8, 3, 4)
    pooled = SpatialGate.compress(x)
    torch.testing.assert_close(pooled[:, 0], x.max(dim=1).values)
    torch.testing.assert_close(pooled[:, 1], x.mean(dim=1))

    cbam = CBAM(64)
    assert cbam.ChannelGate.mlp[1].bias is not None and cbam.ChannelGate.mlp[1].out_features == 4
    conv, bn = cbam.SpatialGate.spatial.conv, cbam.SpatialGate.spatial.bn
    assert conv.kernel_size == (7, 7) and conv.padding == (3, 3) and conv.bias is None
    assert (bn.eps, bn.momentum, bn.affine, bn.num_features) == (1e-5, 0.01, True, 1)
    assert n_params(cbam) == 2 * 64 * 4 + 4 + 64 + 100


def test_cbam_official_init():
    cbam = CBAM(64)
    assert torch.equal(cbam.SpatialGate.spatial.bn.weight, torch.zeros(1))  # gamma 0 -> spatial gate 0.5 at init
    assert torch.equal(cbam.SpatialGate.spatial.bn.bias, torch.zeros(1))
    assert not cbam.ChannelGate.mlp[1].bias.any() and not cbam.ChannelGate.mlp[3].bias.any()
    # kaiming normal, fan_out = 1 * 7 * 7 -> std sqrt(2 / 49); the MLP weights keep PyTorch's uniform default
    torch.manual_seed(0)
    stds = torch.stack([CBAM(16).SpatialGate.spatial.conv.weight.std() for _ in range(50)])
    assert abs(stds.mean().item() - math.sqrt(2 / 49)) < 0.02
    x = torch.randn(2, 64, 5, 5)
    cbam.eval()
    torch.testing.assert_close(cbam(x), cbam.ChannelGate(x) * 0.5)


# --------------------------------------------------------------------------------------------------------------- ECA
@pytest.mark.parametrize(
    ("channels", "k"),
    [(16, 3), (40, 3), (64, 3), (112, 3), (128, 5), (160, 5), (256, 5), (512, 5), (960, 5), (1024, 5), (2048, 7)],
)
def test_eca_adaptive_kernel_size(channels, k):
    t = int(abs((math.log2(channels) + 1) / 2))  # paper Eq. 9, gamma = 2, b = 1
    assert eca_kernel_size(channels) == k == (t if t % 2 else t + 1)
    assert ECA(channels).conv.kernel_size == (k,)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_eca_matches_direct_computation_with_zero_padding(k):
    torch.manual_seed(k)
    c = 20
    eca = ECA(c, k)
    randomize_(eca)
    x = torch.randn(2, c, 4, 5)
    w = eca.conv.weight.view(k)
    p = (k - 1) // 2
    gap = x.mean(dim=(2, 3))
    padded = torch.cat([torch.zeros(2, p), gap, torch.zeros(2, p)], dim=1)  # zeros at both ends, not circular
    y = torch.stack([(padded[:, i:i + k] * w).sum(1) for i in range(c)], dim=1)
    torch.testing.assert_close(eca(x), x * torch.sigmoid(y)[:, :, None, None])
    # the first channel only sees channels 0..p (zero padding), unlike timm's circular CecaModule
    first = (gap[:, :p + 1] * w[p:]).sum(1)
    torch.testing.assert_close(y[:, 0], first)
    assert n_params(eca) == k and eca.conv.bias is None


# --------------------------------------------------------------------------------------------------------------- FCA
TOP16 = [(0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
         (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2)]


def dct_basis_1d(p: int, f: int, n: int) -> float:
    value = math.cos(math.pi * f * (p + 0.5) / n) / math.sqrt(n)
    return value if f == 0 else value * math.sqrt(2)


def reference_dct_filter(channels: int, size: int, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Written out like the official loop, with the u' = u * (size // 7) scaling."""
    scale = size // 7
    out = torch.zeros(channels, size, size, dtype=torch.float64)
    group = channels // len(pairs)
    for i, (u, v) in enumerate(pairs):
        for h in range(size):
            for w in range(size):
                out[i * group:(i + 1) * group, h, w] = (
                    dct_basis_1d(h, u * scale, size) * dct_basis_1d(w, v * scale, size))
    return out


def test_fca_frequency_tables():
    u, v = fca_frequency_indices("top16")
    assert list(zip(u, v)) == TOP16
    assert len(fca_frequency_indices("low32")[0]) == 32
    assert list(zip(*fca_frequency_indices("bot4"))) == [(6, 6), (1, 4), (3, 4), (3, 6)]
    assert list(zip(*fca_frequency_indices("low8"))) == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (2, 1),
                                                       (1, 2)]


@pytest.mark.parametrize("size", [7, 14])
def test_fca_dct_buffer_matches_explicit_cosines(size):
    fca = FCA(32, size, size)
    expected = reference_dct_filter(32, size, TOP16).float()
    torch.testing.assert_close(fca.dct_layer.weight, expected, rtol=0, atol=0)  # float64 products, cast once
    # fixed, persistent buffer: in the state_dict, not a parameter
    assert "dct_layer.weight" in fca.state_dict()
    assert all(p is not fca.dct_layer.weight for p in fca.parameters())
    assert n_params(fca) == 2 * 32 * 2


def test_dct_basis_is_orthonormal_and_dc_is_scaled_gap():
    pairs = [(u, v) for u in range(7) for v in range(7)]
    basis = dct_filters(49, 7, 7, [u for u, _ in pairs], [v for _, v in pairs], dtype=torch.float64).view(49, 49)
    torch.testing.assert_close(basis @ basis.T, torch.eye(49, dtype=torch.float64))
    # axis convention: (0, 1) is constant along H (dim 1) and varies along W (dim 2)
    f01 = dct_filters(1, 7, 7, [0], [1], dtype=torch.float64)[0]
    assert torch.allclose(f01, f01[:1].expand(7, 7)) and not torch.allclose(f01, f01[:, :1].expand(7, 7))
    # group 0 of top16 is (0, 0): sqrt(H W) * GAP (56 * mean at 56x56)
    fca = FCA(16, 56, 56)
    x = torch.randn(2, 16, 56, 56)
    torch.testing.assert_close(fca.dct_layer(x)[:, 0], 56 * x[:, 0].mean(dim=(1, 2)))


def test_fca_matches_direct_computation():
    torch.manual_seed(2)
    fca = FCA(32, 14, 14)
    randomize_(fca)
    x = torch.randn(2, 32, 14, 14)
    filt = reference_dct_filter(32, 14, TOP16).float()
    y = (x * filt).sum(dim=(2, 3))
    gate = torch.sigmoid(torch.relu(y @ fca.fc[0].weight.T) @ fca.fc[2].weight.T)
    assert fca.fc[0].bias is None and fca.fc[2].bias is None
    torch.testing.assert_close(fca(x), x * gate[:, :, None, None])


@pytest.mark.parametrize("hw", [(20, 17), (5, 5)])
def test_fca_pools_other_sizes_and_rescales_the_original_input(hw):
    torch.manual_seed(3)
    fca = FCA(32, 7, 7)
    randomize_(fca)
    x = torch.randn(2, 32, *hw)
    pooled = F.adaptive_avg_pool2d(x, (7, 7))
    y = (pooled * reference_dct_filter(32, 7, TOP16).float()).sum(dim=(2, 3))
    gate = torch.sigmoid(torch.relu(y @ fca.fc[0].weight.T) @ fca.fc[2].weight.T)
    out = fca(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x * gate[:, :, None, None])


def test_fca_bad_configurations():
    with pytest.raises(ValueError, match="divisible by 16"):
        FCA(40, 7, 7)
    with pytest.raises(ValueError, match="dct_h"):
        FCA(32, 6, 6)
    with pytest.raises(ValueError, match="top16"):
        FCA(32, 7, 7, freq_sel="top3")
    assert "low32" in FCA_FREQ_METHODS and "bot1" in FCA_FREQ_METHODS


# ------------------------------------------------------------------------------------------------------- timm ResNet
# Parameter totals of the official modules in timm's ResNets
# (plain, SE no-bias, CBAM, ECA adaptive, ECA released, FCA top16, FCA DCT buffer floats)
OFFICIAL_PARAMS = {
    "resnet18": (11_689_512, 11_776_552, 11_779_392, 11_689_548, 11_689_556, 11_776_552, 752_640),
    "resnet34": (21_797_672, 21_954_856, 21_960_468, 21_797_746, 21_797_744, 21_954_856, 1_379_840),
    "resnet50": (25_557_032, 28_071_976, 28_089_624, 25_557_118, 25_557_112, 28_071_976, 5_519_360),
    "resnet101": (44_549_160, 49_292_328, 49_330_172, 44_549_331, 44_549_317, 49_292_328, 8_931_328),
}


def build(arch: str, name: str | None, eca_kernels: str = "adaptive", device: str = "meta") -> nn.Module:
    kwargs = {} if name is None else {"block_args": {"attn_layer": resnet_attn_layer(name, arch=arch,
                                                                                     eca_kernels=eca_kernels)}}
    return timm.create_model(arch, pretrained=False, device=device, **kwargs)


@pytest.mark.parametrize("arch", ARCHS)
def test_resnet_parameter_totals(arch):
    plain, se, cbam, eca_adaptive, eca_released, fca, dct_floats = OFFICIAL_PARAMS[arch]
    assert n_params(build(arch, None)) == plain
    assert n_params(build(arch, "se")) == se
    assert n_params(build(arch, "cbam")) == cbam
    assert n_params(build(arch, "eca")) == eca_adaptive
    assert n_params(build(arch, "eca", "released")) == eca_released
    model = build(arch, "fca")
    assert n_params(model) == fca
    assert sum(b.numel() for k, b in model.named_buffers() if k.endswith("dct_layer.weight")) == dct_floats


@pytest.mark.parametrize("arch", ARCHS)
def test_resnet_stage_mapping(arch):
    eca = build(arch, "eca", "released")
    fca = build(arch, "fca")
    adaptive = build(arch, "eca")
    for i in range(4):
        for block_eca, block_fca, block_adaptive in zip(getattr(eca, f"layer{i + 1}"), getattr(fca, f"layer{i + 1}"),
                                                        getattr(adaptive, f"layer{i + 1}")):
            c = block_fca.se.fc[2].out_features
            assert block_eca.se.k_size == ECA_RELEASED_KERNELS[arch][i]
            assert block_adaptive.se.k_size == eca_kernel_size(c)
            assert block_fca.se.dct_h == block_fca.se.dct_w == (56, 28, 14, 7)[i]  # FcaNet's c2wh, keyed by planes


def test_attention_sits_after_last_bn_before_the_residual_add():
    torch.manual_seed(0)
    model = build("resnet50", "cbam", device="cpu").eval()
    block = model.layer2[0]
    seen = {}
    block.bn3.register_forward_hook(lambda m, i, o: seen.__setitem__("bn3", o.clone()))
    block.se.register_forward_hook(lambda m, i, o: seen.update(se_in=i[0].clone(), se_out=o.clone()))
    block.downsample.register_forward_hook(lambda m, i, o: seen.__setitem__("short", o.clone()))
    out = block(torch.randn(1, 256, 16, 16))
    torch.testing.assert_close(seen["se_in"], seen["bn3"])
    torch.testing.assert_close(out, torch.relu(seen["se_out"] + seen["short"]))
    assert sum(isinstance(m, CBAM) for m in model.modules()) == 16
    # timm's ResNet init re-draws conv weights only: the spatial BN gamma stays at the official 0
    assert all(not m.SpatialGate.spatial.bn.weight.any() for m in model.modules() if isinstance(m, CBAM))


@pytest.mark.parametrize("name", ["se", "cbam", "eca", "fca"])
def test_resnet_forward_small_input(name):
    model = build("resnet18", name, device="cpu").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)  # FCA resizes 8/4/2/1 maps to 56/28/14/7


# ptflops 0.7.5 pytorch backend, GMac at 224x224 (plain, SE, CBAM, ECA, FCA); ECA = the adaptive rule
OFFICIAL_GMACS = {"resnet18": (1.8253, 1.8254, 1.8278, 1.8253, 1.8254),
              "resnet50": (4.1324, 4.1350, 4.1499, 4.1325, 4.1350)}


@pytest.mark.parametrize("arch", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)])
@pytest.mark.parametrize("idx", range(5))
def test_ptflops_macs_match_spec(arch, idx):
    name = (None, "se", "cbam", "eca", "fca")[idx]
    model = build(arch, name, device="cpu").eval()
    macs, params = get_model_complexity_info(model, (3, 224, 224), as_strings=False, print_per_layer_stat=False,
                                             backend="pytorch", verbose=False)
    assert params == n_params(model)
    assert abs(macs / 1e9 - OFFICIAL_GMACS[arch][idx]) <= 1e-4


def test_resnet_attn_layer_bad_values():
    with pytest.raises(ValueError, match=r"\('se', 'cbam', 'eca', 'fca'\)"):
        resnet_attn_layer("bam", arch="resnet50")
    with pytest.raises(ValueError, match="resnet101"):
        resnet_attn_layer("se", arch="resnet152")
    with pytest.raises(ValueError, match="'adaptive', 'released'"):
        resnet_attn_layer("eca", arch="resnet50", eca_kernels="paper")
    with pytest.raises(ValueError, match="256, 512, 1024, 2048"):
        resnet_attn_layer("fca", arch="resnet50")(64)
    with pytest.raises(ValueError, match="odd"):
        ECA(64, 4)
    with pytest.raises(ValueError, match="reduction"):
        SE(8)


def test_modules_accept_timm_device_dtype_kwargs():
    layer = resnet_attn_layer("fca", arch="resnet18")
    fca = layer(64, device="cpu", dtype=torch.float64)
    assert fca.dct_layer.weight.dtype == torch.float64 and fca.fc[0].weight.dtype == torch.float64
    assert resnet_attn_layer("cbam", arch="resnet18")(128, dtype=torch.float64).ChannelGate.mlp[1].weight.dtype \
        == torch.float64


# ---------------------------------------------------------------------------------------------------------- ConvNeXt
def test_convnext_tiny_fca_parameters():
    model = timm.create_model("convnext_tiny", pretrained=False, device="meta")
    before = {k for k, _ in model.named_parameters()}
    add_fca_to_convnext(model)
    after = {k for k, _ in model.named_parameters()}
    assert before < after and all(".fca.fc." in k for k in after - before)
    # 2 C (C//16) per block: 3x96, 3x192, 9x384, 3x768
    extra = sum(n * 2 * c * (c // 16) for n, c in [(3, 96), (3, 192), (9, 384), (3, 768)])
    assert n_params(model) == 28_589_128 + extra == 28_993_480
    dct = [model.stages[i].blocks[0].fca.dct_h for i in range(4)]
    assert dct == [56, 28, 14, 7]
    add_fca_to_convnext(timm.create_model("convnext_tiny", pretrained=False, device="meta"), dct_sizes=7)


@pytest.mark.parametrize("conv_mlp", [False, True])
def test_convnext_block_fca_forward(conv_mlp):
    torch.manual_seed(4)
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), conv_mlp=conv_mlp, num_classes=5,
                     ls_init_value=0.5).eval()
    old = model.stages[1].blocks[0]
    add_fca_to_convnext(model, dct_sizes=7)
    block = model.stages[1].blocks[0]
    assert isinstance(block, ConvNeXtBlockFCA) and block.conv_dw is old.conv_dw and block.mlp is old.mlp
    randomize_(block.fca)
    x = torch.randn(2, 32, 9, 9)
    y = block.conv_dw(x)
    if conv_mlp:
        y = block.mlp(block.norm(y))
    else:
        y = block.mlp(block.norm(y.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
    expected = x + block.gamma.view(1, -1, 1, 1) * block.fca(y)  # FCA before layer scale and the residual add
    torch.testing.assert_close(block(x), expected)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_convnext_block_fca_constructor():
    block = ConvNeXtBlockFCA(32, dct_size=14)
    assert block.fca.dct_h == 14 and n_params(block) == n_params(ConvNeXtBlock(32)) + 2 * 32 * 2
    assert block(torch.randn(1, 32, 10, 10)).shape == (1, 32, 10, 10)


def test_convnext_bad_values():
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), num_classes=5)
    with pytest.raises(ValueError, match="one size per stage"):
        add_fca_to_convnext(model, dct_sizes=(56, 28, 14))
    with pytest.raises(TypeError):
        add_fca_to_convnext(timm.create_model("resnet18", device="meta"))
    with pytest.raises(TypeError):
        ConvNeXtBlockFCA.from_block(nn.Identity(), 7)
    assert isinstance(model.stages[0].blocks[0], ConvNeXtBlock)
