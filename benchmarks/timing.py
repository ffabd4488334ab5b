"""What the benchmarks share: timing callables interleaved, so load drifts on a shared machine hit all of them alike.

Imported as a sibling module (``python benchmarks/<script>.py`` puts this folder on ``sys.path``)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

__all__ = ["sync", "timed"]


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int,
          repeats: int) -> dict[str, tuple[float, float]]:
    """``{name: (median wall seconds, median process-CPU seconds)}`` of each callable: ``warmup`` untimed rounds,
    then ``repeats`` rounds in which every callable runs once, in turn."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}
