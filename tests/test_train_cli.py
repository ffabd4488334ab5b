"""The CLI: ``--help`` (every config field, fast), what a run prints (progress lines, the closing line), and as a
separate process (drill tier) SIGTERM (pre-emption) and SIGKILL during a checkpoint write."""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tdam.checkpoint import read_checkpoint
from tdam.paths import repo_root
from tdam.train import TrainConfig, load_config, train
from tdam.train.cli import main, parse_overrides
from tdam.train.config import GROUPS
from tdam.errors import EXIT_INTERRUPTED
from tdam.progress import duration

ENV = {**os.environ, "PYTHONPATH": str(repo_root()), "OMP_WAIT_POLICY": "PASSIVE"}
PROGRESS = re.compile(r"^  epoch (\d+)/(\d+) update (\d+)/(\d+) step (\d+)/(\d+) loss (\S+) lr (\S+) (\S+) img/s "
                      r"ETA (\S+)$")


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def test_help_lists_every_field_with_type_default_and_meaning():
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tdam.train", "--help"], capture_output=True, text=True, env=ENV,
                          timeout=60)
    elapsed = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    # `import tdam` loads no torch (its names load on first use): ~0.1 s; the bound leaves room for a loaded machine.
    assert elapsed < 3, f"--help took {elapsed:.1f} s"
    lines = done.stdout.splitlines()
    for flag in ("--config YAML", "--profile NAME", "--print-config", "--dry-run"):
        assert f"  {flag}" in lines
    headers = [i for i, line in enumerate(lines) if line.startswith("config fields, ")]
    assert [lines[i] for i in headers] == [f"config fields, {title}:" for title in GROUPS.values()]
    for f in dataclasses.fields(TrainConfig):
        (i,) = [i for i, line in enumerate(lines) if i > headers[0] and line.startswith(f"  --{f.name} ")]
        match = re.fullmatch(rf"  --{f.name} (.+) \(default: (.*)\)", lines[i])
        assert match and match[1] == f.type, lines[i]
        assert yaml.safe_load(match[2]) == _default(f), f"{f.name}: {match[2]!r}"      # the default, as YAML
        assert lines[i + 1].startswith("      ") and lines[i + 1].strip()               # its meaning below
        group = max(h for h in headers if h < i)                                       # under its own group
        assert lines[group] == f"config fields, {GROUPS[f.metadata['group']]}:"
    assert "; choices: auto, bf16, fp16, fp32" in " ".join(done.stdout.split())     # wrapped lines joined


