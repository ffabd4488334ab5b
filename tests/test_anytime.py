"""Anytime prediction: ``forward_anytime`` against the per-image selection from ``forward_steps``, the images each
step runs on, the per-step MACs, the accuracy-compute curve and notebook 02's section. Small inputs (64 px, batch 8,
7 classes); the classifier is rescaled so that the max-softmax confidences spread over (0, 1) and the thresholds
split the batch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from ptflops import get_model_complexity_info

import tdam
from tdam.complexity import anytime_macs, flops, mean_macs
from tdam.evaluation import anytime_curve, evaluate
from tdam.evaluation.anytime import plot_anytime_curve
from tdam.evaluation.figures import figure_issues
from tdam.paths import repo_root

N_CLASSES = 7


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny inputs: one thread is faster here


def _head(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == N_CLASSES][-1]


def _confident(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with its classifier re-centred and rescaled on a calibration batch, so that the
    max-softmax confidences of random images at step 1 spread over (0, 1) and a threshold can split a batch;
    ConvNeXt's layer scales (1e-6 at init, which would make every step give the same logits) set to 1."""
    model.eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "gamma", None), nn.Parameter):
                m.gamma.fill_(1.0)
        torch.manual_seed(10)
        head = _head(model)
        feats = []
        hook = head.register_forward_pre_hook(lambda mod, args: feats.append(args[0].flatten(1)))
        with model.steps(1):
            model(torch.randn(16, 3, 64, 64))
        hook.remove()
        f = feats[0]
        z = (f - f.mean(0)) @ head.weight.T
        scale = 2.0 / z.std()
        head.weight.mul_(scale)
        head.bias.copy_(-f.mean(0) @ head.weight.T)
    return model


def _tinynet() -> nn.Module:
    """A CNN whose stages tdam does not know: add_td with named stages (forward_steps shares nothing)."""
    from timm.models.resnet import BasicBlock

    net = nn.Sequential()
    net.stem = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
    net.body = nn.Sequential(BasicBlock(32, 32), BasicBlock(32, 32))
    net.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, N_CLASSES))
    return tdam.add_td(net, td_stages=["body.1"], t=3, m=2)


