"""ImageNet from Hugging Face ``imagenet-1k``-style parquet files on local disk (kind ``imagenet_parquet``).

Layout: ``<root>/data/{train,validation}-NNNNN-of-MMMMM.parquet`` (the Hub's; ``<root>/{split}-*.parquet`` and
``<root>/{split}/*.parquet`` are found too) with columns ``image`` (struct ``bytes``, ``path``) and ``label``; the
optional ``synset``, ``width``, ``height``, ``boxes`` and ``box_labels`` columns that :mod:`tdam.data.convert`
writes give synsets and boxes. Split ``train`` reads ``train``, ``val``/``test`` read ``validation`` (the Hub's test
split has no labels). Class names come from the files' Hugging Face ClassLabel metadata (tdam's synsets first).

Why not timm's ``ReaderHfds``: it goes through the ``datasets`` library, which first converts the parquet files
into its own Arrow cache (a full second copy of ImageNet) and pulls a large dependency tree; this reader needs only
``pyarrow`` (``pip install tdam[shards]``) and reads the files in place.

Labels are checked at open, against the class count (the files' ClassLabel names, else ``num_classes``): a file
that is not parquet, a ``label`` column that is not integer, a missing label or one outside the class range raise
:class:`~tdam.data.errors.BadRecordError` naming the file and the row, before any training starts.

It is map-style: indices, ``len``, ``DistributedSampler`` and resume work as for the image folders. The labels and
box columns are read at open; image bytes are read per parquet ROW GROUP (a few recently used groups are cached per
process), so sequential evaluation reads each group once while shuffled training reads one group per image
(the Hub's files use 100-image groups; streamed shards, :mod:`tdam.data.wds`, are the faster training input).
"""
from __future__ import annotations

import bisect
import io
import json
import os
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .base import ImageDataset, boxes_tensor
from .formats import SPLIT_NAMES, require
from .errors import BadImageError, BadRecordError, layout_error

__all__ = ["ImageNetParquetDataset"]

_LAYOUT = """\
<root>/data/train-NNNNN-of-MMMMM.parquet        (columns image {bytes, path}, label; the Hub's imagenet-1k)
<root>/data/validation-NNNNN-of-MMMMM.parquet  (optional columns synset, width, height, boxes, box_labels)
(write it with: python -m tdam.data.convert <imagenet folder> <out>)"""
_CACHED_GROUPS = 4


def _where(i: int, file_starts: list[int], files: list[str]) -> str:
    """``<file> row <r>`` of global row ``i``."""
    fi = bisect.bisect_right(file_starts, i) - 1
    return f"{files[fi]} row {i - file_starts[fi]}"


def _check_label_type(pf, path: str) -> None:
    """The ``label`` column holds integers (a string or float column names the file, its type and row 0)."""
    import pyarrow as pa   # imported with pyarrow.parquet by the caller (an optional dependency)

    kind = pf.schema_arrow.field("label").type
    if not pa.types.is_integer(kind):
        first = pf.read_row_group(0, columns=["label"]).column("label")[0].as_py() if pf.metadata.num_rows else None
        raise BadRecordError(f"{path}: column 'label' holds {kind} values (row 0: {first!r}), not integer class "
                             f"indices")


def _label_array(labels: list, file_starts: list[int], files: list[str]) -> np.ndarray:
    """The labels as int64; a missing (null) label names its file and row."""
    if None in labels:
        raise BadRecordError(f"{_where(labels.index(None), file_starts, files)}: no label (null); "
                             f"{labels.count(None)} such row(s)")
    return np.asarray(labels, dtype=np.int64)


