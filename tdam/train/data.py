"""Datasets and loaders for a training run, through ``tdam.data``'s readers and transforms.

``data_dir: null`` means the embedded tdam-shapes dataset (generated once by ``tdam.data.make_shapes_dataset``);
otherwise ``data_dir`` is the dataset root in its real layout (for ImageNet: ``<data_dir>/train/<wnid>/*.JPEG`` and
``<data_dir>/val/<wnid>/*.JPEG``); a wrong layout fails here, before any model is built, naming what was expected.

The training loader draws each sample's augmentation from generators seeded by (seed, epoch, sample index)
(:class:`SeededSamples`), so a run's batches do not depend on ``workers`` nor on a mid-epoch resume.

ImageNet can also be streamed from WebDataset tar shards (``dataset: imagenet_wds``) or read from Hugging Face
``imagenet-1k`` parquet files (``dataset: imagenet_parquet``, map-style: everything above applies). A stream is split
across ranks and workers by the reader and shuffled by (seed, epoch, worker); it has no index to seek to, so a
mid-epoch resume replays the epoch's stream and drops the batches the checkpoint had consumed (:class:`ShardEpochs`):
the remaining batches come in the uninterrupted run's order; their random augmentation matches it with
``workers > 0`` (worker seeds are a function of seed, rank and epoch), not with ``workers: 0``, where the dropped
batches' draws shift the restored random stream.
"""
from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate

from tdam.train.config import TrainConfig
from tdam.train.distributed import DistInfo
from tdam.train.state import ResumableSampler, ShardSampler, sample_rng

__all__ = ["data_root", "build_datasets", "build_loaders", "bad_image_count", "SeededSamples", "ShardEpochs"]


class SeededSamples(torch.utils.data.Dataset):
    """``dataset`` read with ``(epoch, index)`` keys (a :class:`ResumableSampler` with ``with_epoch=True``): sample
    ``index`` is loaded and transformed under :func:`tdam.train.state.sample_rng` ``(seed, epoch, index)``, so its
    random augmentation is the same in every process, for any number of workers, before and after a resume."""

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with sample_rng(self.seed, epoch, index):
            return self.dataset[index]


class ShardEpochs:
    """The training loader of a streamed dataset behind the sampler interface the trainer drives:
    ``set_position(epoch, position)`` starts epoch ``epoch``'s stream and drops the first ``position`` samples (whole
    batches) that a mid-epoch checkpoint had consumed. Everything else is the wrapped loader's."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader, self.skip = loader, 0

    def set_position(self, epoch: int, position: int) -> None:
        from tdam.data import set_shard_epoch

        set_shard_epoch(self.loader, epoch)
        self.skip = position // self.loader.batch_size

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.skip, None)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["loader"], name)


def data_root(cfg: TrainConfig) -> Path:
    """The dataset root: ``cfg.data_dir``, or the embedded dataset's folder for ``cfg.dataset``."""
    from tdam.data import dataset_root

    return dataset_root(cfg.dataset, cfg.data_dir, size=cfg.data_size)


def build_datasets(cfg: TrainConfig) -> tuple[Any, Any]:
    """(train, val) datasets with the recipe's transforms (:func:`tdam.train.transforms.build_transforms`)."""
    from tdam.data import build_dataset
    from tdam.train.transforms import build_transforms

    root = data_root(cfg)
    train_tf, val_tf = build_transforms(cfg)
    policy = "skip" if cfg.skip_bad_images else "raise"
    stream = {"seed": cfg.seed} if cfg.dataset == "imagenet_wds" else {}   # read after init_distributed: rank, world
    train_set = build_dataset(cfg.dataset, root, "train", transform=train_tf, on_bad_image=policy, **stream)
    val_set = build_dataset(cfg.dataset, root, "val", transform=val_tf, on_bad_image=policy, **stream)
    return train_set, val_set


def build_loaders(cfg: TrainConfig, train_set: Any, val_set: Any, dist: DistInfo
                  ) -> tuple[DataLoader | ShardEpochs, DataLoader, ResumableSampler | ShardEpochs]:
    """Training loader (shuffled by (seed, epoch), this rank's share, whole batches) and validation loader (this
    rank's shard, in order), as ``tdam.data`` CountingDataLoaders (unreadable images skipped under
    ``skip_bad_images`` are dropped from the batch and counted per epoch). The loaders draw worker seeds from their
    own generators, never from the global RNG, so creating a loader mid-epoch on resume does not shift the
    training RNG streams; each training sample's augmentation is seeded by (seed, epoch, index)
    (:class:`SeededSamples`). A streamed dataset gets :class:`ShardEpochs`, as both loader and sampler."""
    from tdam.data.loader import CountingDataLoader, collate_drop_bad, seed_worker

    common = dict(num_workers=cfg.workers, pin_memory=dist.device.type == "cuda",
                  persistent_workers=cfg.workers > 0, worker_init_fn=seed_worker,
                  collate_fn=partial(collate_drop_bad, collate=default_collate))
    seeds = torch.Generator().manual_seed(cfg.seed + dist.rank)      # worker seeds; reseeded per epoch by the trainer
    if isinstance(train_set, IterableDataset):                        # a stream: the reader splits and shuffles it
        from tdam.data import shard_loader

        train = ShardEpochs(shard_loader(train_set, cfg.batch_size, loader_cls=CountingDataLoader, generator=seeds,
                                         **common))
        return train, shard_loader(val_set, cfg.batch_size, loader_cls=CountingDataLoader, **common), train
    sampler = ResumableSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, seed=cfg.seed,
                               with_epoch=True)
    train_loader = CountingDataLoader(SeededSamples(train_set, cfg.seed), batch_size=cfg.batch_size, sampler=sampler,
                                      drop_last=True, generator=seeds, **common)
    val_loader = CountingDataLoader(val_set, batch_size=cfg.batch_size,
                                    sampler=ShardSampler(val_set, num_replicas=dist.world_size, rank=dist.rank),
                                    generator=torch.Generator().manual_seed(cfg.seed), **common)
    return train_loader, val_loader, sampler


def bad_image_count(loader: Any) -> int:
    """Unreadable images skipped by ``loader`` in its last epoch (``skip_bad_images``); 0 for other loaders."""
    return len(getattr(loader, "bad_images", []))
