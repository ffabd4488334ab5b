"""tdam.add_td: TD in one's own CNN (torchvision and timm models outside the paper's list), and create_model on any
timm ResNet-family / ConvNeXt / MobileNetV3 architecture. Inputs are small (64 px, batch 2)."""
from __future__ import annotations

import re

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import tdam
from tdam.models import TD_MODES, TDBlock, TDTorchvisionBottleneck, TDTorchvisionResNet


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny inputs: one thread is faster here


def td_count(model: nn.Module) -> int:
    return sum(isinstance(m, TDBlock) for m in model.modules())


def check_steps_and_gradients(model: nn.Module, t: int = 2) -> None:
    """forward_steps(x)[k-1] == the model run at k steps; one backward pass reaches every parameter."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        outs = model.forward_steps(x)
        assert len(outs) == t
        for k, out in enumerate(outs, 1):
            with model.steps(k):
                ref = model(x)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    model.train()
    model(x).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, bad[:5]


# ------------------------------------------------------------------------------------------------ torchvision

def test_torchvision_resnet50():
    model = torchvision.models.resnet50(num_classes=5)
    out = tdam.add_td(model)
    assert out is model and isinstance(model, TDTorchvisionResNet) and isinstance(model, torchvision.models.ResNet)
    assert td_count(model.layer3) == 6 and td_count(model.layer4) == 3 and td_count(model) == 9  # last two stages
    assert isinstance(model.layer4[0], TDTorchvisionBottleneck)
    assert "layer3.0.td.fc_out.weight" in model.state_dict() and "layer3.0.bn3_1.weight" in model.state_dict()
    check_steps_and_gradients(model)


def test_torchvision_basicblock_by_name_with_options():
    model = tdam.add_td(torchvision.models.resnet18(num_classes=3), td_stages=["layer4"], t=3, m=2, td_mode="top",
                        td_blocks={"layer4": [1]})
    assert td_count(model) == 1 and isinstance(model.layer4[1], TDBlock) and model.last_td_stage == 4
    check_steps_and_gradients(model, t=3)


def test_plain_torchvision_weights_initialise_all_but_td():
    plain = torchvision.models.resnet18(num_classes=3)
    model = tdam.add_td(torchvision.models.resnet18(num_classes=3))
    result = tdam.load_checkpoint(model, plain.state_dict(), strict=False)
    assert not result.unexpected_keys and not result.mismatched_keys
    assert result.missing_keys and all(".td." in k or re.search(r"\.bn\d_\d\.", k) for k in result.missing_keys)


# ------------------------------------------------------------------------------------------------ timm outside the paper

TIMM_ARCHS = ["resnet10t", "resnet26d", "seresnext26d_32x4d", "mobilenetv3_small_100", "convnext_small"]


@pytest.mark.parametrize("arch", TIMM_ARCHS)
def test_timm_architectures_outside_the_paper(arch):
    assert arch not in tdam.models.ARCHS
    model = tdam.add_td(timm.create_model(arch, num_classes=4))
    stages = model.stage_list()
    with_td = [i for i, s in enumerate(stages, 1) if any(isinstance(b, TDBlock) for b in s.modules())]
    supported = [i for i, s in enumerate(stages, 1) if tdam.models.convert.stage_blocks(s)]
    assert with_td == supported[-2:]  # the paper's rule: the last two stages that hold supported blocks
    check_steps_and_gradients(model)


@pytest.mark.parametrize("arch,stages", [("resnet26", [3, 4]), ("resnet152", [3, 4]), ("wide_resnet50_2", [3, 4]),
                                         ("resnext50_32x4d", [3, 4]), ("convnext_small", [3, 4]),
                                         ("mobilenetv3_small_100", [4, 5])])
def test_create_model_takes_other_timm_architectures(arch, stages):
    with torch.device("meta"):
        model = tdam.create_model(arch, attention="td", num_classes=7)
        plain = timm.create_model(arch, num_classes=7)
    found = [i for i, s in enumerate(model.stage_list(), 1) if any(isinstance(b, TDBlock) for b in s.modules())]
    assert found == stages
    assert all(isinstance(b, TDBlock) for s in stages for _, _, b in tdam.models.convert.stage_blocks(
        model.stage_list()[s - 1]))
    assert model.model_config == dict(arch=arch, attention="td", num_classes=7)
    assert any(".td." in k for k in model.state_dict()) and not any(".td." in k for k in plain.state_dict())


def test_create_model_resnet26_runs_and_checks_refusals():
    model = tdam.create_model("resnet26", attention="td", num_classes=3, t=3)
    check_steps_and_gradients(model, t=3)
    with pytest.raises(ValueError, match=r"attention='se' \(a baseline\) exists for the paper's architectures only"):
        tdam.create_model("resnet26", attention="se")
    with pytest.raises(ValueError, match=r"valid choices are \['resnet18'.*or any timm ResNet-family"):
        tdam.create_model("resnet27")
    with pytest.raises(ValueError, match="is a timm VisionTransformer, not a ResNet"):
        tdam.create_model("vit_tiny_patch16_224")


# ------------------------------------------------------------------------------------------------ other models, errors

class TinyNet(nn.Module):
    """A model tdam does not know: its stages have no numbers, only names."""

    def __init__(self):
        super().__init__()
        down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU())
        self.body = nn.Sequential(torchvision.models.resnet.BasicBlock(16, 16),
                                  torchvision.models.resnet.BasicBlock(16, 32, stride=2, downsample=down))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def test_named_stages_of_an_unknown_model():
    with pytest.raises(ValueError, match=r"does not know the stages of TinyNet.*name them"):
        tdam.add_td(TinyNet())
    with pytest.raises(ValueError, match=r"stages have no numbers"):
        tdam.add_td(TinyNet(), td_stages=[2])
    model = tdam.add_td(TinyNet(), td_stages=["body.1"], m=2)
    assert isinstance(model, TinyNet) and td_count(model) == 1 and model.td_stage_names == ("body.1",)
    check_steps_and_gradients(model)
    with pytest.raises(ValueError, match="features=True"):
        model.forward_steps(torch.randn(1, 3, 32, 32), features=True)
    tdam.add_td(model, td_stages="body.0")  # a second call adds a stage, in the model's order
    assert model.td_stage_names == ("body.0", "body.1") and td_count(model) == 2


def test_errors_name_what_is_valid_and_leave_the_model_unchanged():
    model = torchvision.models.resnet50()
    with pytest.raises(ValueError, match=re.escape(str(list(TD_MODES)))):
        tdam.add_td(model, td_mode="bilinear")
    with pytest.raises(ValueError, match=r"m \(feedback distance of TDTorchvisionBottleneck\)=4.*\[0, 1, 2, 3\]"):
        tdam.add_td(model, m=4)
    with pytest.raises(ValueError, match=r"unknown TD options \['foo'\]; valid TD options are \['t', 'm', 'td_mode'"):
        tdam.add_td(model, foo=1)
    with pytest.raises(ValueError, match=r"no module 'layer9'"):
        tdam.add_td(model, td_stages=["layer9"])
    with pytest.raises(ValueError, match=r"1\.\.4"):
        tdam.add_td(model, td_stages=[5])
    with pytest.raises(ValueError, match="td_keep_se applies to InvertedResidual"):
        tdam.add_td(model, td_keep_se=True)
    with pytest.raises(ValueError, match="same block twice"):
        tdam.add_td(model, td_stages=[4, "layer4.1"])
    assert td_count(model) == 0 and type(model) is torchvision.models.ResNet
    with pytest.raises(ValueError, match=r"holds no block TD supports .*torchvision\.models\.resnet\.BasicBlock"):
        tdam.add_td(torchvision.models.mobilenet_v2(), td_stages=["features.5"])
    tdam.add_td(model, td_stages=[4])
    with pytest.raises(ValueError, match="already has TD"):
        tdam.add_td(model, td_stages=[4])


def test_td_block_from_names_the_library():
    from tdam.models import td_block_from

    with pytest.raises(ValueError, match=r"no TD version of torch\.nn\.modules\.conv\.Conv2d; TD blocks exist for "
                                         r"\['timm\.models\.resnet\.Bottleneck'"):
        td_block_from(nn.Conv2d(3, 3, 1))


# ------------------------------------------------------------------------------------------------ checkpoints

def test_save_checkpoint_of_a_model_rebuilds_with_load_model(tmp_path):
    model = tdam.add_td(tdam.create_model("resnet10t", num_classes=3), td_stages=[4], t=3)
    assert model.model_config == dict(arch="resnet10t", attention="td", num_classes=3, t=3, td_stages=[4])
    path = tdam.save_checkpoint(model.eval(), tmp_path / "m.pth")
    again = tdam.load_model(path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    # the paper's ResNet-101 keeps its layer3 subset in create_model; add_td's choice is recorded exactly
    with torch.device("meta"):
        r101 = tdam.add_td(tdam.create_model("resnet101"), td_stages=[3])
    assert r101.model_config["td_blocks"] == {3: list(range(23))}


def test_save_checkpoint_without_model_config_says_what_load_model_needs(tmp_path):
    model = tdam.add_td(torchvision.models.resnet18(num_classes=3))
    with pytest.raises(ValueError, match="has no model_config, which tdam.load_model needs"):
        tdam.save_checkpoint(model, tmp_path / "tv.pth")
    assert not (tmp_path / "tv.pth").exists()
    path = tdam.save_checkpoint({"model": model.state_dict()}, tmp_path / "tv.pth")
    fresh = tdam.add_td(torchvision.models.resnet18(num_classes=3))
    assert tdam.load_checkpoint(fresh, path).missing_keys == []
    se = tdam.create_model("resnet18", attention="se")
    tdam.add_td(se, td_stages=[4])
    assert not hasattr(se, "model_config")  # TD on top of a baseline: create_model cannot rebuild it
