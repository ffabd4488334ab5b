"""Readers for ImageNet ILSVRC-2012 (class-subfolder layout + ILSVRC val XML boxes) and ImageNetV2.

* Labels follow the torchvision/timm convention: index i = the i-th wnid in SORTED order (ImageFolder's). The class
  list comes from ``train/`` when it exists (so val labels agree with train's even if a val folder is missing).
* ImageNetV2 labels are ``int(folder name)`` -- NOT ImageFolder's string sort, which puts '10' before '2'.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import torch

from tdam.validation import check_choice

from .base import ImageDataset, boxes_tensor, list_images, parse_voc_xml
from .errors import layout_error

__all__ = ["ImageNetDataset", "ImageNetV2Dataset", "IMAGENET_V2_VARIANTS"]

_IMAGENET_LAYOUT = """\
<root>/train/<wnid>/<wnid>_<n>.JPEG
<root>/val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG   (val sorted into class folders, e.g. valprep.sh or torchvision)
<root>/val_boxes/ILSVRC2012_val_XXXXXXXX.xml     (optional, ILSVRC2012_bbox_val_v3 VOC XML, needed for .boxes())
<root>/LOC_synset_mapping.txt                    (optional, '<wnid> <words>' lines, for .class_names)"""

IMAGENET_V2_VARIANTS = {
    "matched-frequency": "imagenetv2-matched-frequency-format-val",
    "threshold0.7": "imagenetv2-threshold0.7-format-val",
    "top-images": "imagenetv2-top-images-format-val",
}
_V2_LAYOUT = """\
<root>/imagenetv2-matched-frequency-format-val/<label>/<file>.jpeg   (variant 'matched-frequency', the default)
<root>/imagenetv2-threshold0.7-format-val/<label>/<file>.jpeg        (variant 'threshold0.7')
<root>/imagenetv2-top-images-format-val/<label>/<file>.jpeg          (variant 'top-images')
or <root> itself = one variant folder holding the decimal label folders '0' ... '<K-1>'"""


class ImageNetDataset(ImageDataset):
    """ILSVRC-2012 in the class-subfolder layout. ``split`` in {'train', 'val'} ('test' = 'val', the usual
    held-out set). Boxes (val only) from ``boxes_dir`` (default ``<root>/val_boxes``), one ILSVRC XML per image."""

    kind = "imagenet"
    layout = _IMAGENET_LAYOUT

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 on_bad_image: str = "raise", boxes_dir: str | os.PathLike | None = None,
                 target_transform: Callable | None = None) -> None:
        split = self._split(split, {"train": "train", "val": "val", "test": "val"}, self.kind)
        super().__init__(root, split, transform, on_bad_image=on_bad_image, target_transform=target_transform)
        self._check_root()
        split_dir = self._require(self.root / split, f"'{split}/' folder", is_dir=True)
        class_src = self.root / "train" if (self.root / "train").is_dir() else split_dir
        self.classes = sorted(e.name for e in os.scandir(class_src) if e.is_dir())
        if not self.classes:
            flat = list_images(split_dir)
            problem = (f"'{split}/' holds {len(flat)} images directly but no class folders (a flat ILSVRC val "
                       f"folder must first be sorted into <wnid>/ folders)" if flat else "no class folders in")
            raise layout_error(self.kind, class_src, problem, self.layout)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        present = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
        unknown = [c for c in present if c not in self.class_to_idx]
        if unknown:
            raise layout_error(self.kind, split_dir, f"class folders {unknown[:5]} are not among train/'s "
                                                     f"{len(self.classes)} classes in", self.layout)
        for c in present:
            d = split_dir / c
            self.samples += [(str(d / f), self.class_to_idx[c]) for f in list_images(d)]
        if not self.samples:
            flat = list_images(split_dir)
            problem = (f"'{split}/' holds {len(flat)} images directly (e.g. {flat[0]}) but none in class folders "
                       f"(a flat ILSVRC val folder must first be sorted into <wnid>/ folders)" if flat
                       else "no images in the class folders of")
            raise layout_error(self.kind, split_dir, problem, self.layout)
        self.boxes_dir = Path(boxes_dir) if boxes_dir is not None else self.root / "val_boxes"
        self._xml_cache: dict[int, tuple] = {}
        mapping = self.root / "LOC_synset_mapping.txt"
        words = {}
        if mapping.is_file():
            for line in mapping.read_text().splitlines():
                if line.strip():
                    wnid, _, w = line.strip().partition(" ")
                    words[wnid] = w
        self.class_names = [words.get(c, c) for c in self.classes]

    @property
    def has_boxes(self) -> bool:
        return self.split == "val" and self.boxes_dir.is_dir()

    def _xml(self, i: int):
        if i not in self._xml_cache:
            if self.split != "val":
                raise layout_error(self.kind, self.root, "ILSVRC boxes are read for split 'val' only, not "
                                   f"{self.split!r}", self.layout)
            stem = Path(self.samples[i][0]).stem
            path = self.boxes_dir / f"{stem}.xml"
            if not path.is_file():
                raise layout_error(self.kind, path, "missing the ILSVRC box annotation", self.layout)
            self._xml_cache[i] = parse_voc_xml(path)
        return self._xml_cache[i]

    def objects(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, objs = self._xml(i)
        labels = torch.tensor([self.class_to_idx.get(n, -1) for n, _ in objs], dtype=torch.long)
        return boxes_tensor([b for _, b in objs]), labels

    def image_size(self, i: int) -> tuple[int, int]:
        if self.has_boxes and (self.boxes_dir / f"{Path(self.samples[i][0]).stem}.xml").is_file():
            return self._xml(i)[0]
        return super().image_size(i)

    def all_objects(self, i: int) -> list[dict]:
        """tdam-shapes only: EVERY object drawn in image i (also the second object of another class that ILSVRC
        semantics leave out of the label and XML): dicts with 'wnid', 'label', 'box' (xyxy), 'primary'."""
        side = self.root / "shapes_objects.json"
        if not side.is_file():
            raise layout_error(self.kind, side, "all_objects() needs the tdam-shapes side-car file (real ImageNet "
                               "has no such file)", self.layout)
        if not hasattr(self, "_side"):
            self._side = json.loads(side.read_text())["splits"][self.split]
        rel = Path(self.samples[i][0]).relative_to(self.root).as_posix()
        return self._side[rel]


class ImageNetV2Dataset(ImageDataset):
    """ImageNetV2 test sets: ``<label>/<file>.jpeg`` with label = int(folder name). ``variant`` in
    IMAGENET_V2_VARIANTS (default 'matched-frequency') selects the sub-folder of ``root``; ``root`` may also be a
    variant folder itself. ``split`` in {'test', 'val'} (it is one held-out set). ``num_classes`` (default: largest
    label + 1) fixes ``classes`` = ['0', ..., str(num_classes - 1)]."""

    kind = "imagenet_v2"
    layout = _V2_LAYOUT

    def __init__(self, root: str | os.PathLike, split: str = "test", transform: Callable | None = None, *,
                 variant: str | None = None, on_bad_image: str = "raise", num_classes: int | None = None,
                 target_transform: Callable | None = None) -> None:
        split = self._split(split, {"test": "test", "val": "test"}, self.kind)
        super().__init__(root, split, transform, on_bad_image=on_bad_image, target_transform=target_transform)
        if variant is not None:
            check_choice("imagenet_v2: variant", variant, IMAGENET_V2_VARIANTS)
        self._check_root()
        numeric = re.compile(r"^\d+$")

        def label_dirs(p: Path) -> list[str]:
            return [e.name for e in os.scandir(p) if e.is_dir() and numeric.match(e.name)]

        if label_dirs(self.root) and variant is None:
            folder = self.root
        else:
            name = IMAGENET_V2_VARIANTS[variant or "matched-frequency"]
            folder = self.root / name
            if not folder.is_dir() and variant == "threshold0.7" and (self.root / "imagenetv2-threshold0.7").is_dir():
                folder = self.root / "imagenetv2-threshold0.7"  # the older S3 tarball's folder name
            self._require(folder, f"ImageNetV2 variant folder '{name}'", is_dir=True)
        self.variant_dir = folder
        dirs = label_dirs(folder)
        others = [e.name for e in os.scandir(folder) if e.is_dir() and not numeric.match(e.name)]
        if others or not dirs:
            raise layout_error(self.kind, folder, f"expected only decimal label folders, found {others[:5] or 'none'} "
                                                  "in", self.layout)
        for d in sorted(dirs, key=int):
            self.samples += [(str(folder / d / f), int(d)) for f in list_images(folder / d)]
        if not self.samples:
            raise layout_error(self.kind, folder, "no images in the label folders of", self.layout)
        k = max(int(d) for d in dirs) + 1
        if num_classes is not None:
            if num_classes < k:
                raise ValueError(f"imagenet_v2: num_classes={num_classes} but {folder} has label folder {k - 1}")
            k = num_classes
        self.classes = [str(i) for i in range(k)]
