"""What the training loaders add to ``torch.utils.data.DataLoader``: dropping and counting unreadable images, and
seeding the workers.

A dataset built with ``on_bad_image='skip'`` returns a falsy :class:`~tdam.data.base.BadSample` for an unreadable
file. :func:`collate_drop_bad` leaves those out of the batch, and :class:`CountingDataLoader` yields the usual
collated batches while recording the skipped paths in ``loader.bad_images`` (this epoch). At the end of an epoch with
skips it logs a warning naming the count and the first files on the ``tdam.data`` logger -- never silently. (Reading
``dataset.bad_images`` only works with ``num_workers=0``: workers hold their own dataset copies.)
"""
from __future__ import annotations

import logging
import random
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from .base import BadSample

__all__ = ["CountingDataLoader", "collate_drop_bad", "seed_worker"]

log = logging.getLogger("tdam.data")


def collate_drop_bad(batch: list, collate: Callable = default_collate):
    """Collate the readable samples of ``batch`` and list the skipped ones: returns (collated or None, [paths])."""
    good = [b for b in batch if not isinstance(b, BadSample)]
    bad = [b.path for b in batch if isinstance(b, BadSample)]
    return (collate(good) if good else None), bad


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and ``numpy`` in a worker from torch's per-worker seed (itself from the loader generator)."""
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


class CountingDataLoader(DataLoader):
    """DataLoader whose ``collate_fn`` returns (batch, skipped paths), as :func:`collate_drop_bad` does: it yields the
    batches and counts the skipped images of the epoch in ``bad_images`` (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bad_images: list[str] = []

    def __iter__(self):
        self.bad_images = []
        for collated, bad in super().__iter__():
            self.bad_images.extend(bad)
            if collated is not None:
                yield collated
        if self.bad_images:
            log.warning("skipped %d unreadable image(s) this epoch (on_bad_image='skip'), e.g. %s",
                        len(self.bad_images), ", ".join(self.bad_images[:3]))
