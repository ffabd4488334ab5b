"""Readers for the fine-grained transfer datasets: CUB-200-2011 and Stanford Dogs.

Both have one held-out set: ``split`` in {'train', 'test'} with 'val' accepted as an alias of 'test'.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .base import ImageDataset, boxes_tensor, parse_voc_xml
from .errors import layout_error

__all__ = ["CUB200Dataset", "StanfordDogsDataset"]

_SPLITS = {"train": "train", "test": "test", "val": "test"}

_CUB_LAYOUT = """\
<root> = CUB_200_2011/ (or its parent folder)
  images/<NNN.Class_name>/<Image_name>.jpg
  images.txt              '<image_id> <path relative to images/>'
  image_class_labels.txt  '<image_id> <class_id 1..K>'
  train_test_split.txt    '<image_id> <1 train | 0 test>'
  classes.txt             '<class_id> <NNN.Class_name>'
  bounding_boxes.txt      '<image_id> <x> <y> <width> <height>'   (needed for .boxes())"""

_DOGS_LAYOUT = """\
<root> = Stanford Dogs folder holding
  Images/<wnid>-<Breed>/<wnid>_<n>.jpg
  Annotation/<wnid>-<Breed>/<wnid>_<n>        (VOC XML without extension, needed for .boxes())
  train_list.mat, test_list.mat             (scipy .mat: file_list N x 1 cell, labels N x 1 in 1..K)"""


def _read_table(path: Path, kind: str, ncols: int, layout: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=ncols - 1)
        if len(parts) != ncols:
            raise layout_error(kind, path, f"line {n} has {len(parts)} fields, expected {ncols}, in", layout)
        try:
            out[int(parts[0])] = parts[1:]
        except ValueError:
            raise layout_error(kind, path, f"line {n} does not start with an integer id, in", layout) from None
    return out


def _read_numbers(path: Path, kind: str, n: int, layout: str) -> dict[int, list[float]]:
    """``'<id> <n numbers>'`` lines -> {id: [numbers]}; a wrong line names the file and the line number."""
    out: dict[int, list[float]] = {}
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != n + 1:
                raise ValueError(f"{len(parts)} fields, expected {n + 1}")
            out[int(parts[0])] = [float(x) for x in parts[1:]]
        except ValueError as e:
            raise layout_error(kind, path, f"line {k} ({line.strip()!r}) is not '<id> {n} numbers' ({e}), in",
                               layout) from None
    return out


class CUB200Dataset(ImageDataset):
    """CUB-200-2011: labels = class_id - 1; ``classes`` = the ``classes.txt`` names in id order; one box per image
    from ``bounding_boxes.txt`` (x, y, w, h) -> (x, y, x + w, y + h). Greyscale images are converted to RGB."""

    kind = "cub200"
    layout = _CUB_LAYOUT

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 on_bad_image: str = "raise", target_transform: Callable | None = None) -> None:
        split = self._split(split, _SPLITS, self.kind)
        super().__init__(root, split, transform, on_bad_image=on_bad_image, target_transform=target_transform)
        self._check_root()
        if not (self.root / "images.txt").is_file() and (self.root / "CUB_200_2011" / "images.txt").is_file():
            self.root = self.root / "CUB_200_2011"
        req = {name: self._require(self.root / name, f"'{name}'") for name in
               ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")}
        self._require(self.root / "images", "'images/' folder", is_dir=True)
        images = _read_table(req["images.txt"], self.kind, 2, self.layout)
        labels = _read_table(req["image_class_labels.txt"], self.kind, 2, self.layout)
        is_train = _read_table(req["train_test_split.txt"], self.kind, 2, self.layout)
        classes = _read_table(req["classes.txt"], self.kind, 2, self.layout)
        for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
            if set(table) != set(images):
                raise layout_error(self.kind, self.root / name, "image ids differ from images.txt's", self.layout)
        if sorted(classes) != list(range(1, len(classes) + 1)):
            raise layout_error(self.kind, req["classes.txt"], "class ids are not 1..K", self.layout)
        self.classes = [classes[k][0] for k in sorted(classes)]
        want = "1" if split == "train" else "0"
        self.image_ids = [i for i in sorted(images) if is_train[i][0] == want]
        for i in self.image_ids:
            lab = int(labels[i][0]) - 1
            if not 0 <= lab < len(self.classes):
                raise layout_error(self.kind, req["image_class_labels.txt"], f"image {i} has class id {lab + 1} "
                                   f"outside 1..{len(self.classes)}", self.layout)
            self.samples.append((str(self.root / "images" / images[i][0]), lab))
        self._bbox: dict[int, list[float]] | None = None

    @property
    def has_boxes(self) -> bool:
        return (self.root / "bounding_boxes.txt").is_file()

    def objects(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._bbox is None:
            path = self._require(self.root / "bounding_boxes.txt", "'bounding_boxes.txt'")
            self._bbox = _read_numbers(path, self.kind, 4, self.layout)
        x, y, w, h = self._bbox[self.image_ids[i]]
        return boxes_tensor([[x, y, x + w, y + h]]), torch.tensor([self.samples[i][1]], dtype=torch.long)


def _mat_strings(cell) -> list[str]:
    return [str(np.asarray(e).ravel()[0]) for e in np.asarray(cell, dtype=object).ravel()]


class StanfordDogsDataset(ImageDataset):
    """Stanford Dogs from ``train_list.mat`` / ``test_list.mat`` (``file_list`` + ``labels`` 1..K, label - 1).
    ``classes`` = the sorted ``<wnid>-<Breed>`` folders (the labels' order, checked against every file's folder);
    ``class_names`` the breeds. Boxes: every ``<object>`` of the extension-less VOC XML in ``Annotation/``."""

    kind = "stanford_dogs"
    layout = _DOGS_LAYOUT

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 on_bad_image: str = "raise", target_transform: Callable | None = None) -> None:
        from scipy.io import loadmat

        split = self._split(split, _SPLITS, self.kind)
        super().__init__(root, split, transform, on_bad_image=on_bad_image, target_transform=target_transform)
        self._check_root()
        images = self._require(self.root / "Images", "'Images/' folder", is_dir=True)
        mat_path = self._require(self.root / f"{split}_list.mat", f"'{split}_list.mat'")
        try:
            mat = loadmat(mat_path)
            files, labels = _mat_strings(mat["file_list"]), np.asarray(mat["labels"]).ravel().astype(int)
        except (KeyError, ValueError, TypeError, IndexError, OSError) as e:
            raise layout_error(self.kind, mat_path, f"unreadable list ({type(e).__name__}: {e}); expected "
                               "'file_list' and 'labels' in", self.layout) from e
        if len(files) != len(labels):
            raise layout_error(self.kind, mat_path, "file_list and labels differ in length in", self.layout)
        self.classes = sorted(e.name for e in os.scandir(images) if e.is_dir())
        for f, lab in zip(files, labels):
            folder = f.split("/")[0]
            if not 1 <= lab <= len(self.classes) or self.classes[lab - 1] != folder:
                raise layout_error(self.kind, mat_path, f"label {lab} of {f!r} does not match its folder in the "
                                   f"sorted breed folders of {images}", self.layout)
            self.samples.append((str(images / f), int(lab) - 1))
        self.class_names = [c.split("-", 1)[1] if "-" in c else c for c in self.classes]
        self._rel = [f for f in files]
        self._xml_cache: dict[int, tuple] = {}

    @property
    def has_boxes(self) -> bool:
        return (self.root / "Annotation").is_dir()

    def _xml(self, i: int):
        if i not in self._xml_cache:
            rel = self._rel[i]
            path = self.root / "Annotation" / (rel[:-4] if rel.lower().endswith(".jpg") else rel)
            if not path.is_file():
                raise layout_error(self.kind, path, "missing the VOC annotation", self.layout)
            self._xml_cache[i] = parse_voc_xml(path)
        return self._xml_cache[i]

    def objects(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, objs = self._xml(i)
        name_to_idx = {n: k for k, n in enumerate(self.class_names)}
        labels = torch.tensor([name_to_idx.get(n, -1) for n, _ in objs], dtype=torch.long)
        return boxes_tensor([b for _, b in objs]), labels

    def image_size(self, i: int) -> tuple[int, int]:
        if self.has_boxes:
            return self._xml(i)[0]
        return super().image_size(i)
