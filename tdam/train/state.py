"""What a resumable checkpoint holds beyond the weights: RNG states, sampler position, versions.

Resuming a CPU run with ``workers: 0`` reproduces the uninterrupted run exactly: the sampler order is a function of
(seed, epoch) only (:class:`ResumableSampler`), the loader skips the samples a mid-epoch checkpoint already consumed,
and the python / numpy / torch / CUDA generators continue from their saved states (augmentation, Mixup and
drop-path draws). With ``workers > 0`` the sample order is still exact; the augmentation draws made inside worker
processes are re-seeded per epoch, so they differ after a mid-epoch resume.
"""
from __future__ import annotations

import platform
import random
import sys
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

__all__ = ["ResumableSampler", "ShardSampler", "rng_state", "set_rng_state", "versions", "seed_everything"]


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process) whose shuffled order depends only on (seed, epoch), and which can
    start ``start_index`` samples into this rank's share (mid-epoch resume)."""

    def __init__(self, dataset: Any, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start_index = 0

    def set_position(self, epoch: int, start_index: int = 0) -> None:
        self.set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start_index:])

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
