"""TD blocks: t=1 equals the plain block; t=2, 3 equal the unrolled computation of the paper's TD block
(step k: bottom map B_k re-weighted by the TD attention of the previous step's top map T_{k-1}, then the last m layers
re-run with per-step norms)."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tdam
from tdam.models import TDBasicBlock, TDBottleneck, TDConvNeXtBlock, TDInvertedResidual


def _randomise_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            with torch.no_grad():
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return module.eval()


def _plain_block(arch: str, stage: int, index: int) -> nn.Module:
    torch.manual_seed(0)
    model = tdam.create_model(arch, num_classes=10)
    stage_mod = model.stage_list()[stage - 1]
    return getattr(stage_mod, "blocks", stage_mod)[index]


# (arch, stage, block index, input shape): a stride-2 first block and a plain one for each family
CASES = {
    "bottleneck": [("resnet50", 3, 0, (2, 512, 16, 16)), ("resnet50", 3, 1, (2, 1024, 8, 8))],
    "basic": [("resnet18", 3, 0, (2, 128, 16, 16)), ("resnet18", 4, 1, (2, 512, 4, 4))],
    "convnext": [("convnext_tiny", 3, 1, (2, 384, 6, 6))],
    "mbv3": [("mobilenetv3_large_100", 6, 0, (2, 112, 8, 8)), ("mobilenetv3_large_100", 6, 1, (2, 160, 4, 4))],
}
M_VALUES = {"bottleneck": (0, 1, 2, 3), "basic": (0, 1, 2), "convnext": (1, 2), "mbv3": (1,)}
TD_CLASS = {"bottleneck": TDBottleneck, "basic": TDBasicBlock, "convnext": TDConvNeXtBlock, "mbv3": TDInvertedResidual}


def _params(with_m0: bool = True):
    for kind, cases in CASES.items():
        for arch, stage, idx, shape in cases:
            for m in M_VALUES[kind]:
                if m == 0 and not with_m0:  # m=0 modulates the branch output even at t=1 (TD runs t times)
                    continue
                yield pytest.param(kind, arch, stage, idx, shape, m, id=f"{kind}-{stage}.{idx}-m{m}")


@pytest.mark.parametrize("kind,arch,stage,idx,shape,m", list(_params(with_m0=False)))
def test_t1_equals_plain_block(kind, arch, stage, idx, shape, m):
    plain = _randomise_norms(_plain_block(arch, stage, idx))
    if kind == "mbv3":
        plain.se = nn.Identity()  # TD blocks drop the block's SE by default
    td = TD_CLASS[kind](copy.deepcopy(plain), t=1, m=m).eval()
    x = torch.randn(shape)
    torch.testing.assert_close(td(x), plain(x))


def _unrolled(kind: str, blk, x: torch.Tensor, t: int, m: int) -> torch.Tensor:
    """Spec 01 §1.2 written out layer by layer, independently of the block's own machinery."""
    def bn(name, k):
        return getattr(blk, name if k == 0 else f"{name}_{k}")

    td = blk.td
    if kind == "bottleneck":
        stem = {1: lambda z: blk.act2(blk.bn2(blk.conv2(blk.act1(blk.bn1(blk.conv1(z)))))),
                2: lambda z: blk.act1(blk.bn1(blk.conv1(z))), 3: lambda z: z,
                0: lambda z: blk.bn3(blk.conv3(blk.act2(blk.bn2(blk.conv2(blk.act1(blk.bn1(blk.conv1(z))))))))}[m]
        rec = {1: lambda z, k: bn("bn3", k)(blk.conv3(z)),
               2: lambda z, k: bn("bn3", k)(blk.conv3(F.relu(bn("bn2", k)(blk.conv2(z))))),
               3: lambda z, k: bn("bn3", k)(blk.conv3(F.relu(bn("bn2", k)(blk.conv2(F.relu(bn("bn1", k)(blk.conv1(z))))))))}
        short = blk.downsample(x) if blk.downsample is not None else x
    elif kind == "basic":
        stem = {1: lambda z: F.relu(blk.bn1(blk.conv1(z))), 2: lambda z: z,
                0: lambda z: blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(z)))))}[m]
        rec = {1: lambda z, k: bn("bn2", k)(blk.conv2(z)),
               2: lambda z, k: bn("bn2", k)(blk.conv2(F.relu(bn("bn1", k)(blk.conv1(z)))))}
        short = blk.downsample(x) if blk.downsample is not None else x
    elif kind == "convnext":
        def to_nchw(z):
            return z.permute(0, 3, 1, 2)
        ln = blk.norm(blk.conv_dw(x).permute(0, 2, 3, 1))
        stem = {1: lambda z: to_nchw(F.gelu(blk.mlp.fc1(ln))), 2: lambda z: to_nchw(ln)}[m]
        rec = {1: lambda z, k: to_nchw(blk.mlp.fc2(z.permute(0, 2, 3, 1))),
               2: lambda z, k: to_nchw(blk.mlp.fc2(F.gelu(blk.mlp.fc1(z.permute(0, 2, 3, 1)))))}
        short = x
    else:  # mbv3
        stem = {1: lambda z: blk.bn2(blk.conv_dw(blk.bn1(blk.conv_pw(z))))}[m]
        rec = {1: lambda z, k: bn("bn3", k)(blk.conv_pwl(z))}
        short = x

    b = stem(x)
    if m == 0:
        y = b
        for _ in range(t):
            y = td(y, y)
    else:
        for k in range(t):
            y = rec[m](b, k)
            if k < t - 1:
                b = td(b, y)
    if kind == "convnext":
        return y * blk.gamma.reshape(1, -1, 1, 1) + short
    if kind == "mbv3":
        return y + short if blk.has_skip else y
    return F.relu(y + short)


@pytest.mark.parametrize("t", [2, 3])
@pytest.mark.parametrize("kind,arch,stage,idx,shape,m", list(_params()))
def test_unrolled_steps(kind, arch, stage, idx, shape, m, t):
    torch.manual_seed(t)
    td = _randomise_norms(TD_CLASS[kind](_plain_block(arch, stage, idx), t=t, m=m), seed=t)
    if kind == "convnext":
        with torch.no_grad():
            td.gamma.uniform_(0.5, 1.5)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(td(x), _unrolled(kind, td, x, t, m), rtol=1e-4, atol=1e-5)


def test_step_norms_are_distinct_and_shortcut_unmodulated():
    blk = TDBottleneck(_plain_block("resnet50", 3, 0), t=3, m=2)
    names = {n for n, _ in blk.named_children()}
    assert {"bn2_1", "bn3_1", "bn2_2", "bn3_2"} <= names and "bn1_1" not in names
    assert blk.bn3_1 is not blk.bn3 and blk.bn3_1.weight.data_ptr() != blk.bn3.weight.data_ptr()
    # per-step norms are not zero-initialised (the block's own last norm is, timm's zero_init_last)
    assert torch.all(blk.bn3.weight == 0) and torch.all(blk.bn3_1.weight == 1)
    blk0 = TDBottleneck(_plain_block("resnet50", 3, 0), t=2, m=1, zero_init_step_norms=True)
    assert torch.all(blk0.bn3_1.weight == 0)


def test_t1_has_no_td_parameters():
    blk = TDBottleneck(_plain_block("resnet50", 3, 1), t=1, m=1)
    assert blk.td is None and not any(n.startswith("td.") for n, _ in blk.named_parameters())
