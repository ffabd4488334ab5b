"""WS-DAN / ASL trainer tasks, their schedules and optimizers (their transforms: tests/test_data_pipeline.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tdam.train.engine import EvalContext
from tdam.transfer.asl import asymmetric_loss, mean_average_precision, multilabel_prf
from tdam.transfer.models import build_asl_model, build_wsdan, load_wsdan
from tdam.transfer.schedule import OneCycleSchedule
from tdam.transfer.tasks import ASLTask, WSDANTask
from tdam.transfer.wsdan import attention_crop
from helpers import TinyBackbone


def test_onecycle_equals_torch_onecyclelr_lr_and_momentum():
    p = [nn.Parameter(torch.zeros(2))]
    ours_opt, ref_opt = torch.optim.Adam(p, lr=1e-4), torch.optim.Adam(p, lr=1e-4)
    ours = OneCycleSchedule(ours_opt, max_lr=1e-4, epochs=8, steps_per_epoch=5, pct_start=0.2)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1e-4, total_steps=40, pct_start=0.2)
    for step in range(41):        # 40: the step after the last update, which the trainer also takes (as torch)
        if step:
            ref_opt.step()
            ref.step()
            ours.step_update(step)
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-20)
        assert ours_opt.param_groups[0]["betas"][0] == pytest.approx(ref_opt.param_groups[0]["betas"][0], rel=1e-12)
    assert ours.values(0)[0] == pytest.approx(1e-4 / 25)  # div_factor 25
    with pytest.raises(ValueError, match="outside the OneCycle schedule"):
        ours.step_update(41)


def test_wsdan_step_schedule_and_sgd_over_all_parameters():
    model = build_wsdan(TinyBackbone(), 5, num_attentions=3)
    task = WSDANTask(lambda: TinyBackbone())
    cfg = type("Cfg", (), {"momentum": 0.9, "weight_decay": 1e-5})()
    opt = task.build_optimizer(model, cfg, 1e-3)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 1e-5
    assert opt.param_groups[0]["nesterov"] is False and isinstance(opt, torch.optim.SGD)
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == sum(p.numel() for p in model.parameters())
    updates = 3
    sched = task.build_scheduler(opt, cfg, updates)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    ref = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=2, gamma=0.9)  # stepped once per epoch
    for epoch in range(7):
        for u in range(updates):
            sched.step_update(num_updates=epoch * updates + u)
            assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12)
        ref_opt.step()
        ref.step()


def _ctx():
    return EvalContext(device=torch.device("cpu"))


def test_wsdan_evaluate_matches_manual_raw_and_refined_accuracy():
    torch.manual_seed(0)
    task = WSDANTask(lambda: TinyBackbone(), num_attentions=3)
    model = task.build_model(5).eval()
    x, y = torch.randn(10, 3, 32, 32), torch.randint(0, 5, (10,))
    loader = [(x[:6], y[:6]), (x[6:], y[6:])]
    metrics = task.evaluate(model, loader, _ctx())
    with torch.no_grad():
        logits, _, att = model(x)
        crops, _ = attention_crop(x, att.mean(1, keepdim=True), theta=0.1, padding=0.05)
        refined = (logits + model(crops).logits) / 2
    assert metrics["top1_raw"] == pytest.approx(100 * (logits.argmax(1) == y).float().mean().item())
    assert metrics["top1_refined"] == pytest.approx(100 * (refined.argmax(1) == y).float().mean().item())
    assert metrics["top1"] == metrics["top1_refined"] and metrics["samples"] == 10
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


def test_wsdan_task_loss_updates_centers_and_returns_raw_logits():
    task = WSDANTask(lambda: TinyBackbone(), num_attentions=3)
    model = task.build_model(4).train()
    loss, logits = task.loss(model, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 1, 3]))
    assert logits.shape == (4, 4) and loss.requires_grad
    assert (model.feature_center[[0, 1, 3]].abs().sum(1) > 0).all() and model.feature_center[2].abs().sum() == 0


def test_load_wsdan_rejects_other_checkpoints():
    with pytest.raises(ValueError, match="not a WS-DAN checkpoint"):
        load_wsdan({"model": {}, "model_config": {"arch": "resnet18"}})


def test_wsdan_on_tdam_resnet_uses_layer4_features_and_checkpoint_roundtrip(tmp_path):
    import tdam
    from tdam.checkpoint import save_checkpoint

    backbone = tdam.create_model("resnet18", attention="td")
    model = build_wsdan(backbone, 3, num_attentions=4).eval()
    assert model.model_config["backbone"]["num_classes"] == 0 and model.num_features == 512
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        fmap = backbone.forward_features(x)
    assert out.attention_maps.shape == (1, 4, 2, 2) and fmap.shape == (1, 512, 2, 2)
    model.feature_center.normal_()
    save_checkpoint({"model": model.state_dict(), "model_config": model.model_config}, tmp_path / "w.pth")
    reloaded = load_wsdan(tmp_path / "w.pth").eval()
    torch.testing.assert_close(reloaded.feature_center, model.feature_center)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, out.logits)


def test_asl_task_loss_and_evaluate():
    torch.manual_seed(1)
    model = build_asl_model(TinyBackbone(), 4).eval()
    assert model.fc.out_features == 4
    task = ASLTask()
    x = torch.randn(12, 3, 32, 32)
    y = (torch.rand(12, 4) < 0.4).float()
    y[0] = 1
    loss, logits = task.loss(model, x, y)
    torch.testing.assert_close(loss, asymmetric_loss()(logits, y))
    metrics = task.evaluate(model, [(x[:5], y[:5]), (x[5:], y[5:])], _ctx())
    with torch.no_grad():
        scores = torch.sigmoid(model(x))
    assert metrics["mAP"] == pytest.approx(mean_average_precision(scores, y))
    assert metrics["OF1"] == pytest.approx(multilabel_prf(scores, y, 0.8)["OF1"])
    assert metrics["loss"] == pytest.approx(asymmetric_loss()(model(x), y).item() / 12, rel=1e-5)


def test_asl_onecycle_hook_uses_optimizer_lr_and_rejects_overlong_runs():
    model = build_asl_model(TinyBackbone(), 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    task = ASLTask(onecycle_epochs=80, pct_start=0.2)
    sched = task.build_scheduler(opt, type("C", (), {"epochs": 41})(), 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(4e-6)
    sched.step_update(159)  # the peak: pct_start * 800 - 1
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="past the OneCycle"):
        task.build_scheduler(opt, type("C", (), {"epochs": 81})(), 10)
