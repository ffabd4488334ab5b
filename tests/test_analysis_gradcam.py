"""Grad-CAM: equals CAM on GAP+FC ResNets, runs on MobileNetV3, per computation step for TD models."""
from __future__ import annotations

import pytest
import torch
from timm.models import create_model
from torch import nn

from tdam.cam import capture_output, grad_cam, grad_cam_steps, step_features


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet18", pretrained=False, num_classes=7).eval()


def _cam_reference(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """CAM written out: sum over channels of fc weight x feature map, negative evidence clipped."""
    with torch.no_grad():
        f = model.forward_features(x)
    w = model.fc.weight[classes]  # (N, C)
    return (w[:, :, None, None] * f).sum(dim=1).clamp_min(0)


def test_gradcam_equals_cam_up_to_positive_scale(resnet):
    x = torch.randn(3, 3, 64, 64)
    res = grad_cam(resnet, x, topk=2)
    assert res.cams.shape == (3, 2, 2, 2)
    hw = 2 * 2
    for j in range(2):
        cam = _cam_reference(resnet, x, res.classes[:, j])
        assert cam.abs().sum() > 0
        # alpha_c = w_c / (h w): Grad-CAM = CAM / (h w) exactly for a GAP + FC head
        torch.testing.assert_close(res.cams[:, j] * hw, cam, rtol=1e-4, atol=1e-5)
    assert torch.equal(res.classes, res.logits.topk(2, dim=1).indices)
    torch.testing.assert_close(res.scores, res.logits.softmax(1).gather(1, res.classes))


def test_batched_gradcam_equals_one_image_at_a_time(resnet):
    x = torch.randn(4, 3, 64, 64)
    classes = torch.tensor([0, 3, 3, 6])
    batched = grad_cam(resnet, x, classes).cams
    single = torch.cat([grad_cam(resnet, x[i : i + 1], classes[i : i + 1]).cams for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)


def test_hook_on_a_named_layer(resnet):
    x = torch.randn(2, 3, 64, 64)
    on_layer4 = grad_cam(resnet, x, topk=1, layer="layer4")
    torch.testing.assert_close(on_layer4.cams, grad_cam(resnet, x, topk=1).cams, rtol=1e-4, atol=1e-6)
    on_layer3 = grad_cam(resnet, x, topk=1, layer="layer3")
    assert on_layer3.cams.shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="top-level modules"):
        with capture_output(resnet, "layer9"):
            pass


def test_mobilenetv3_runs_and_has_feature_map_shape():
    torch.manual_seed(0)
    model = create_model("mobilenetv3_large_100", pretrained=False, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = model.forward_features(x)
    res = grad_cam(model, x, topk=3)
    assert res.cams.shape == (2, 3, *f.shape[-2:])
    assert torch.isfinite(res.cams).all() and (res.cams >= 0).all()


def test_requires_eval_mode(resnet):
    with pytest.raises(ValueError, match="eval"):
        grad_cam(resnet.train(), torch.randn(1, 3, 32, 32))
    resnet.eval()


class _TwoStep(nn.Module):
    """Stand-in for a TD model: the last stage run once or twice (forward_steps gives (features, logits) per step)."""

    td_steps = 2

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(x, features=True)[-1][0]

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.base.forward_head(f)

    def forward_steps(self, x: torch.Tensor, features: bool = False) -> list:
        b = self.base
        h = b.layer3(b.layer2(b.layer1(b.maxpool(b.act1(b.bn1(b.conv1(x)))))))
        f1 = b.layer4(h)
        f2 = b.layer4[1](f1)
        out = [(f, b.forward_head(f)) for f in (f1, f2)]
        return out if features else [lg for _, lg in out]


def test_steps_give_one_map_per_step_with_that_steps_prediction(resnet):
    model = _TwoStep(resnet).eval()
    x = torch.randn(2, 3, 64, 64)
    steps = grad_cam_steps(model, x, topk=1)
    assert len(steps) == 2
    feats = step_features(model, x)
    for res, (f, logits) in zip(steps, feats):
        torch.testing.assert_close(res.logits, logits)
        assert torch.equal(res.classes[:, 0], logits.argmax(1))
        w = resnet.fc.weight[res.classes[:, 0]]
        cam = (w[:, :, None, None] * f).sum(1).clamp_min(0)
        torch.testing.assert_close(res.cams[:, 0] * f.shape[-1] * f.shape[-2], cam, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(res.confidence, logits.softmax(1).amax(1))
    fixed = grad_cam_steps(model, x, classes=torch.tensor([1, 2]))
    assert all(r.classes[:, 0].tolist() == [1, 2] for r in fixed)
    plain = grad_cam_steps(resnet, x)
    assert len(plain) == 1


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv3_large_100"])
def test_td_model_one_map_per_trained_step(arch):
    from tdam import create_model as tdam_create_model

    torch.manual_seed(0)
    model = tdam_create_model(arch, attention="td", num_classes=6).eval()
    x = torch.randn(2, 3, 64, 64)
    steps = grad_cam_steps(model, x, topk=1)
    assert len(steps) == model.td_steps == 2
    with torch.no_grad():
        f_last = model.forward_features(x)
        logits = model(x)
    torch.testing.assert_close(steps[-1].logits, logits, rtol=1e-4, atol=1e-5)
    assert steps[-1].cams.shape == (2, 1, *f_last.shape[-2:])
    if arch == "resnet18":
        for res, (f, _) in zip(steps, step_features(model, x)):
            cam = (model.fc.weight[res.classes[:, 0]][:, :, None, None] * f).sum(1).clamp_min(0)
            torch.testing.assert_close(res.cams[:, 0] * f.shape[-1] * f.shape[-2], cam, rtol=1e-4, atol=1e-5)
