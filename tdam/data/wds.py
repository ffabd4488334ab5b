"""ImageNet streamed from WebDataset tar shards (kind ``imagenet_wds``), on timm's ``ReaderWds``.

Layout: the one :mod:`tdam.data.convert` writes and ``timm/imagenet-1k-wds`` ships: ``<root>/_info.json`` (splits
with ``filenames``, ``shard_lengths``, ``num_samples``; tdam adds ``synsets``/``class_names``) and tar shards of
samples ``<key>.jpg`` + ``<key>.cls`` (+ ``<key>.json``). Split ``train`` reads the ``train`` shards, ``val``/``test``
the ``validation`` shards. Needs ``webdataset`` (``pip install tdam[shards]``).

What timm's reader gives: the split table, the shard split across ranks and DataLoader workers (global worker
``rank * num_workers + worker`` takes every ``world_size * num_workers``-th shard), the per-worker sample quota and
the seeded shard shuffle driven by a shared epoch counter. What this module changes, and why:

* Images decode here, so an undecodable image follows ``on_bad_image`` as in every tdam reader (``BadImageError``
  naming ``<shard>:<file>``, or a :class:`~tdam.data.base.BadSample` for :class:`~tdam.data.loader.CountingDataLoader`)
  instead of timm's log-and-drop.
* The sample shuffle buffer is seeded from (``seed``, epoch, global worker), not from the DataLoader's worker seed,
  so the order of an epoch depends only on the seed, the epoch, ``world_size`` and ``num_workers``.
* Training (``training=True``, the default for ``train``): every worker yields exactly its quota (its shards are
  repeated as needed), so every rank yields the same number of batches (``len(dataset) // batch_size`` with
  ``drop_last``) and DDP never waits on a rank that ran dry. There must be at least ``world_size * num_workers``
  shards. Evaluation (``training=False``): every image exactly once over all ranks and workers, no padding; ranks
  may hold different counts (``len(dataset)`` is this rank's exact count), so reduce the correct counts once at the
  end, never per batch.

Bad data. At open, ``_info.json`` must parse and list, for the split, shards that exist (else a
:class:`~tdam.data.errors.DatasetLayoutError` naming the file). A stream has no index to check labels against before
training without reading every shard (hours on ImageNet), so samples are checked as they are read, on the first
pass: a damaged tar shard, a sample without ``.cls``, a label that is not an integer or lies outside the class
range of ``_info.json`` raise :class:`~tdam.data.errors.BadRecordError` naming ``<shard>:<key>``.

Resume. A streamed epoch has no index to seek to: resuming restarts at an EPOCH BOUNDARY. Call
:func:`set_shard_epoch` (or ``dataset.set_epoch(epoch)``) before each epoch's iteration; the resumed epoch then
streams the same shard and sample order as the uninterrupted run (same seed, world size and worker count). A
mid-epoch position is not replayed: a checkpoint taken inside epoch ``e`` resumes at the start of epoch ``e``.

Loader workers: use :func:`shard_loader` (it tells the reader the worker count and batch size first). timm's shared
epoch counter is a ``multiprocessing.Value`` of the default start method, so the workers must use that method too
(no other ``multiprocessing_context`` on the DataLoader); fork and spawn both work.

``with_meta=True`` yields ``(image, label, meta)`` with ``meta`` = key, filename, synset, width, height, ``boxes``
(float (K, 4) xyxy original pixels) and ``box_labels`` (long (K,)); the default yields ``(image, label)``.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tdam.validation import check_choice, check_int

from .base import BAD_IMAGE_CHOICES, BadSample, boxes_tensor
from .formats import SPLIT_NAMES, require
from .errors import BadImageError, BadRecordError, layout_error

__all__ = ["ImageNetWdsDataset", "set_shard_epoch", "shard_loader"]

_LAYOUT = """\
<root>/_info.json                                   ({"splits": {"train": {"filenames": [...], "shard_lengths": [...],
                                                      "num_samples": N}, "validation": {...}}})
