"""Shared machinery of the dataset readers: image decoding, the bad-image policy, box access.

Bad images: ``on_bad_image='raise'`` (default) turns any decoding failure into :class:`~tdam.data.errors.BadImageError`
naming the file. ``on_bad_image='skip'`` makes ``__getitem__`` return a :class:`BadSample` (falsy, carries the path)
instead and appends the path to ``dataset.bad_images`` (in the process that read it: with DataLoader workers use the
loader's count, see :mod:`tdam.data.loader`, whose collate drops BadSamples and counts them per epoch).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence
import xml.etree.ElementTree as ET

import torch
from PIL import Image
from torch.utils.data import Dataset

from tdam.validation import check_choice

from .errors import BadImageError, DatasetLayoutError, layout_error

__all__ = ["BadSample", "ImageDataset", "IMG_EXTENSIONS", "BAD_IMAGE_CHOICES", "load_rgb", "parse_voc_xml",
           "list_images", "boxes_tensor"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
BAD_IMAGE_CHOICES = ("raise", "skip")


class BadSample:
    """Placeholder returned for an unreadable image under ``on_bad_image='skip'`` (falsy; ``.path``, ``.index``)."""

    __slots__ = ("path", "index")

    def __init__(self, path: str, index: int) -> None:
        self.path, self.index = path, index

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"BadSample({self.path!r}, index={self.index})"

    def __reduce__(self):
        return (BadSample, (self.path, self.index))


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully and convert it to RGB (CUB has greyscale JPEGs); failures -> BadImageError(path)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(path, e) from e


def list_images(folder: Path) -> list[str]:
    """Sorted image file names in ``folder`` (extensions matched case-insensitively, as ImageFolder)."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))


def parse_voc_xml(path: Path) -> tuple[tuple[int, int], list[tuple[str, list[float]]]]:
    """PASCAL-VOC XML (ILSVRC val boxes, Stanford Dogs) -> ((width, height), [(name, [xmin, ymin, xmax, ymax])])."""
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        wh = (int(float(size.findtext("width"))), int(float(size.findtext("height"))))
        objs = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            box = [float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
            objs.append((obj.findtext("name").strip(), box))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"malformed VOC XML annotation {path}: {type(e).__name__}: {e} (expected <annotation> with "
                         f"<size><width>/<height> and <object><name>/<bndbox><xmin>/<ymin>/<xmax>/<ymax>)") from e
    return wh, objs


class ImageDataset(Dataset):
    """A list of (image path, target) with ``classes``, ``targets``, boxes and the bad-image policy.

    Subclasses fill ``self.samples`` (list of (path, target)), ``self.classes`` and override :meth:`objects` where
    the dataset has boxes. Boxes are float ``(K, 4)`` xyxy in ORIGINAL-image pixels, as stored in the annotation
    files (ILSVRC/Dogs XML: inclusive pixel corners; CUB/COCO ``x, y, w, h`` -> ``x, y, x + w, y + h``).
    """

    kind = "dataset"
    layout = ""

    def __init__(self, root: str | os.PathLike, split: str, transform: Callable | None = None, *,
                 on_bad_image: str = "raise", target_transform: Callable | None = None) -> None:
        check_choice("on_bad_image", on_bad_image, BAD_IMAGE_CHOICES)
        self.root = Path(root).expanduser()
        self.split = split
        self.transform = transform
        self.target_transform = target_transform
        self.on_bad_image = on_bad_image
        self.bad_images: list[str] = []
        self.samples: list[tuple[str, Any]] = []
        self.classes: list[str] = []

    # ------------------------------------------------------------------ helpers for subclasses
    def _require(self, path: Path, what: str, *, is_dir: bool = False) -> Path:
        ok = path.is_dir() if is_dir else path.is_file()
        if not ok:
            raise layout_error(self.kind, path, f"missing {what}", self.layout)
        return path

    def _check_root(self) -> None:
        if not self.root.exists():
            raise layout_error(self.kind, self.root, "dataset root does not exist", self.layout)
        if not self.root.is_dir():
            raise layout_error(self.kind, self.root, "dataset root is not a directory", self.layout)

    @staticmethod
    def _split(split: str, choices: dict[str, str], kind: str) -> str:
        check_choice(f"{kind}: split", split, sorted(choices))
        return choices[split]

    # ------------------------------------------------------------------ Dataset API
    @property
    def targets(self) -> list:
        return [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _target(self, i: int):
        t = self.samples[i][1]
        return t.clone() if isinstance(t, torch.Tensor) else t

    def _load(self, i: int) -> Image.Image:
        """Image ``i`` as RGB (raises :class:`BadImageError` naming it when it cannot be decoded)."""
        return load_rgb(self.samples[i][0])

    def __getitem__(self, i: int):
        try:
            img = self._load(i)
        except BadImageError as e:
            if self.on_bad_image == "raise":
                raise
            self.bad_images.append(e.path)
            return BadSample(e.path, i)
        if self.transform is not None:
            img = self.transform(img)
        target = self._target(i)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def path(self, i: int) -> str:
        return self.samples[i][0]

    @property
    def has_boxes(self) -> bool:
        return False

    def objects(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes float (K, 4) xyxy original pixels, labels long (K,)) of image ``i``."""
        raise DatasetLayoutError(f"{self.kind} split {self.split!r} has no bounding boxes (at {self.root})")

    def boxes(self, i: int) -> torch.Tensor:
        """Ground-truth boxes of image ``i``: float (K, 4) xyxy in original-image pixels."""
        return self.objects(i)[0]

    def image_size(self, i: int) -> tuple[int, int]:
        """(width, height) of the original image ``i`` (from the annotation where it has one, else the header)."""
        path = self.samples[i][0]
        try:
            with Image.open(path) as im:
                return im.size
        except (OSError, SyntaxError, ValueError) as e:
            raise BadImageError(path, e) from e

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"classes={len(self.classes)})")


def boxes_tensor(boxes: Sequence[Sequence[float]]) -> torch.Tensor:
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
