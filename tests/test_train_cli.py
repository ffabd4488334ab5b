"""The CLI as a separate process (drill tier): SIGTERM (pre-emption) and SIGKILL during a checkpoint write."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tdam.checkpoint import read_checkpoint
from tdam.train import load_config, train
from tdam.train.cli import parse_overrides
from tdam.train.errors import EXIT_INTERRUPTED


def _args(run: Path, epochs: int = 50) -> list[str]:
    return ["--profile", "smoke", "--data_size", "tiny", "--img_size", "32", "--batch_size", "8", "--epochs",
            str(epochs), "--steps_per_epoch", "4", "--val_batches", "1", "--log_interval", "1", "--output_dir",
            str(run)]


def _cfg(run: Path, **kw):
    return load_config(None, profile="smoke", **{**parse_overrides(_args(run)[2:]), **kw})


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early (rc {proc.returncode}): {proc.communicate()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.05)


@pytest.mark.drill
def test_sigterm_leaves_resumable_checkpoint(tmp_path, shapes_tiny):
    run = tmp_path / "run"
    log = run / "train.log"
    proc = subprocess.Popen([sys.executable, "-m", "tdam.train", *_args(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: log.is_file() and "epoch 2 update 1/4" in log.read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err       # its own exit code: resumable, not finished
    assert "pre-empted: resume with --resume true" in out
    assert "signal SIGTERM" in log.read_text()
    ck = read_checkpoint(run / "last.pth")                  # loadable, and a resumable mid-run state
    assert ck["step"] >= 5 and ck["step"] == 4 * ck["epoch"] + ck["epoch_step"]
    assert len(ck["metrics"]["history"]) == ck["epoch"] >= 1
    resumed = train(_cfg(run, resume=True), stop_at_step=ck["step"] + 2)
    after = read_checkpoint(run / "last.pth")
    assert after["step"] == ck["step"] + 2 and resumed.history[: ck["epoch"]] == ck["metrics"]["history"]
    assert "resumed at epoch" in log.read_text()


@pytest.mark.drill
def test_kill_during_checkpoint_write_keeps_previous_last(tmp_path, shapes_tiny):
    run = tmp_path / "run"
    train(_cfg(run, epochs=1, steps_per_epoch=2))
    last = run / "last.pth"
    before = last.read_bytes()
    writer = (f"import torch; from tdam.checkpoint import save_checkpoint; "
              f"save_checkpoint({{'model': {{'w': torch.ones(2**27)}}}}, {str(last)!r})")  # a 512 MB write
    proc = subprocess.Popen([sys.executable, "-c", writer])
    temps = lambda: [p for p in run.glob(".last.pth.*.tmp") if p.stat().st_size > 0]  # noqa: E731
    _wait_for(lambda: bool(temps()), proc, timeout=120)
    proc.kill()                                             # SIGKILL mid-write: no handler, no clean-up
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert last.read_bytes() == before                      # the previous last.pth is untouched ...
    ck = read_checkpoint(last)                              # ... loads ...
    assert ck["epoch"] == 1 and torch.is_tensor(next(iter(ck["model"].values())))
    res = train(_cfg(run, epochs=2, steps_per_epoch=2, resume=True))  # ... and resumes
    assert not res.interrupted and res.final["step"] == 4
    for p in run.glob(".last.pth.*.tmp"):
        os.unlink(p)