def test_help_loads_neither_torch_nor_timm():
    """`python -m tdam.train --help` imports tdam and tdam.train's configuration only: neither torch nor timm."""
    code = ("import runpy, sys; sys.argv = ['tdam.train', '--help']\n"
            "try:\n    runpy.run_module('tdam.train', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as exit:\n"
            "    print('HEAVY', sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules), exit.code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "HEAVY [] 0" and "--warmup_epochs float (default: 5)" in done.stdout


@pytest.mark.parametrize("first", ["tdam", "timm"])
def test_import_tdam_is_light_and_registers_the_models_with_timm_in_either_order(first):
    """`import tdam` alone loads no torch, and its subpackages are attributes on first use; the td_* and baseline
    names are in timm's registry whether timm is imported after tdam (the import hook) or before it."""
    code = ("import sys; import tdam; print('LIGHT', 'torch' not in sys.modules); "
            "print('SUBPACKAGE', callable(tdam.data.build_dataset)); import timm; " if first == "tdam" else
            "import sys, timm, tdam; ")
    code += "print('REGISTERED', timm.is_model('td_resnet50'), timm.is_model('se_resnet50'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = ["LIGHT True", "SUBPACKAGE True"] * (first == "tdam") + ["REGISTERED True True"]
    assert done.stdout.splitlines() == expected, done.stdout


def test_duration():
    assert [duration(s) for s in (0, 42.4, 185, 3725, 90061)] == ["0s", "42s", "3m05s", "1h02m", "25h01m"]


def test_cli_run_prints_progress_lines_and_ends_with_the_best_epoch(tmp_path, shapes_tiny, capsys):
    """Not on a terminal (as under SLURM or papermill): a line every log_interval updates (the epoch's last update
    is in the epoch line), flushed; the run's last line names the best top-1, its epoch and the checkpoint."""
    run = tmp_path / "run"
    args = ["--profile", "smoke", "--data_size", "tiny", "--img_size", "32", "--batch_size", "16", "--epochs", "2",
            "--steps_per_epoch", "null", "--val_batches", "2", "--warmup_epochs", "0", "--sched", "constant",
            "--log_interval", "2", "--tensorboard", "false", "--output_dir", str(run)]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    per_epoch = 96 // 16                                           # the tiny split: 96 training images
    assert out[0].startswith("model:       resnet18_plain") and f"updates:     {per_epoch} per epoch, " \
        f"{2 * per_epoch} in total" in out
    progress = [PROGRESS.match(line) for line in out if line.startswith("  epoch ")]
    assert all(progress)
    steps = [int(m[5]) for m in progress]
    assert steps == [s for s in range(1, 2 * per_epoch + 1) if s % 2 == 0 and s % per_epoch != 0]
    lr = load_config(None, profile="smoke", batch_size=16).resolved_lr()
    for m in progress:
        epoch, epochs, update, updates, step, total = (int(m[i]) for i in range(1, 7))
        assert (epochs, updates, total) == (2, per_epoch, 2 * per_epoch)
        assert epoch == (step - 1) // per_epoch + 1 and update == step - (epoch - 1) * per_epoch
        assert math.isfinite(float(m[7])) and float(m[7]) > 0
        assert m[8] == f"{lr:.4g}"                                  # constant schedule: the resolved lr
        assert float(m[9]) > 0 and re.fullmatch(r"\d+s|\d+m\d\ds|\d+h\d\dm", m[10])
    log = (run / "train.log").read_text()
    assert all(m[0] in log for m in progress)                       # the same lines in train.log
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: float(r["val_top1"]))           # first epoch of the best top-1
    assert out[-1] == (f"done: best val top-1 {float(best['val_top1']):.1f}% at epoch {best['epoch']}; "
                       f"checkpoint {run / 'best.pth'}")
    # the same command again: the finished run is reported, not retrained and not refused
    stamp = (run / "last.pth").stat().st_mtime_ns
    assert main(args) == 0
    again = capsys.readouterr().out.splitlines()
    assert "already holds this run, finished: nothing trained" in again[-2] and again[-1] == out[-1]
    assert (run / "last.pth").stat().st_mtime_ns == stamp


def test_progress_lines_stay_off_a_terminal_with_a_bar(tmp_path, shapes_tiny, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    cfg = load_config(None, profile="smoke", data_size="tiny", img_size=32, batch_size=16, epochs=1,
                      steps_per_epoch=4, val_batches=1, log_interval=1, progress=True, tensorboard=False,
                      output_dir=str(tmp_path / "bar"))
    train(cfg)
    out = capsys.readouterr().out
    assert "epoch 1/1 train_loss" in out and "  epoch 1/1 update" not in out    # the bar shows them instead
    assert "  epoch 1/1 update 3/4 step 3/4" in (tmp_path / "bar" / "train.log").read_text()


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
    _wait_for(lambda: log.is_file() and "epoch 2/50 update 1/4" in log.read_text(), proc)
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
    train(_cfg(run, epochs=2, steps_per_epoch=2), stop_at_step=3)     # pre-empted in epoch 2
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
    res = train(_cfg(run, epochs=2, steps_per_epoch=2, resume=True))  # ... and the run resumes
    assert not res.interrupted and res.final["step"] == 4
    for p in run.glob(".last.pth.*.tmp"):
        os.unlink(p)
