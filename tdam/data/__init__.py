"""tdam.data: the embedded "tdam-shapes" datasets, readers for the real datasets' on-disk formats, transforms and
the bad-image counting loader.

Generator
    ``make_shapes_dataset(root=None, *, seed=0, size='default'|'tiny') -> Path`` writes ImageNet / ImageNetV2 /
    CUB-200-2011 / Stanford Dogs / COCO-2014 look-alikes IN THE REAL FORMATS (see :mod:`tdam.data.shapes`), cached.
Readers (one API; ``root`` is the dataset's own root, the path a user gives for the real dataset)
    ``build_dataset(kind, root, split, transform=None, *, variant=None, on_bad_image='raise'|'skip', **options)``

    ================ ====================================== ===================== ===================================
    kind             root                                   splits                targets / boxes
    ================ ====================================== ===================== ===================================
    imagenet         ``<shapes>/imagenet`` (train/, val/)   train, val (test=val) sorted-wnid index; val boxes (XML)
    imagenet_v2      ``<shapes>/imagenet_v2`` or a variant  test (val=test)       int(folder name); no boxes
    cub200           ``<shapes>/cub200/CUB_200_2011``       train, test (val=test) class_id - 1; one box per image
    stanford_dogs    ``<shapes>/stanford_dogs``             train, test (val=test) labels - 1; XML boxes (all dogs)
    coco2014         ``<shapes>/coco2014``                  train, val (test=val) multi-hot by ascending cat id; boxes
    imagenet_wds     ``<shapes>/imagenet_wds`` (tar shards) train, val (test=val) as imagenet; boxes via with_meta
    imagenet_parquet ``<shapes>/imagenet_parquet`` (HF)     train, val (test=val) as imagenet; val boxes
    ================ ====================================== ===================== ===================================

    Every dataset has ``classes``, ``targets``, ``len``, ``[i] -> (image, target)``, ``path(i)``,
    ``image_size(i) -> (w, h)``, ``has_boxes``, ``boxes(i)`` (float (K, 4) xyxy, original pixels) and
    ``objects(i) -> (boxes, labels)``, except ``imagenet_wds``, a stream: iterate it (``with_meta=True`` yields the
    boxes with each image). ``variant`` selects the ImageNetV2 test set ('matched-frequency' default,
    'threshold0.7', 'top-images').
Shards for clusters (``pip install tdam[shards]``)
    ``imagenet_wds`` streams WebDataset tar shards (an IterableDataset on timm's ``ReaderWds``: split across ranks
    and workers, resume at epoch boundaries; see :mod:`tdam.data.wds`; loader helpers ``shard_loader``,
    ``set_shard_epoch``); ``imagenet_parquet`` reads Hugging Face ``imagenet-1k`` parquet files (map-style, see
    :mod:`tdam.data.parquet`). ``convert_imagenet`` / ``python -m tdam.data.convert SRC OUT`` writes both from an
    ImageNet folder; ``make_shapes_dataset(formats=('wds', 'parquet'))`` adds them to the embedded dataset.
Errors
    A missing root / wrong layout / missing annotation file raises :class:`DatasetLayoutError` (a FileNotFoundError
    and ValueError) naming the path and printing the expected layout. An undecodable image raises
    :class:`BadImageError` (an OSError) naming the file; with ``on_bad_image='skip'`` the dataset returns a falsy
    :class:`BadSample` instead; a :class:`CountingDataLoader` with ``collate_fn=collate_drop_bad`` drops it, counts
    it in ``loader.bad_images`` for the epoch and logs a warning at the epoch's end. A damaged shard or parquet
    file, a sample without a label or a label outside the class range raises :class:`BadRecordError` (a
    ValueError) naming the file and the sample or row.
Boxes through the eval geometry
    ``map_boxes(boxes, orig_size, resize, crop)``, ``eval_geometry(img_size, crop_pct=..., preset=...)``.
Transforms
    ``build_transform(train, img_size=224, *, preset='imagenet'|'wsdan'|'asl', crop_pct=0.875, ...)``: the ImageNet
    recipe, WS-DAN's and ASL's.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from tdam.validation import check_choice

from .base import BadSample, ImageDataset
from .boxes import Geometry, eval_geometry, map_boxes
from .coco import COCO2014Dataset
from .errors import BadImageError, BadRecordError, DatasetLayoutError
from .finegrained import CUB200Dataset, StanfordDogsDataset
from .imagenet import IMAGENET_V2_VARIANTS, ImageNetDataset, ImageNetV2Dataset
from .loader import CountingDataLoader, collate_drop_bad
from .parquet import ImageNetParquetDataset
from .shapes import MARKER, load_manifest, make_shapes_dataset
from .transforms import PRESETS, build_transform
from .wds import ImageNetWdsDataset, set_shard_epoch, shard_loader

__all__ = [
    "dataset_root", "shapes_root", "make_shapes_dataset", "load_manifest", "build_dataset", "DATASETS",
    "build_transform", "PRESETS", "map_boxes", "eval_geometry", "Geometry", "DatasetLayoutError", "BadImageError",
    "BadSample", "BadRecordError", "ImageDataset", "ImageNetDataset", "ImageNetV2Dataset", "CUB200Dataset",
    "StanfordDogsDataset", "COCO2014Dataset", "CountingDataLoader", "collate_drop_bad", "IMAGENET_V2_VARIANTS",
    "ImageNetWdsDataset", "ImageNetParquetDataset", "convert_imagenet", "shard_loader", "set_shard_epoch",
    "SHARD_FORMATS", "TASK_DATASETS",
]

DATASETS: dict[str, type] = {
    "imagenet": ImageNetDataset,
    "imagenet_v2": ImageNetV2Dataset,
    "cub200": CUB200Dataset,
    "stanford_dogs": StanfordDogsDataset,
    "coco2014": COCO2014Dataset,
    "imagenet_wds": ImageNetWdsDataset,
    "imagenet_parquet": ImageNetParquetDataset,
}
#: the transfer tasks of notebook 07 -> the datasets each is trained on (WS-DAN: fine-grained; ASL: multi-label COCO)
TASK_DATASETS = {"wsdan": ("cub200", "stanford_dogs"), "asl": ("coco2014",)}
#: the dataset kinds that are a converted format of ImageNet -> make_shapes_dataset(formats=...) entry
SHARD_FORMATS = {"imagenet_wds": "wds", "imagenet_parquet": "parquet"}

#: where each kind lives inside a make_shapes_dataset() folder
_SHAPES_SUBDIR = {"imagenet": "imagenet", "imagenet_v2": "imagenet_v2", "cub200": "cub200/CUB_200_2011",
                  "stanford_dogs": "stanford_dogs", "coco2014": "coco2014", "imagenet_wds": "imagenet_wds",
                  "imagenet_parquet": "imagenet_parquet"}


def build_dataset(kind: str, root: str | os.PathLike, split: str, transform: Callable | None = None, *,
                  variant: str | None = None, on_bad_image: str = "raise", **options) -> ImageDataset:
    """Open dataset ``kind`` at its root (see the module docstring table). ``variant`` is for ``imagenet_v2``
    only; ``options`` go to the reader (e.g. ``boxes_dir`` for imagenet, ``include_unlabeled`` for coco2014,
    ``num_classes`` for imagenet_v2, ``target_transform``; ``training``, ``seed``, ``batch_size``, ``with_meta``
    for imagenet_wds)."""
    check_choice("kind", kind, sorted(DATASETS))
    if (Path(root) / MARKER).is_file():
        raise DatasetLayoutError(f"{root} is a whole tdam-shapes folder, not a {kind} dataset root; pass "
                                 f"{shapes_root(root, kind)} (tdam.data.shapes_root(root, {kind!r}))")
    if variant is not None:
        if kind != "imagenet_v2":
            raise ValueError(f"variant= is only for kind='imagenet_v2', not {kind!r}")
        options["variant"] = variant
    return DATASETS[kind](root, split, transform, on_bad_image=on_bad_image, **options)


def dataset_root(kind: str, data_dir: str | os.PathLike | None = None, *, size: str = "default") -> Path:
    """Where dataset ``kind`` lives: ``data_dir`` when given (a real dataset), else its folder inside the embedded
    tdam-shapes dataset of ``size`` (generated on first use, then cached)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    formats = (SHARD_FORMATS[kind],) if kind in SHARD_FORMATS else ()
    return Path(shapes_root(make_shapes_dataset(size=size, formats=formats), kind))


def shapes_root(shapes: str | os.PathLike, kind: str) -> str:
    """The dataset root of ``kind`` inside a tdam-shapes folder (e.g. ``<shapes>/cub200/CUB_200_2011``)."""
    check_choice("kind", kind, sorted(_SHAPES_SUBDIR))
    return os.path.join(os.fspath(shapes), _SHAPES_SUBDIR[kind])


def __getattr__(name: str):
    # convert_imagenet is imported on first use, so that `python -m tdam.data.convert` runs a module not yet imported
    if name == "convert_imagenet":
        from .convert import convert_imagenet
        return convert_imagenet
    raise AttributeError(f"module 'tdam.data' has no attribute {name!r}")