MODELS = {
    "td_resnet18": lambda: tdam.create_model("resnet18", attention="td", t=3, num_classes=N_CLASSES),
    "td_resnet50": lambda: tdam.create_model("resnet50", attention="td", t=2, m=2, num_classes=N_CLASSES),
    "td_convnext_tiny": lambda: tdam.create_model("convnext_tiny", attention="td", t=2, num_classes=N_CLASSES),
    "td_mobilenetv3": lambda: tdam.create_model("mobilenetv3_large_100", attention="td", t=3, num_classes=N_CLASSES),
    "timm_td_resnet18": lambda: timm.create_model("td_resnet18", num_classes=N_CLASSES),
    "torchvision_resnet50": lambda: tdam.add_td(torchvision.models.resnet50(num_classes=N_CLASSES), t=3),
    "named_stages": _tinynet,
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return _confident(MODELS[name]())


def reference(step_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule from the stacked step logits (t, B, C), image by image: the first step with max-softmax >=
    threshold, else the last."""
    t, b, _ = step_logits.shape
    conf = step_logits.float().softmax(-1).amax(-1)  # (t, B)
    steps, logits = [], []
    for i in range(b):
        k = t
        for j in range(t):
            if conf[j, i].item() >= threshold:
                k = j + 1
                break
        steps.append(k)
        logits.append(step_logits[k - 1, i])
    return torch.tensor(steps), torch.stack(logits)


def _split_threshold(conf: torch.Tensor) -> float:
    """A threshold midway between two neighbouring step-1 confidences, about the median: splits the batch, and no
    confidence sits at the threshold within float error."""
    c = conf.sort().values
    i = len(c) // 2
    return float((c[i - 1] + c[i]) / 2)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_anytime_logits_are_the_selection_from_forward_steps(name):
    model = _model(name)
    torch.manual_seed(1)
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        step_logits = torch.stack(model.forward_steps(x))
    t = model.td_steps
    assert t == len(step_logits) >= 2
    split = _split_threshold(step_logits[0].softmax(1).amax(1))
    mixed = 0
    for th in (0.0, 0.5, 0.9, 1.01, split):
        with torch.no_grad():
            logits, steps = model.forward_anytime(x, th)
        ref_steps, ref_logits = reference(step_logits, th)
        assert steps.dtype == torch.long and steps.shape == (8,)
        assert torch.equal(steps, ref_steps), (th, steps, ref_steps)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
        mixed += len(set(steps.tolist())) > 1
    assert mixed >= 1  # some threshold sent part of the batch on and stopped the rest
    # a confidence exactly at the threshold stops (>=): step 1 is the same full-batch computation in both passes
    conf1 = step_logits[0].float().softmax(1).amax(1)
    i = int(conf1.argsort()[4])
    with torch.no_grad():
        steps = model.forward_anytime(x, conf1[i].item())[1]
    assert steps[i] == 1 and torch.equal(steps, reference(step_logits, conf1[i].item())[0])
    with torch.no_grad():
        assert torch.equal(model.forward_anytime(x, 0.0)[1], torch.ones(8, dtype=torch.long))
        assert torch.equal(model.forward_anytime(x, 1.01)[1], torch.full((8,), t))


def _stage_inputs(model: nn.Module) -> tuple[list[int], object]:
    """Records the batch size entering the last TD stage on every call."""
    sizes: list[int] = []
    stage = model.stage_list()[model.last_td_stage - 1]
    return sizes, stage.register_forward_pre_hook(lambda mod, args: sizes.append(args[0].shape[0]))


@pytest.mark.parametrize("name", ["td_resnet18", "td_mobilenetv3", "named_stages"])
def test_each_step_runs_only_on_the_images_still_going(name):
    model = _model(name)
    torch.manual_seed(2)
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        step_logits = torch.stack(model.forward_steps(x))
    conf = step_logits.softmax(2).amax(2)  # (t, B)
    sizes, hook = _stage_inputs(model)
    with torch.no_grad():
        model.forward_anytime(x, 0.0)
    assert sizes == [8]  # threshold 0: the last TD stage processes each image once
    for th in (_split_threshold(conf[0]), 0.5, 1.01):
        sizes.clear()
        with torch.no_grad():
            model.forward_anytime(x, th)
        going = (conf < th).long().cumprod(0).sum(1)  # (t,): images not yet confident after steps 1 .. k
        expected = [8]
        for n in going[:-1].tolist():
            if n == 0:
                break
            expected.append(n)
        assert sizes == expected, (th, sizes, expected)
    hook.remove()


def test_shared_stages_run_once():
    model = _model("td_resnet18")
    calls = {"stem": 0, "before": 0}
    h1 = model.conv1.register_forward_hook(lambda *a: calls.__setitem__("stem", calls["stem"] + 1))
    h2 = model.layer3.register_forward_hook(lambda *a: calls.__setitem__("before", calls["before"] + 1))
    with torch.no_grad():
        model.forward_anytime(torch.randn(4, 3, 64, 64), 1.01)
    assert calls == {"stem": 1, "before": 1}
    h1.remove()
    h2.remove()


def test_channels_last_and_train_mode():
    model = _model("td_resnet18").to(memory_format=torch.channels_last)
    torch.manual_seed(3)
    x = torch.randn(8, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    seen = []
    hook = model.layer4.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        step_logits = torch.stack(model.forward_steps(x))
        th = _split_threshold(step_logits[0].softmax(1).amax(1))
        logits, steps = model.forward_anytime(x, th)
    hook.remove()
    assert all(seen) and len(set(steps.tolist())) > 1
    torch.testing.assert_close(logits, reference(step_logits, th)[1], rtol=1e-4, atol=1e-5)
    # train mode: each step's BatchNorm uses the images still going; when no image stops early that is the whole
    # batch at every step, as in forward_steps; gradients reach every step's norms
    model.train()
    logits, steps = model.forward_anytime(x, 1.01)
    torch.testing.assert_close(logits, model.forward_steps(x)[-1], rtol=1e-4, atol=1e-5)
    logits.logsumexp(1).sum().backward()
    assert all(getattr(model.layer4[0], f"bn2{s}").weight.grad is not None for s in ("", "_1", "_2"))
    assert model.training
    model.zero_grad()
    logits, steps = model.forward_anytime(x, 0.0)  # everything stops at step 1: the later norms get no gradient
    logits.logsumexp(1).sum().backward()
    assert model.layer4[0].bn2.weight.grad is not None and model.layer4[0].bn2_1.weight.grad is None


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.5", True, None])
def test_bad_threshold_names_the_valid_range(bad):
    model = _model("td_resnet18")
    with pytest.raises(ValueError, match="real number >= 0"):
        model.forward_anytime(torch.randn(1, 3, 32, 32), bad)


def test_plain_model_stops_at_step_one():
    model = tdam.create_model("resnet18", num_classes=N_CLASSES).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, steps = model.forward_anytime(x, 1.01)
        torch.testing.assert_close(logits, model(x))
    assert steps.tolist() == [1, 1]


# ------------------------------------------------------------------------------------------------ MACs per stop step

def _ptflops(module: nn.Module, size: int) -> int:
    macs, _ = get_model_complexity_info(module, (3, size, size), as_strings=False, print_per_layer_stat=False,
                                        verbose=False, backend="pytorch",
                                        backend_specific_config={"count_functional": False})
    return int(macs)


def test_anytime_macs_are_the_shared_part_once_plus_each_step():
    """Reference: MACs(model at k steps) = shared + step(k); an image stopping at k pays shared + sum step(j).
    The TD layers are in layer3 and layer4; this model has no TD in layer3 (td_stages=(4,)) so that ptflops on the
    shared stages alone needs no TD hook."""
    model = tdam.create_model("resnet18", attention="td", t=3, td_stages=(4,), num_classes=N_CLASSES).eval()
    size = 64
    shared = _ptflops(nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool, model.layer1, model.layer2,
                                    model.layer3), size)
    full = []
    for k in (1, 2, 3):
        with model.steps(k):
            full.append(flops(model, size))
    expected = [shared + sum(f - shared for f in full[:k]) for k in (1, 2, 3)]
    got = anytime_macs(model, size)
    assert got == expected
    assert got[0] == full[0] and got[2] > full[2]  # stopping at t costs more than the fixed-t model
    assert mean_macs(got, torch.tensor([1, 3, 3, 2])) == pytest.approx((got[0] + 2 * got[2] + got[1]) / 4)


def test_anytime_macs_without_shared_stages_sum_whole_runs():
    model = _model("named_stages")
    full = []
    for k in (1, 2, 3):
        with model.steps(k):
            full.append(flops(model, 32))
    assert anytime_macs(model, 32) == [full[0], full[0] + full[1], sum(full)]


def test_mean_macs_checks_its_steps():
    with pytest.raises(ValueError, match=r"1\.\.2"):
        mean_macs([10, 20], torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="empty"):
        mean_macs([10, 20], torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="forward_anytime"):
        anytime_macs(nn.Linear(2, 2))


def test_anytime_macs_keep_the_models_mode():
    model = _model("td_resnet18")
    anytime_macs(model, 32)
    assert not model.training and not any(m.training for m in model.modules())
    anytime_macs(model.train(), 32)
    assert all(m.training for m in model.modules())


# ------------------------------------------------------------------------------------------------ the curve

def test_anytime_curve_agrees_with_evaluate_and_the_mac_counts():
    model = _model("td_resnet18")
    torch.manual_seed(4)
    data = [(torch.randn(8, 3, 64, 64), torch.randint(0, N_CLASSES, (8,))) for _ in range(2)]
    with torch.no_grad():
        conf = torch.stack(model.forward_steps(data[0][0]))[0].softmax(1).amax(1)
    split = _split_threshold(conf)
    curve = anytime_curve(model, data, thresholds=(0.0, split, 1.01), topk=(1, 3))
    assert list(curve.point) == ["anytime"] * 3 + ["fixed"] * 3 + ["most_confident"]
    ev = evaluate(model, data, topk=(1, 3), td_metrics=True)
    at = curve.set_index("label")
    steps = ev.steps_table()
    for k in (1, 2, 3):
        assert at.loc[f"t = {k}", "top1"] == pytest.approx(steps.top1[k - 1])
        assert at.loc[f"t = {k}", "mean_steps"] == k
    assert at.loc["threshold 0", "top1"] == pytest.approx(steps.top1[0])
    assert at.loc["threshold 1.01", "top3"] == pytest.approx(ev.accuracy("last", 3))
    assert at.loc["most-confident", "top1"] == pytest.approx(ev.accuracy("most_confident", 1))
    per_stop = anytime_macs(model, 64)
    assert at.loc["threshold 0", "gmacs"] == pytest.approx(per_stop[0] / 1e9)
    assert at.loc["threshold 1.01", "gmacs"] == at.loc["most-confident", "gmacs"] == pytest.approx(per_stop[2] / 1e9)
    with model.steps(2):
        assert at.loc["t = 2", "gmacs"] == pytest.approx(flops(model, 64) / 1e9)
    # the split threshold's row: accuracy, steps and MACs recomputed from forward_steps over the same images
    ref_steps, ref_correct = [], []
    for x, y in data:
        with torch.no_grad():
            s, lg = reference(torch.stack(model.forward_steps(x)), split)
        ref_steps.append(s)
        ref_correct.append(lg.argmax(1) == y)
    s, c = torch.cat(ref_steps), torch.cat(ref_correct)
    row = at.loc[f"threshold {split:g}"]
    assert row.top1 == pytest.approx(100.0 * c.float().mean().item())
    assert row.mean_steps == pytest.approx(s.float().mean().item())
    assert row.gmacs == pytest.approx(np.mean([per_stop[k - 1] for k in s.tolist()]) / 1e9)
    assert [row[f"stop_at_{k}"] for k in (1, 2, 3)] == pytest.approx([(s == k).float().mean().item()
                                                                      for k in (1, 2, 3)])
    assert (curve.images_per_s > 0).all() and (curve.images == 16).all()
    assert set(curve.device) == {tdam.evaluation.cost.device_name("cpu")} and set(curve.dtype) == {"fp32"}
    fig = plot_anytime_curve(curve, title="TD-ResNet-18 (t=3), random data")
    assert figure_issues(fig) == []
    with pytest.raises(ValueError, match="top1"):
        plot_anytime_curve(curve, metric="top7")


def test_anytime_curve_rejects_bad_input():
    with pytest.raises(ValueError, match="forward_anytime"):
        anytime_curve(nn.Linear(2, 2), [])
    model = _model("td_resnet18")
    with pytest.raises(ValueError, match="thresholds is empty"):
        anytime_curve(model, [], thresholds=())
    with pytest.raises(ValueError, match="no batches"):
        anytime_curve(model, [])
    with pytest.raises(ValueError, match="'bf16'"):
        anytime_curve(model, [], amp="int8")


def test_notebook_02_ends_with_the_anytime_section():
    """Notebook 02 (run by nbval in `make test`) writes the curve and reads it back in its last cell; here: the
    section is there, calls the library and writes the table and the figure."""
    cells = json.loads((repo_root() / "notebooks" / "02_eval_imagenet.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    section = code[code.index("anytime_curve("):]
    for needle in ('write_table(curve, RUN, "anytime_curve")', "plot_anytime_curve(", "save_figure(",
                   "NBVAL_CHECK_OUTPUT", "assert_frame_equal(pd.read_csv("):
        assert needle in section, needle


def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's "Anytime prediction" section runs as written (its ```python blocks in one namespace)."""
    from test_readme_examples import python_blocks

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc_example__"}
    for i, code in enumerate(python_blocks(repo_root() / "README.md", "Anytime prediction")):
        exec(compile(code, f"README.md [Anytime prediction] block {i + 1}", "exec"), namespace)  # noqa: S102
    assert namespace["steps"].shape == (8,) and len(namespace["macs"]) == 2
