"""The trainer's EMA follows the configured decay from the first update: ema_k = d ema_{k-1} + (1 - d) w_k, from
ema_0 = the initial weights (ConvNeXt's timm ModelEma), for every floating-point parameter and buffer."""
from __future__ import annotations

import torch

from tdam.checkpoint import read_checkpoint
from tdam.train import load_config, train
from tdam.train.state import seed_everything
from tdam.train.trainer import build_model

DECAY = 0.7


def _cfg(name: str, **kw):
    base = dict(model={"arch": "resnet18"}, data_size="tiny", img_size=32, batch_size=16, epochs=2, steps_per_epoch=3,
                warmup_epochs=0, sched="none", lr=0.05, val_batches=1, name=name, progress=False, model_ema=True,
                model_ema_decay=DECAY, tensorboard=False)
    return load_config(None, profile="smoke", **{**base, **kw})


def test_ema_follows_the_configured_decay_from_the_first_update(shapes_tiny):
    one = read_checkpoint(train(_cfg("ema1"), stop_at_step=1).last_checkpoint)
    two = read_checkpoint(train(_cfg("ema2"), stop_at_step=2).last_checkpoint)
    assert (one["step"], two["step"]) == (1, 2)
    seed_everything(0)                                  # the trainer's initial weights: seed, then build
    w0 = build_model(_cfg("ema0"), num_classes=len(one["model"]["fc.bias"])).state_dict()
    moved = max(float((one["model"][k] - w0[k]).abs().max()) for k in w0 if w0[k].is_floating_point())
    assert moved > 1e-2                                 # the first update changed the weights: the check has teeth
    for k, v0 in w0.items():
        if not v0.is_floating_point():
            assert torch.equal(one["model_ema"][k], one["model"][k])      # counters are copied
            continue
        ema1 = DECAY * v0 + (1 - DECAY) * one["model"][k]
        ema2 = DECAY * ema1 + (1 - DECAY) * two["model"][k]
        torch.testing.assert_close(one["model_ema"][k], ema1, rtol=1e-5, atol=1e-7, msg=f"{k} after update 1")
        torch.testing.assert_close(two["model_ema"][k], ema2, rtol=1e-5, atol=1e-7, msg=f"{k} after update 2")


def test_best_and_best_ema_checkpoints_and_recorded_gpu_settings(shapes_tiny):
    """As ConvNeXt's main.py: best.pth at the best top-1, best_ema.pth at the best EMA top-1, both kept; env.json
    records the GPU settings in force (on CPU: none)."""
    import json

    res = train(_cfg("best", val_batches=2))
    assert not res.interrupted and len(res.history) == 2
    best_ema = read_checkpoint(res.best_ema_checkpoint)
    top = max(res.history, key=lambda r: r["ema_val_top1"])                # first epoch of the maximum
    assert best_ema["metrics"]["best_ema"] == {"epoch": top["epoch"], "ema_val_top1": top["ema_val_top1"]}
    assert best_ema["epoch"] == top["epoch"] and res.best_checkpoint is not None
    env = json.loads((res.run_dir / "env.json").read_text())
    assert (env["cudnn_benchmark"], env["tf32"]) == (False, False)
