"""Live curves: a tiny TD training run writes a TensorBoard event file that tensorboard's own reader can read."""
from __future__ import annotations

import math
import sys

import pytest
import torch

import tdam
from tdam.train import load_config, train
from tdam.train.engine import EvalContext
from tdam.train.tensorboard import EPOCH_TAGS, RunLogger, accuracy_per_step


def _scalars(log_dir) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def test_tiny_td_run_writes_expected_tags(shapes_tiny, tmp_path):
    cfg = load_config(None, profile="smoke", model={"arch": "resnet18", "attention": "td", "t": 2}, data_size="tiny",
                      img_size=32, batch_size=16, epochs=1, steps_per_epoch=4, log_interval=2, val_batches=2,
                      model_ema=True, model_ema_decay=0.9, progress=False, output_dir=str(tmp_path / "run"))
    assert cfg.tensorboard and not cfg.wandb                      # on by default, W&B off
    res = train(cfg)
    scalars = _scalars(res.run_dir / "tb")
    expected = {"train/loss", "train/lr", "epoch/train_loss", "epoch/lr", "val/loss", "val/top1", "val/top5",
                "val_ema/top1", "val_ema/top5", "perf/images_per_s", "perf/data_wait", "perf/peak_mem_mb",
                "val_steps/top1_t1", "val_steps/top1_t2", "val_steps/top5_t1", "val_steps/top5_t2"}
    assert expected <= set(scalars), sorted(expected - set(scalars))
    assert "val_steps/top1_t3" not in scalars                      # t = 2: steps 1 and 2 only
    assert all(math.isfinite(e.value) for events in scalars.values() for e in events)
    assert [e.step for e in scalars["train/loss"]] == [2]          # every log_interval updates (the 4th ends the epoch)
    row = res.final
    for key in ("val_top1", "val_top5", "images_per_s", "data_wait"):
        (event,) = scalars[EPOCH_TAGS[key]]
        assert event.step == row["step"] == 4 and event.value == pytest.approx(row[key], rel=1e-6)
    assert 0 <= scalars["perf/data_wait"][0].value <= 1
    # the last step of the per-step protocol is the model as trained: the standard evaluation's top-1
    assert scalars["val_steps/top1_t2"][0].value == pytest.approx(row["val_top1"], abs=1e-6)


def test_accuracy_per_step_matches_steps_context():
    """One forward_steps pass gives the accuracy of ``model.steps(k)`` for every k; plain models give nothing."""

    torch.manual_seed(0)
    model = tdam.create_model("resnet18", attention="td", t=3, num_classes=12).eval()
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])
    ctx = EvalContext(device=torch.device("cpu"))
    per_step = accuracy_per_step(model, [(x, y)], ctx)
    assert sorted(per_step) == [1, 2, 3]
    for k in (1, 2, 3):
        with torch.no_grad(), model.steps(k):
            logits = model(x)
        top1 = 100.0 * logits.argmax(1).eq(y).float().mean().item()
        assert per_step[k]["top1"] == pytest.approx(top1)
    assert accuracy_per_step(tdam.create_model("resnet18", num_classes=12), [(x, y)], ctx) == {}


def test_switches_and_wandb_extra(tmp_path, monkeypatch):
    off = RunLogger(tmp_path / "off", tensorboard=False)
    assert not off.enabled and not (tmp_path / "off" / "tb").exists()
    off.epoch({"step": 1, "val_top1": 1.0})                        # a no-op, not an error
    off.close()
    with pytest.raises(ValueError, match="tensorboard"):
        RunLogger(tmp_path, tensorboard="yes")
    monkeypatch.setitem(sys.modules, "wandb", None)                 # the extra is not installed
    with pytest.raises(ImportError, match=r"tdam\[wandb\]"):
        RunLogger(tmp_path / "w", wandb=True)
    rank1 = RunLogger(tmp_path / "r1", is_main=False)               # other ranks evaluate but never write
    assert rank1.enabled and rank1.writer is None and not (tmp_path / "r1").exists()


def test_wandb_without_the_extra_is_a_configuration_error(monkeypatch):
    import importlib.util

    from tdam.train import load_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match=r"wandb: true needs .*pip install 'tdam\[wandb\]'"):
        load_config(None, profile="smoke", wandb=True)
