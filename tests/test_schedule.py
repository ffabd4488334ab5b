"""tdam.train.lr_schedule: the lr of every update, against the authors' scheduler (timm) and ConvNeXt's formula."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from timm.scheduler import CosineLRScheduler

from tdam.train import load_config, lr_schedule
from tdam.train.recipe import updates_per_epoch
from tdam.train.schedule import ListScheduler

IMAGENET_TRAIN = 1_281_167


def authors_schedule(peak: float, t_initial: int, total_epochs: int, n: int) -> list[float]:
    """The authors' script (timm 0.5 train.py): CosineLRScheduler in epochs, its lr at construction for epoch 0,
    ``step(epoch + 1)`` after every epoch, the same lr for every update of an epoch, ``total_epochs`` epochs."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    scheduler = CosineLRScheduler(optimizer, t_initial=t_initial, warmup_t=5, warmup_lr_init=1e-4, lr_min=1e-6,
                                  t_in_epochs=True)
    out = []
    for epoch in range(total_epochs):
        out += [optimizer.param_groups[0]["lr"]] * n
        scheduler.step(epoch + 1)
    return out


@pytest.mark.parametrize("name, t_initial, total", [("resnet50_td_joint_t2_m1", 150, 160),
                                                    ("resnet18_td_joint_t2_m1", 100, 110)])
def test_paper_resnet_schedule_is_the_authors(name, t_initial, total):
    cfg = load_config(name)
    n, _ = updates_per_epoch(cfg, IMAGENET_TRAIN, world_size=4)      # the public command: 4 GPUs x 128
    got = lr_schedule(cfg, n, world_size=4)
    assert len(got) == total * n == cfg.epochs * n
    assert got == authors_schedule(0.4, t_initial, total, n)          # every update, exactly
    assert got[-10 * n:] == [1e-6] * (10 * n)                       # the 10 cool-down epochs at min_lr
    # warm-up from 1e-4; the peak is the cosine at epoch 5 of t_initial (the warm-up is inside it), never 0.4 itself
    peak_epoch_5 = 1e-6 + 0.5 * (0.4 - 1e-6) * (1 + math.cos(math.pi * 5 / t_initial))
    assert got[0] == 1e-4 and max(got) == pytest.approx(peak_epoch_5)


def test_paper_convnext_schedule_is_convnexts_cosine_scheduler():
    """ConvNeXt's utils.cosine_scheduler(4e-3, 1e-6, 300, N, warmup_epochs=20), written out, at the paper's batch
    (122 per GPU x 8 accumulation x 4 GPUs): the lr is not scaled by the batch."""
    cfg = load_config("convnext_tiny_td_joint_t2_m1")
    n, _ = updates_per_epoch(cfg, IMAGENET_TRAIN, world_size=4)
    assert cfg.global_batch(4) == 3904 and n == IMAGENET_TRAIN // 3904
    warmup = np.linspace(0, 4e-3, 20 * n)
    rest = np.arange(300 * n - 20 * n)
    cosine = np.array([1e-6 + 0.5 * (4e-3 - 1e-6) * (1 + math.cos(math.pi * i / len(rest))) for i in rest])
    expected = np.concatenate((warmup, cosine))
    got = np.array(lr_schedule(cfg, n, world_size=4))
    assert got.shape == expected.shape == (300 * n,)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-18)


def test_per_update_profile_keeps_timms_per_update_cosine():
    """The smoke profile keeps tdam's per-update schedule: timm's cosine in updates, warm-up inside."""
    cfg = load_config("resnet18_td_joint_t2_m1", profile="smoke")
    n = 25
    got = lr_schedule(cfg, n)
    peak = cfg.resolved_lr()
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    ref = CosineLRScheduler(optimizer, t_initial=cfg.epochs * n, warmup_t=cfg.warmup_epochs * n,
                            warmup_lr_init=1e-5, lr_min=0.0, t_in_epochs=False)
    expected = []
    for i in range(cfg.epochs * n):
        ref.step_update(i)
        expected.append(optimizer.param_groups[0]["lr"])
    assert got == expected and len(set(got[:n])) == n                # a new value every update


def test_cooldown_and_constant_and_bad_input():
    cfg = load_config(None, epochs=6, warmup_epochs=1, cooldown_epochs=2, lr_step="epoch", lr=0.1, min_lr=0.01,
                      warmup_lr=0.001)
    got = lr_schedule(cfg, 3)
    assert got[:3] == [0.001] * 3 and got[-6:] == [0.01] * 6 and len(got) == 18
    assert lr_schedule(cfg.replace(sched="none"), 3) == [0.1] * 18
    with pytest.raises(ValueError, match="updates_per_epoch=0"):
        lr_schedule(cfg, 0)
    with pytest.raises(ValueError, match="leave no epoch of the schedule"):
        load_config(None, epochs=6, warmup_epochs=1, cooldown_epochs=5)
    with pytest.raises(ValueError, match="warmup_prefix=true .* needs sched='cosine'"):
        load_config(None, warmup_prefix=True, sched="step")
    with pytest.raises(ValueError, match=r"lr_step='batch' is not valid; valid choices are \['epoch', 'update'\]"):
        load_config(None, lr_step="batch")


def test_list_scheduler_sets_each_update_and_keeps_group_ratios():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.2}, {"params": [b], "lr": 0.1}], lr=0.2)
    sched = ListScheduler(optimizer, [0.02, 0.2, 0.1], peak=0.2)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.02, 0.01])    # update 0
    sched.step_update(num_updates=2)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1, 0.05])
    sched.step_update(num_updates=99)                                   # past the end: the last value
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