<root>/imagenet1k-train-NNNN.tar, imagenet1k-validation-NNNN.tar   (<key>.jpg + <key>.cls [+ <key>.json])
(write it with: python -m tdam.data.convert <imagenet folder> <out>)"""
_WORKER_STRIDE = 1_000_003  # separates the per-worker sample-shuffle seeds (seed + epoch + stride * worker)


_READER: type | None = None


def __getattr__(name: str):  # lets pickle find the lazily built reader class (spawned DataLoader workers)
    if name == "_WdsReader":
        return _reader_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _reader_class() -> type:
    """timm's ReaderWds with the pipeline of the module docstring (built once, lazily: webdataset is optional)."""
    global _READER
    if _READER is not None:
        return _READER
    wds = require("webdataset")
    from timm.data.readers import reader_wds as R

    class _Reader(R.ReaderWds):
        def _lazy_init(self):
            info = get_worker_info()
            if self.worker_info is None:
                if info is not None:
                    self.worker_info, self.worker_id, self.num_workers = info, info.id, info.num_workers
                self.global_num_workers = self.dist_num_replicas * self.num_workers
                self.global_worker_id = self.dist_rank * self.num_workers + self.worker_id
            shards = [os.path.join(self.root, f) for f in self.split_info.filenames]
            check_shard_count(self)
            stages = [wds.SimpleShardList(shards)]
            if self.is_training:
                stages.append(R.detshuffle2(self.shard_shuffle_size, seed=self.common_seed, epoch=self.epoch_count))
            stages += [self._split_by_node_and_worker, wds.tarfile_to_samples(handler=wds.reraise_exception)]
            if self.is_training:
                stages.append(R.detshuffle2(self.sample_shuffle_size, self.sample_initial_size, epoch=self.epoch_count,
                                            seed=self.common_seed + _WORKER_STRIDE * (self.global_worker_id + 1)))
            self.ds = wds.DataPipeline(*stages)

        def __iter__(self):
            if self.ds is None:
                self._lazy_init()
            ds = self.ds.with_epoch(self._num_samples_per_worker()) if self.is_training else self.ds
            yield from ds

    _Reader.__name__ = _Reader.__qualname__ = "_WdsReader"
    _Reader.__module__ = __name__
    _READER = _Reader
    return _Reader


def check_shard_count(reader) -> None:
    """Training needs a shard per global worker (``world_size * num_workers``): raise ValueError naming both."""
    shards, workers = len(reader.split_info.filenames), reader.dist_num_replicas * reader.num_workers
    if reader.is_training and shards < workers:
        raise ValueError(f"{reader.root}: {shards} training shard(s) cannot feed {reader.dist_num_replicas} rank(s) x "
                         f"{reader.num_workers} loader worker(s): each needs a shard of its own; write more shards "
                         f"(python -m tdam.data.convert --shard-size) or use fewer workers (--workers)")


def _read_info(info_path: Path, kind: str, layout: str) -> dict:
    """``_info.json``, parsed; a missing, cut-short or malformed file is a layout error naming it."""
    if not info_path.is_file():
        raise layout_error(kind, info_path, "missing the shard table", layout)
    try:
        info = json.loads(info_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno} column {e.colno}: {e.msg})" if isinstance(e, json.JSONDecodeError) else ""
        raise layout_error(kind, info_path, f"cannot parse the shard table{where}", layout) from None
    if not isinstance(info, dict) or not isinstance(info.get("splits", {}), dict):
        raise layout_error(kind, info_path, "the shard table is not a {\"splits\": {...}} mapping", layout)
    return info


