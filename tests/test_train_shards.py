"""The trainer reading ImageNet from WebDataset shards and parquet files (the embedded data, converted).

One epoch from shards under 2-process gloo DDP: both ranks run the same number of updates on disjoint shards and end
with identical weights (DDP's gradient all-reduce); the parquet reader trains like the folder reader; a mid-epoch
resume from shards drops exactly the batches the checkpoint had consumed.
"""
from __future__ import annotations

import pytest
import torch

from tdam.checkpoint import read_checkpoint
from tdam.train import load_config, train
from helpers import spawn_ranks

pytest.importorskip("webdataset", reason="the shards extra (pip install tdam[shards]) is part of the test install")
pytest.importorskip("pyarrow", reason="the shards extra (pip install tdam[shards]) is part of the test install")


def _cfg(dataset: str, out: str, **kw):
    base = dict(model={"arch": "resnet18"}, dataset=dataset, data_size="tiny", img_size=32, batch_size=8, epochs=1,
                warmup_epochs=0, lr=0.05, workers=0, val_batches=2, progress=False, seed=1, output_dir=out)
    return load_config(None, **{**base, **kw})


def _train_rank(world: int, out: str) -> None:
    res = train(_cfg("imagenet_wds", out, steps_per_epoch=3))
    assert not res.interrupted


@pytest.mark.drill
def test_one_epoch_from_shards_under_two_gloo_processes(tmp_path, shapes_tiny):
    out = str(tmp_path / "ddp")
    spawn_ranks(_train_rank, 2, out)
    ck = read_checkpoint(tmp_path / "ddp" / "last.pth")
    assert ck["world_size"] == 2 and ck["step"] == 3 and ck["epoch"] == 1
    hist = ck["metrics"]["history"][0]
    assert torch.isfinite(torch.tensor(hist["train_loss"])) and 0 <= hist["val_top1"] <= 100


@pytest.mark.slow
def test_parquet_and_shards_train_and_shards_resume_mid_epoch(tmp_path, shapes_tiny):
    parquet = train(_cfg("imagenet_parquet", str(tmp_path / "pq"), steps_per_epoch=2))
    assert parquet.num_classes == 12 and len(parquet.history) == 1

    full = train(_cfg("imagenet_wds", str(tmp_path / "full"), steps_per_epoch=4, workers=2))
    cut = train(_cfg("imagenet_wds", str(tmp_path / "cut"), steps_per_epoch=4, workers=2), stop_at_step=2)
    assert cut.interrupted
    resumed = train(_cfg("imagenet_wds", str(tmp_path / "cut"), steps_per_epoch=4, workers=2, resume=True))
    a, b = read_checkpoint(full.last_checkpoint), read_checkpoint(resumed.last_checkpoint)
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():          # same batches, same augmentation (workers > 0), same updates
        assert torch.equal(v, b["model"][k]), k
