"""DDP on CPU (gloo): 2 processes x batch B/2 == 1 process x batch B, after K updates, to float tolerance.

The equality needs a model whose forward treats samples independently in training mode. BatchNorm does not: under DDP
each rank normalises with the statistics of its own B/2 images (SyncBatchNorm would fix that on GPUs;
torch has no CPU kernel for it). So the test trains TD-ConvNeXt-T (LayerNorm; TDjoint t=2 m=1 in stages 3-4, a paper
model at full width) where DDP's gradient average over ranks equals the single-process batch mean exactly in real
arithmetic. Inputs are a fixed tensor dataset (no random augmentation, whose draws differ per rank by design).
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from tdam.checkpoint import read_checkpoint
from tdam.train import load_config, train
from helpers import spawn_ranks

K, B = 3, 8


class _Data(TensorDataset):
    classes = ["a", "b", "c", "d"]


def _datasets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, 32, 32, generator=g)
    y = torch.arange(48) % 4
    return _Data(x, y), _Data(x[:20], y[:20])


def _cfg(name: str, batch_size: int, runs: str):
    return load_config(None, model={"arch": "convnext_tiny", "attention": "td"}, epochs=1, steps_per_epoch=K,
                       batch_size=batch_size, lr=0.05, warmup_epochs=0, workers=0, progress=False, name=name,
                       output_dir=f"{runs}/{name}", seed=3)


def _train_rank(world: int, runs: str) -> None:
    res = train(_cfg("ddp", B // world, runs), datasets=_datasets())
    assert not res.interrupted


@pytest.mark.drill
def test_two_gloo_processes_equal_one_process(tmp_path):
    runs = str(tmp_path)
    spawn_ranks(_train_rank, 2, runs)
    single = train(_cfg("single", B, runs), datasets=_datasets())
    a, b = read_checkpoint(single.last_checkpoint), read_checkpoint(tmp_path / "ddp" / "last.pth")
    assert a["step"] == b["step"] == K and b["world_size"] == 2 and len(b["rng"]) == 2
    assert a["optimizer"]["state"], "no optimizer update happened"
    td_keys = [k for k in a["model"] if ".td." in k]
    assert td_keys, "no TD parameters in the model"
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=2e-6, msg=lambda m: f"{k}: {m}")
    ha, hb = a["metrics"]["history"][0], b["metrics"]["history"][0]
    for key in ("train_loss", "val_loss", "val_top1", "val_top5"):    # metrics reduced over ranks
        assert hb[key] == pytest.approx(ha[key], rel=1e-4, abs=1e-4), key


@pytest.mark.drill
def test_cli_under_torchrun_on_cpu(tmp_path, shapes_tiny):
    """`torchrun --nproc_per_node 2 -m tdam.train ...` (gloo on CPU): one run folder, world size 2, rank-0 files."""
    import subprocess
    import sys

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tdam.train",
           "--profile", "smoke", "--data_size", "tiny", "--img_size", "32", "--batch_size", "8", "--epochs", "1",
           "--steps_per_epoch", "2", "--output_dir", str(run), "--model", "{arch: resnet18, attention: td}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    env = __import__("json").loads((run / "env.json").read_text())
    assert env["world_size"] == 2 and env["global_batch"] == 16
    ck = read_checkpoint(run / "last.pth")
    assert ck["step"] == 2 and len(ck["rng"]) == 2
    assert done.stdout.count("epoch 1/1") == 1               # rank 0 logs alone
