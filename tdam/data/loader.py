"""DataLoader construction (04-training.md §4.2): workers, pin_memory on CUDA, persistent workers, seeded shuffling,
DistributedSampler under ``torch.distributed``, and the bad-image count.

``build_loader`` returns a :class:`CountingDataLoader`: a plain ``torch.utils.data.DataLoader`` whose collate drops
the :class:`~tdam.data.base.BadSample` placeholders a dataset built with ``on_bad_image='skip'`` returns for
unreadable files, and whose iteration yields the usual collated batches while recording the skipped paths in
``loader.bad_images`` (this epoch) and ``loader.bad_images_total`` (all epochs). At the end of an epoch with skips a
warning naming the count and the first files is logged on the ``tdam.data`` logger -- never silently. (Reading
``dataset.bad_images`` only works with ``num_workers=0``: workers hold their own dataset copies.)

Call ``loader.set_epoch(epoch)`` at the start of every epoch: it forwards to ``DistributedSampler.set_epoch`` (needed
for a different shuffle per epoch under DDP) and re-seeds the loader's generator with (seed, epoch), so the sample
order and the workers' augmentation seeds are a function of (seed, epoch) -- a resumed run sees the same batches.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.data import default_collate

from .base import BadSample

__all__ = ["build_loader", "CountingDataLoader", "collate_drop_bad", "seed_worker", "default_num_workers"]

log = logging.getLogger("tdam.data")


def collate_drop_bad(batch: list, collate: Callable = default_collate):
    """Collate the readable samples of ``batch`` and list the skipped ones: returns (collated or None, [paths])."""
    good = [b for b in batch if not isinstance(b, BadSample)]
    bad = [b.path for b in batch if isinstance(b, BadSample)]
    return (collate(good) if good else None), bad


class _DropBadCollate:
    def __init__(self, collate: Callable) -> None:
        self.collate = collate

    def __call__(self, batch: list):
        return collate_drop_bad(batch, self.collate)


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and ``numpy`` in a worker from torch's per-worker seed (itself from the loader generator)."""
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def default_num_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return min(8, n)


class CountingDataLoader(DataLoader):
    """DataLoader that drops and counts skipped bad images (see module docstring); ``set_epoch`` for shuffling."""

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seed = int(seed)
        self.bad_images: list[str] = []
        self.bad_images_total: list[str] = []

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        if self.generator is not None:
            self.generator.manual_seed(self.seed * 1_000_003 + int(epoch))

    def __iter__(self):
        self.bad_images = []
        for collated, bad in super().__iter__():
            if bad:
                self.bad_images.extend(bad)
                self.bad_images_total.extend(bad)
            if collated is not None:
                yield collated
        if self.bad_images:
            log.warning("skipped %d unreadable image(s) this epoch (on_bad_image='skip'), e.g. %s",
                        len(self.bad_images), ", ".join(self.bad_images[:3]))


def build_loader(dataset: Dataset, *, batch_size: int, train: bool, num_workers: int | None = None,
                 distributed: bool = False, seed: int = 0, drop_last: bool | None = None,
                 pin_memory: bool | None = None, persistent_workers: bool | None = None,
                 prefetch_factor: int | None = None, collate_fn: Callable | None = None,
                 num_replicas: int | None = None, rank: int | None = None) -> CountingDataLoader:
    """A loader for ``dataset``. Train: shuffled (seeded), ``drop_last`` True by default; eval: in order.

    ``num_workers`` defaults to min(8, usable CPUs); ``pin_memory`` to ``torch.cuda.is_available()``;
    ``persistent_workers`` to ``num_workers > 0``. ``distributed=True`` uses a ``DistributedSampler`` (replicas
    and rank from the initialised process group unless given; ``shuffle=train``, ``seed``; under eval it pads
    the last round with repeated samples so every rank has the same count -- reduce metrics accordingly).
    ``collate_fn`` (default ``default_collate``; e.g. timm's FastCollateMixup) is wrapped to drop bad samples."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    num_workers = default_num_workers() if num_workers is None else int(num_workers)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    drop_last = bool(train) if drop_last is None else drop_last
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    persistent_workers = num_workers > 0 if persistent_workers is None else (persistent_workers and num_workers > 0)
    generator = torch.Generator()
    generator.manual_seed(int(seed) * 1_000_003)
    sampler = None
    if distributed:
        if (num_replicas is None or rank is None) and not torch.distributed.is_initialized():
            raise ValueError("distributed=True needs an initialised torch.distributed process group "
                             "(or explicit num_replicas and rank)")
        sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=bool(train), seed=seed,
                                     drop_last=drop_last)
    kwargs = dict(prefetch_factor=prefetch_factor) if (num_workers > 0 and prefetch_factor) else {}
    return CountingDataLoader(
        dataset, batch_size=batch_size, shuffle=(bool(train) if sampler is None else False), sampler=sampler,
        num_workers=num_workers, pin_memory=pin_memory, drop_last=drop_last, persistent_workers=persistent_workers,
        worker_init_fn=seed_worker, generator=generator, collate_fn=_DropBadCollate(collate_fn or default_collate),
        seed=seed, **kwargs)