def _check_split(root: Path, info_path: Path, name: str, split: object, kind: str, layout: str) -> None:
    """The split's shard list is non-empty and every shard exists (else a layout error naming the first missing)."""
    files = split.get("filenames") if isinstance(split, dict) else None
    if not isinstance(files, list) or not files:
        raise layout_error(kind, info_path, f"split {name!r} lists no shards (\"filenames\") in", layout)
    missing = [f for f in files if not (root / str(f)).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise layout_error(kind, root / str(missing[0]), f"shard listed in {info_path.name} for split {name!r} is "
                           f"missing{more}", layout)


def _shard_of(e: BaseException) -> str | None:
    """The shard a webdataset stage failed on: webdataset appends the shard's url to the error's ``args``."""
    return next((a for a in reversed(e.args) if isinstance(a, str) and a.endswith(".tar")), None)


class ImageNetWdsDataset(IterableDataset):
    """ImageNet from WebDataset shards (see the module docstring). ``split`` in {'train', 'val'} ('test' = 'val').
    ``training`` (default: split == 'train') shuffles and fixes the per-worker quota; ``batch_size`` rounds that
    quota to whole batches; ``rank``/``world_size`` default to the initialised process group (build the dataset
    AFTER ``init_process_group``)."""

    kind = "imagenet_wds"
    layout = _LAYOUT

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 on_bad_image: str = "raise", target_transform: Callable | None = None,
                 training: bool | None = None, seed: int = 0, batch_size: int = 1, with_meta: bool = False,
                 rank: int | None = None, world_size: int | None = None, shuffle_size: int | None = None,
                 num_classes: int | None = None) -> None:
        check_choice("imagenet_wds: split", split, ["train", "val", "test"])
        check_choice("on_bad_image", on_bad_image, BAD_IMAGE_CHOICES)
        check_int("seed", seed, 0)
        check_int("batch_size", batch_size, 1)
        self.root = Path(root).expanduser()
        self.split = "train" if split == "train" else "val"
        info_path = self.root / "_info.json"
        info = _read_info(info_path, self.kind, self.layout)
        name = SPLIT_NAMES[self.split]
        if name not in info.get("splits", {}):
            raise layout_error(self.kind, info_path, f"no split {name!r} in", self.layout)
        _check_split(self.root, info_path, name, info["splits"][name], self.kind, self.layout)
        self.transform, self.target_transform = transform, target_transform
        self.on_bad_image, self.with_meta = on_bad_image, with_meta
        self.training = self.split == "train" if training is None else bool(training)
        self.reader = _reader_class()(str(self.root), split=name, is_training=self.training, batch_size=batch_size,
                                      seed=seed, sample_shuffle_size=shuffle_size,
                                      sample_initial_size=None if shuffle_size is None else max(1, shuffle_size // 4))
        if world_size is not None or rank is not None:
            world_size = 1 if world_size is None else world_size
            check_int("world_size", world_size, 1)
            check_int("rank", rank or 0, 0, world_size - 1)
            self.reader.dist_rank, self.reader.dist_num_replicas = rank or 0, world_size
        self.reader.global_num_workers = self.reader.dist_num_replicas * self.reader.num_workers
        self.classes = list(info.get("synsets") or [])
        self.class_names = list(info.get("class_names") or self.classes)
        if not self.classes and num_classes is not None:
            self.classes = self.class_names = [str(i) for i in range(num_classes)]
        self.num_samples = int(self.reader.split_info.num_samples)

    # ------------------------------------------------------------------ epochs, workers, length
    def set_epoch(self, epoch: int) -> None:
        """The epoch whose shard / sample order the next iteration streams (shared with the loader workers)."""
        self.reader.set_epoch(epoch)

    def set_loader_cfg(self, num_workers: int, batch_size: int | None = None) -> None:
        """Tell the reader the DataLoader's worker count (and batch size) BEFORE the loader starts: they fix the
        per-worker quota. Training needs a shard per worker of every rank (ValueError here, before any worker
        starts, otherwise)."""
        check_int("num_workers", num_workers, 0)
        if batch_size is not None:
            check_int("batch_size", batch_size, 1)
            self.reader.batch_size = batch_size
        self.reader.set_loader_cfg(num_workers=num_workers)
        self.reader.global_num_workers = self.reader.dist_num_replicas * self.reader.num_workers
        check_shard_count(self.reader)

    def __len__(self) -> int:
        """Samples this rank yields per epoch (training: the padded quota; evaluation: the exact count)."""
        r = self.reader
        if self.training:
            return r._num_samples_per_worker() * r.num_workers
        lengths = r.split_info.shard_lengths
        if r.dist_num_replicas == 1:
            return self.num_samples
        if not lengths:
            raise TypeError(f"{self.root}: _info.json has no shard_lengths; the per-rank length is unknown")
        mine = range(r.dist_rank * r.num_workers, (r.dist_rank + 1) * r.num_workers)
        return sum(n for j, n in enumerate(lengths) if j % r.global_num_workers in mine)

    # ------------------------------------------------------------------ samples
    def _label(self, sample: dict) -> int:
        """The sample's ``.cls`` label, checked against the class count (BadRecordError naming shard and key)."""
        where = f"{sample.get('__url__', self.root)}:{sample['__key__']}"
        if "cls" not in sample:
            members = sorted(k for k in sample if not k.startswith("__"))
            raise BadRecordError(f"{where}: sample without a .cls label (it holds {members})")
        try:
            target = int(sample["cls"])
        except ValueError:
            raise BadRecordError(f"{where}.cls: label {bytes(sample['cls'][:20])!r} is not an integer") from None
        if self.classes and not 0 <= target < len(self.classes):
            raise BadRecordError(f"{where}.cls: label {target} is outside the {len(self.classes)} classes "
                                 f"(0..{len(self.classes) - 1}) of {self.root / '_info.json'}")
        return target

    def _decode(self, sample: dict):
        from webdataset.filters import getfirst
        target = self._label(sample)
        meta = json.loads(sample["json"]) if "json" in sample else {}
        name = f"{sample.get('__url__', self.root)}:{meta.get('filename', sample['__key__'])}"
        try:
            with Image.open(io.BytesIO(getfirst(sample, "jpg;png;webp"))) as im:
                img = im.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            if self.on_bad_image == "raise":
                raise BadImageError(name, e) from e
            return BadSample(name, -1)
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        if not self.with_meta:
            return img, target
        return img, target, {
            "key": sample["__key__"], "filename": meta.get("filename", sample["__key__"]),
            "synset": meta.get("synset", ""), "width": meta.get("width", 0), "height": meta.get("height", 0),
            "boxes": boxes_tensor(meta.get("boxes") or []),
            "box_labels": torch.tensor(meta.get("box_labels") or [], dtype=torch.long)}

    def __iter__(self):
        samples, last = iter(self.reader), None
        while True:
            try:
                sample = next(samples)
            except StopIteration:
                return
            except (tarfile.TarError, OSError, ValueError) as e:
                shard = _shard_of(e)
                if shard is None:
                    raise
                reason = str(e.args[0]).split(" @ ")[0] if e.args else type(e).__name__
                after = f" after sample {last['__key__']}" if last is not None and last.get("__url__") == shard else ""
                raise BadRecordError(f"{shard}: damaged tar shard: {reason}{after}") from e
            last = sample
            yield self._decode(sample)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={self.num_samples}, "
                f"training={self.training}, classes={len(self.classes)})")


def set_shard_epoch(loader_or_dataset, epoch: int) -> None:
    """Before iterating epoch ``epoch``: tell a streamed dataset (or the DataLoader holding it) which epoch it is;
    a map-style dataset's ``DistributedSampler`` gets its ``set_epoch`` too. No-op for anything else."""
    ds = getattr(loader_or_dataset, "dataset", loader_or_dataset)
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    sampler = getattr(loader_or_dataset, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def shard_loader(dataset: ImageNetWdsDataset, batch_size: int, *, num_workers: int = 0, loader_cls=DataLoader,
                 **kwargs) -> DataLoader:
    """The DataLoader for a streamed dataset: tells it the worker count first, no sampler, no shuffle (the dataset
    shuffles), ``drop_last`` when training (every rank then runs ``len(dataset) // batch_size`` steps)."""
    check_int("batch_size", batch_size, 1)
    dataset.set_loader_cfg(num_workers, batch_size)
    kwargs.setdefault("drop_last", dataset.training)
    return loader_cls(dataset, batch_size=batch_size, num_workers=num_workers, **kwargs)
