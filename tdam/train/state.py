"""What makes a run reproducible and resumable: RNG states, per-sample augmentation seeds, sampler position, versions.

Same seed, software and machine (and thread count) -> bit-identical weights on CPU, with any number of data-loader
workers; on GPU with ``deterministic: true`` (:func:`deterministic_algorithms`). Three streams make that so:

- the sample order is a function of (seed, epoch) only (:class:`ResumableSampler`);
- the augmentation of a training sample is a function of (seed, epoch, sample index) only (:func:`sample_rng`, applied
  by ``tdam.train.data.SeededSamples``), whichever process draws it: the number of workers, their scheduling and
  their restarts change nothing;
- the python / numpy / torch / CUDA generators of the training process (Mixup / CutMix, drop-path, task draws such
  as WS-DAN's crops) are seeded once and saved in every checkpoint (:func:`rng_state`).

So resuming a mid-epoch checkpoint reproduces the uninterrupted run exactly, with ``workers: 0`` or ``> 0``: the
loader skips the samples the checkpoint already consumed, the later samples get the same augmentation draws, and
the training process's generators continue from their saved states.
"""
from __future__ import annotations

import os
import platform
import random
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

__all__ = ["ResumableSampler", "ShardSampler", "rng_state", "set_rng_state", "versions", "seed_everything",
           "sample_seed", "sample_rng", "deterministic_algorithms", "gpu_settings"]


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process) whose shuffled order depends only on (seed, epoch), and which can
    start ``start_index`` samples into this rank's share (mid-epoch resume). ``with_epoch=True`` yields
    ``(epoch, index)`` keys instead of indices, for datasets whose augmentation is seeded per sample
    (``tdam.train.data.SeededSamples``)."""

    def __init__(self, dataset: Any, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, with_epoch: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start_index = 0
        self.with_epoch = with_epoch

    def set_position(self, epoch: int, start_index: int = 0) -> None:
        self.set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())[self.start_index:]
        return iter([(self.epoch, i) for i in indices] if self.with_epoch else indices)

    def __len__(self) -> int:
        return self.num_samples - self.start_index


class ShardSampler(torch.utils.data.Sampler[int]):
    """Evaluation shard of rank r: samples r, r+W, r+2W, ... (no padding, so metrics count every sample once)."""

    def __init__(self, dataset: Any, *, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, len(dataset), num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The 63-bit seed of sample ``index``'s augmentation in ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


@contextmanager
def sample_rng(seed: int, epoch: int, index: int) -> Iterator[None]:
    """Inside: the python, numpy and torch CPU generators seeded by :func:`sample_seed` (the draws of the training
    transforms: crops, flips, RandAugment, erasing). In the training process (no loader workers) the three
    generators are restored afterwards, so its own streams (Mixup, drop-path) do not depend on the data; in a loader
    worker there is nothing to restore. CUDA generators are never touched."""
    s = sample_seed(seed, epoch, index)
    restore = torch.utils.data.get_worker_info() is None
    if restore:
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.default_generator.manual_seed(s)
    try:
        yield
    finally:
        if restore:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


CUBLAS_WORKSPACE = ":4096:8"   # the cuBLAS workspace setting torch requires for deterministic CUDA matrix products


@contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """``deterministic: true``: inside, torch uses deterministic algorithms where it has them
    (``torch.use_deterministic_algorithms(True, warn_only=True)``: an op without a deterministic CUDA kernel warns
    instead of failing), cuDNN picks deterministic convolution algorithms without benchmarking, and
    ``CUBLAS_WORKSPACE_CONFIG`` is set (unless already set) so cuBLAS reductions are reproducible. The previous
    settings are restored afterwards (a notebook kernel keeps its own). ``enabled=False``: nothing changes. CPU
    kernels are deterministic for a fixed thread count anyway; the option matters on GPU, where it costs speed
    (no cuDNN autotuning, slower deterministic kernels)."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[2], previous[3]
        if previous[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@contextmanager
def gpu_settings(device: torch.device, *, cudnn_benchmark: bool = True, tf32: bool = True
                 ) -> Iterator[dict[str, bool]]:
    """The CUDA settings of a run (fields ``cudnn_benchmark`` and ``tf32``), restored afterwards. Yields what is in
    force, recorded in the run's ``env.json``; on a CPU device nothing changes and both are reported off.

    - ``cudnn_benchmark``: cuDNN times the convolution algorithms for each new input shape and keeps the fastest
      (``torch.backends.cudnn.benchmark = True``), as the authors' script does unconditionally
      (``training_and_analysis_scripts/timm_td_train.py`` line 47) and ConvNeXt's ``main.py`` (line 213). The
      trainer passes it off under ``deterministic: true``.
    - ``tf32``: float32 matmuls and convolutions outside autocast may use TF32 tensor cores (Ampere and later):
      ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``. Both were on by default in
      the PyTorch of the authors' time (matmul TF32 until PyTorch 1.12; convolutions still); false keeps full fp32.

    Neither changes what is computed beyond rounding and the order of reductions, so neither is part of a run's
    identity (like ``deterministic``); ``benchmarks/gpu_check.py`` measures under the same settings."""
    if device.type != "cuda":
        yield {"cudnn_benchmark": False, "tf32": False}
        return
    previous = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield {"cudnn_benchmark": cudnn_benchmark, "tf32": tf32}
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = previous


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch and CUDA generator states as plain containers and tensors (weights-only loadable)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def versions(device: torch.device | None = None) -> dict[str, str]:
    """tdam / torch / timm / python / numpy versions and the device, for the run folder and the checkpoint."""
    import timm

    import tdam

    dev = "cpu"
    if device is not None and device.type == "cuda":
        dev = f"cuda ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda})"
    elif device is not None:
        dev = f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {"tdam": tdam.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "device": dev}
