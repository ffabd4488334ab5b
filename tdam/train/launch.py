"""Start a training run from a notebook: in-process on CPU / one GPU, or ``torchrun`` on several GPUs.

With ``gpus > 1`` the resolved config is written to ``<run dir>/request.yaml`` and
``torchrun --standalone --nproc_per_node <gpus> -m tdam.train --config <run dir>/request.yaml`` is started; its output
(rank 0's epoch lines) is followed live, and the finished run is read back from the run folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque

import yaml

from tdam.runs.lock import inherit_env
from tdam.train.config import TrainConfig
from tdam.validation import check_int
from tdam.train.plots import read_metrics
from tdam.train.trainer import RunResult, train

__all__ = ["run_training", "check_gpus", "torchrun_command"]


def torchrun_command(cfg_path: str, gpus: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "tdam.train", "--config", cfg_path]


def check_gpus(gpus: int) -> int:
    """Validate the notebook's ``gpus`` parameter against the visible CUDA devices."""
    import torch

    check_int("gpus (0: CPU, 1: one GPU, N: torchrun on N GPUs)", gpus, 0)
    if gpus > torch.cuda.device_count():
        raise ValueError(f"gpus={gpus} but {torch.cuda.device_count()} CUDA device(s) are visible: use gpus=0 (CPU)"
                         + (f" or 1..{torch.cuda.device_count()}" if torch.cuda.device_count() else ""))
    return gpus


def run_training(cfg: TrainConfig, gpus: int = 0) -> RunResult:
    """``gpus=0``: CPU; ``1``: one CUDA device, in this process; ``>1``: a torchrun job on this machine."""
    check_gpus(gpus)
    if gpus <= 1:
        return train(cfg.replace(device="cuda" if gpus == 1 else "cpu"))
    cfg = cfg.replace(device="cuda", name=cfg.run_name(), output_dir=str(cfg.run_dir()))
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    request = run_dir / "request.yaml"
    request.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tail: deque[str] = deque(maxlen=40)
    env = {**os.environ, **inherit_env(run_dir)}      # the job works under the run lock this process may hold
    with subprocess.Popen(torchrun_command(str(request), gpus), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1, env=env) as proc:
        for line in proc.stdout:                    # follow the job's log
            tail.append(line)
            print(line, end="", flush=True)
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"torchrun exited with code {rc}; last lines:\n{''.join(tail)}")
    env = json.loads((run_dir / "env.json").read_text())
    summary_path = run_dir / "summary.json"          # written when the run finished (absent if pre-empted)
    best = json.loads(summary_path.read_text())["best"] if summary_path.is_file() else None
    return RunResult(run_dir=run_dir, history=read_metrics(run_dir), best=best, num_classes=env["num_classes"],
                     interrupted=not summary_path.is_file(), env=env)
