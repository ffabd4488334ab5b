"""The trainer on the tiny embedded dataset: exact resume, pre-emption, non-finite loss, outputs, cached runs."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from tdam.checkpoint import read_checkpoint
from tdam.train import ClassificationTask, NonFiniteLossError, ensure_checkpoint, load_config, train
from tdam.train.trainer import METRIC_COLUMNS

TIMING = {"images_per_s", "data_wait", "epoch_time_s", "peak_mem_mb"}


def tiny_cfg(name: str, **kw):
    base = dict(profile="smoke", model={"arch": "resnet18", "attention": "td"}, data_size="tiny", img_size=32,
                batch_size=16, epochs=2, steps_per_epoch=3, warmup_epochs=0.5, val_batches=2, name=name, progress=False)
    base.update(kw)
    profile = base.pop("profile")
    return load_config(None, profile=profile, **base)


def assert_same_run(a: dict, b: dict) -> None:
    """Identical weights (bit for bit), EMA, optimizer state and per-epoch metrics (timings aside)."""
    for key in ("model", "model_ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    for s_a, s_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(s_a["momentum_buffer"], s_b["momentum_buffer"])
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    strip = lambda h: [{k: v for k, v in r.items() if k not in TIMING} for r in h]  # noqa: E731
    assert strip(a["metrics"]["history"]) == strip(b["metrics"]["history"])


REF = dict(mixup=0.5, cutmix=0.5, model_ema=True, model_ema_decay=0.9)


@pytest.fixture(scope="module")
def reference_run(shapes_tiny, tmp_path_factory):
    """Uninterrupted 2 x 3 updates with Mixup/CutMix, label smoothing, EMA and warm-up + cosine all on. (A module
    fixture is set up before conftest's per-test TDAM_RUNS redirect, so it names its own folder.)"""
    res = train(tiny_cfg("full", output_dir=str(tmp_path_factory.mktemp("reference") / "full"), **REF))
    assert not res.interrupted and len(res.history) == 2
    return res


def test_resume_mid_epoch_equals_uninterrupted(reference_run):
    """Interrupted after 4 updates (mid-epoch 2) and resumed == uninterrupted, bit for bit (the Mixup, drop-path,
    augmentation RNG streams, the EMA, optimizer and scheduler state must all be restored)."""
    cut = train(tiny_cfg("cut", **REF), stop_at_step=4)
    assert cut.interrupted and len(cut.history) == 1
    mid = read_checkpoint(cut.last_checkpoint)
    assert (mid["epoch"], mid["epoch_step"], mid["step"]) == (1, 1, 4)
    resumed = train(tiny_cfg("cut", resume=True, **REF))
    assert not resumed.interrupted
    assert_same_run(read_checkpoint(reference_run.last_checkpoint), read_checkpoint(resumed.last_checkpoint))
    # metrics files hold each epoch once, as the uninterrupted run's
    rows = [json.loads(line) for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    header = (resumed.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == list(METRIC_COLUMNS)


@pytest.mark.slow
def test_resume_mid_epoch_with_workers_equals_uninterrupted(reference_run):
    """With 2 data-loader workers, interrupted after 4 updates and resumed == the uninterrupted run without workers,
    bit for bit: each sample's augmentation is seeded by (seed, epoch, index), whichever process draws it."""
    cut = train(tiny_cfg("cut-workers", workers=2, **REF), stop_at_step=4)
    assert cut.interrupted
    resumed = train(tiny_cfg("cut-workers", workers=2, resume=True, **REF))
    assert not resumed.interrupted
    assert_same_run(read_checkpoint(reference_run.last_checkpoint), read_checkpoint(resumed.last_checkpoint))


def test_run_folder_outputs(reference_run):
    res = reference_run
    d = res.run_dir
    for name in ("config.yaml", "env.json", "metrics.csv", "metrics.jsonl", "train.log", "last.pth", "best.pth",
                 "summary.json", "curves.png", "curves.pdf", "best.safetensors"):
        assert (d / name).is_file(), name
    env = json.loads((d / "env.json").read_text())
    assert {"tdam", "torch", "timm", "python", "device"} <= set(env["versions"])
    assert env["amp"] == "fp32" and env["lr"] == pytest.approx(0.1 * 16 / 128)
    row = res.final
    assert row["step"] == 6 and 0 <= row["data_wait"] <= 1 and row["images_per_s"] > 0 and row["peak_mem_mb"] > 0
    assert 0 <= row["val_top1"] <= row["val_top5"] <= 100 and row["bad_images"] == 0
    assert row["ema_val_top1"] is not None
    ck = read_checkpoint(res.checkpoint)
    assert ck["model_config"]["arch"] == "resnet18" and ck["config"]["model"]["attention"] == "td"
    assert ck["model_config"] == {**ck["config"]["model"], "num_classes": 12}   # the description, unchanged
    from tdam.checkpoint import load_model

    model = load_model(res.checkpoint)
    assert model.model_config == ck["model_config"]
    ema = load_model(res.checkpoint, use_ema=True)
    assert not torch.equal(ema.fc.weight, model.fc.weight)
    shared = load_model(d / "best.safetensors")                  # the weights-only export of best.pth
    assert all(torch.equal(a, b) for a, b in zip(shared.state_dict().values(), model.state_dict().values()))


class _FailingTask(ClassificationTask):
    """Classification whose loss turns NaN at the ``at``-th training batch (or sends SIGTERM there)."""

    def __init__(self, *a, at: int, action: str, **k):
        super().__init__(*a, **k)
        self.calls, self.at, self.action = 0, at, action

    def loss(self, model, images, targets):
        self.calls += 1
        loss, out = super().loss(model, images, targets)
        if self.calls == self.at:
            if self.action == "nan":
                return loss * float("nan"), out
            os.kill(os.getpid(), signal.SIGTERM)
        return loss, out


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(shapes_tiny):
    cfg = tiny_cfg("nan", steps_per_epoch=2)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, task=_FailingTask(12, smoothing=0.1, at=4, action="nan"))
    msg = str(e.value)
    assert "non-finite loss (nan) at update 4" in msg and "lr=" in msg and "last finite loss=" in msg
    last = read_checkpoint(cfg.run_dir() / "last.pth")
    assert (last["epoch"], last["step"]) == (1, 2)        # the end-of-epoch-1 checkpoint, untouched
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_sigterm_saves_resumable_checkpoint_and_resume_matches(reference_run):
    """SIGTERM in the middle of epoch 1 -> mid-epoch last.pth, clean return; resuming gives the uninterrupted run."""
    previous = signal.getsignal(signal.SIGTERM)
    task = _FailingTask(12, smoothing=0.1, mixup=0.5, cutmix=0.5, at=2, action="sigterm")
    res = train(tiny_cfg("sigterm", **REF), task=task)
    assert signal.getsignal(signal.SIGTERM) is previous   # handlers restored
    assert res.interrupted and res.history == []
    ck = read_checkpoint(res.last_checkpoint)
    assert (ck["epoch"], ck["epoch_step"], ck["step"]) == (0, 2, 2)
    assert "signal SIGTERM" in (res.run_dir / "train.log").read_text()
    resumed = train(tiny_cfg("sigterm", resume=True, **REF))
    assert_same_run(read_checkpoint(reference_run.last_checkpoint), read_checkpoint(resumed.last_checkpoint))


def test_ensure_checkpoint_trains_once_then_reuses(shapes_tiny):
    kw = dict(data_size="tiny", img_size=32, batch_size=16, epochs=1, steps_per_epoch=2, progress=False)
    path = ensure_checkpoint("resnet18", "td", "smoke", **kw)
    assert path.name == "best.pth" and path.parent.name.startswith("resnet18_td_joint_t2_m1-smoke-")
    stamp = path.stat().st_mtime_ns
    assert ensure_checkpoint("resnet18", "td", "smoke", **kw) == path and path.stat().st_mtime_ns == stamp
    ck = read_checkpoint(path)
    assert ck["config"]["steps_per_epoch"] == 2 and ck["epoch"] == 1
    # a checkpoint of another config in that folder is never reused silently
    cfg = load_config(None, profile="smoke", model={"arch": "resnet18", "attention": "td"}, **kw)
    ck["config"]["lr_base"] = 0.5
    torch.save(ck, cfg.run_dir() / "last.pth")
    with pytest.raises(ValueError, match=r"different config \(differs in \['lr_base'\]\)"):
        ensure_checkpoint("resnet18", "td", "smoke", **kw)


def test_plot_curves_writes_png_and_pdf(tmp_path, monkeypatch):
    import tdam.train.plots as plots

    monkeypatch.setattr(plots, "figures_dir", lambda: tmp_path)
    hist = [{"epoch": 1, "train_loss": 2.0, "val_loss": 1.9, "val_top1": 20.0, "val_top5": 60.0},
            {"epoch": 2, "train_loss": 1.5, "val_loss": 1.4, "val_top1": 40.0, "val_top5": 80.0}]
    fig = plots.plot_curves(hist, chance=100 / 12, save_as="curves")
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "curves.pdf").stat().st_size > 0
    acc = fig.axes[1]
    assert [list(line.get_ydata()) for line in acc.lines[:2]] == [[20.0, 40.0], [60.0, 80.0]]


def test_bad_image_skipped_and_counted_or_reported(shapes_tiny, tmp_path):
    import shutil

    from tdam.data import BadImageError

    root = tmp_path / "imagenet"
    shutil.copytree(shapes_tiny / "imagenet", root)
    bad = sorted((root / "train").rglob("*.JPEG"))[5]
    bad.write_bytes(b"not a jpeg")
    kw = dict(data_dir=str(root), epochs=1, steps_per_epoch=None, val_batches=1)
    res = train(tiny_cfg("bad-skip", skip_bad_images=True, **kw))
    assert res.final["bad_images"] == 1 and res.final["step"] == 6      # 96 images / 16: every batch read
    assert f"skipped 1 unreadable image(s), e.g. {bad}" in (res.run_dir / "train.log").read_text()
    with pytest.raises(BadImageError, match=str(bad)):
        train(tiny_cfg("bad-raise", **kw))


def _tiny_state(lr: float = 0.1, momentum: float = 0.9):
    """A small per-sample model (no BatchNorm), so micro-batching cannot change the maths."""
    from tdam.train import TrainState

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return TrainState(model=model, optimizer=opt, scaler=torch.amp.GradScaler("cpu", enabled=False))


def test_gradient_accumulation_equals_large_batch():
    from tdam.train import EvalContext, train_one_epoch

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 8, 8, generator=g), torch.arange(16) % 4
    task, ctx = ClassificationTask(4, smoothing=0.1), EvalContext(device=torch.device("cpu"))
    big, small = _tiny_state(), _tiny_state()
    train_one_epoch(big, task, [(x[:8], y[:8]), (x[8:], y[8:])], ctx, updates=2)
    train_one_epoch(small, task, [(x[i:i + 4], y[i:i + 4]) for i in range(0, 16, 4)], ctx, updates=2, accum_steps=2)
    assert big.step == small.step == 2
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert small.meter.samples == 16 and small.meter.loss_sum == pytest.approx(big.meter.loss_sum, rel=1e-5)


@pytest.mark.slow
def test_periodic_mid_epoch_checkpoint_then_resume_auto(shapes_tiny):
    """checkpoint_every_steps=2: a crash (here a NaN) at update 3 leaves the update-2 state; resume='auto' uses it."""
    cfg = tiny_cfg("periodic", epochs=1, checkpoint_every_steps=2)
    with pytest.raises(NonFiniteLossError):
        train(cfg, task=_FailingTask(12, smoothing=0.1, at=3, action="nan"))
    ck = read_checkpoint(cfg.run_dir() / "last.pth")
    assert (ck["epoch"], ck["epoch_step"], ck["step"]) == (0, 2, 2)
    res = train(cfg.replace(resume="auto"))
    assert not res.interrupted and res.final["step"] == 3
    fresh = train(tiny_cfg("periodic-fresh", epochs=1, resume="auto"))   # nothing to resume: starts from scratch
    assert fresh.final["step"] == 3