def _check_label_range(labels: np.ndarray, num_classes: int, file_starts: list[int], files: list[str]) -> None:
    """Every label is a class index in ``0 .. num_classes - 1`` (the first one outside names its file and row)."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise BadRecordError(f"{_where(i, file_starts, files)}: label {int(labels[i])} is outside the {num_classes} "
                             f"classes (0..{num_classes - 1})"
                             + (f"; {bad.size - 1} more rows too" if bad.size > 1 else ""))


class ImageNetParquetDataset(ImageDataset):
    """ImageNet from parquet files (see the module docstring). ``split`` in {'train', 'val'} ('test' = 'val');
    ``num_classes`` fixes the class count when the files carry no ClassLabel names."""

    kind = "imagenet_parquet"
    layout = _LAYOUT

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 on_bad_image: str = "raise", target_transform: Callable | None = None,
                 num_classes: int | None = None) -> None:
        split = self._split(split, {"train": "train", "val": "val", "test": "val"}, self.kind)
        super().__init__(root, split, transform, on_bad_image=on_bad_image, target_transform=target_transform)
        pq = require("pyarrow.parquet")
        self._check_root()
        name = SPLIT_NAMES[split]
        files = []
        for pattern in (f"data/{name}-*.parquet", f"{name}-*.parquet", f"{name}/*.parquet"):
            files = sorted(self.root.glob(pattern))
            if files:
                break
        if not files:
            raise layout_error(self.kind, self.root, f"no {name!r} parquet files in", self.layout)
        self.files = [str(f) for f in files]
        self._group_starts: list[int] = []  # global index of each row group's first row
        self._group_ids: list[tuple[int, int]] = []  # (file, row group)
        labels, names, extra = [], [], {"synset": [], "width": [], "height": [], "boxes": [], "box_labels": []}
        meta = {}
        n = 0
        file_starts: list[int] = []                  # global index of each file's first row
        for fi, f in enumerate(self.files):
            try:
                pf = pq.ParquetFile(f)
            except (OSError, ValueError) as e:        # pyarrow's ArrowInvalid is a ValueError
                raise BadRecordError(f"{f}: not a readable parquet file ({e})") from None
            cols = set(pf.schema_arrow.names)
            if not {"image", "label"} <= cols:
                raise layout_error(self.kind, f, f"columns {sorted(cols)} lack 'image'/'label' in", self.layout)
            _check_label_type(pf, f)
            file_starts.append(n)
            meta = meta or {k.decode(): v.decode() for k, v in (pf.schema_arrow.metadata or {}).items()}
            for g in range(pf.metadata.num_row_groups):
                self._group_starts.append(n)
                self._group_ids.append((fi, g))
                n += pf.metadata.row_group(g).num_rows
            want = ["label"] + [c for c in extra if c in cols]
            t = pf.read(columns=want)
            labels += t.column("label").to_pylist()
            for c in extra:
                extra[c] += t.column(c).to_pylist() if c in cols else [None] * t.num_rows
            paths = pf.read(columns=["image.path"]).column("image").combine_chunks().field("path").to_pylist()
            names += [f"{f}:{p if p else r}" for r, p in enumerate(paths)]  # no image bytes read here
        self._extra = extra
        labels_np = _label_array(labels, file_starts, self.files)
        self._has_boxes = split == "val" and any(b is not None for b in extra["boxes"])
        self.samples = list(zip(names, labels_np.tolist()))
        tdam_meta = json.loads(meta["tdam"]) if "tdam" in meta else {}
        hf_names = []
        if "huggingface" in meta:
            feat = json.loads(meta["huggingface"]).get("info", {}).get("features", {}).get("label", {})
            hf_names = list(feat.get("names") or [])
        self.classes = list(tdam_meta.get("synsets") or hf_names)
        if not self.classes:
            k = num_classes if num_classes is not None else int(labels_np.max(initial=-1)) + 1
            self.classes = [str(i) for i in range(k)]
        _check_label_range(labels_np, len(self.classes), file_starts, self.files)
        self.class_names = list(tdam_meta.get("class_names") or hf_names or self.classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self._pf: dict[int, object] = {}
        self._cache: OrderedDict = OrderedDict()

    def __getstate__(self):  # open file handles and cached groups stay in their process
        state = dict(self.__dict__)
        state["_pf"], state["_cache"] = {}, OrderedDict()
        return state

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self.samples):
            raise IndexError(f"index {i} out of range for {len(self.samples)} images")
        g = bisect.bisect_right(self._group_starts, i) - 1
        return g, i - self._group_starts[g]

    def _group(self, g: int):
        if g in self._cache:
            self._cache.move_to_end(g)
            return self._cache[g]
        fi, rg = self._group_ids[g]
        if fi not in self._pf:
            self._pf[fi] = require("pyarrow.parquet").ParquetFile(self.files[fi], memory_map=True)
        try:
            rows = self._pf[fi].read_row_group(rg, columns=["image.bytes"]).column("image").combine_chunks() \
                .field("bytes").to_pylist()
        except (OSError, ValueError) as e:           # a damaged row group (pyarrow's ArrowInvalid, IOError)
            raise BadRecordError(f"{self.files[fi]}: row group {rg} cannot be read ({e})") from None
        self._cache[g] = rows
        while len(self._cache) > _CACHED_GROUPS:
            self._cache.popitem(last=False)
        return rows

    def _image_bytes(self, i: int) -> tuple[bytes, str]:
        g, r = self._locate(i)
        return self._group(g)[r], self.samples[i][0]

    def _load(self, i: int) -> Image.Image:
        data, name = self._image_bytes(i)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.convert("RGB")
        except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as e:
            raise BadImageError(name, e) from e

    def path(self, i: int) -> str:
        """``<parquet file>:<image path>`` of image ``i`` (the row number where the file has no path)."""
        return self.samples[i][0]

    @property
    def has_boxes(self) -> bool:
        return self._has_boxes

    def objects(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = self._extra["boxes"][i]
        if boxes is None:
            return super().objects(i)
        return boxes_tensor(boxes), torch.tensor(self._extra["box_labels"][i] or [], dtype=torch.long)

    def synset(self, i: int) -> str:
        return self._extra["synset"][i] or self.classes[self.samples[i][1]]

    def image_size(self, i: int) -> tuple[int, int]:
        w, h = self._extra["width"][i], self._extra["height"][i]
        if w and h:
            return int(w), int(h)
        data, name = self._image_bytes(i)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except (OSError, SyntaxError, ValueError, TypeError) as e:
            raise BadImageError(name, e) from e
