"""Ground-truth boxes through the evaluation geometry: resize (shorter side, or to an exact size) + centre crop.

Boxes are xyxy in original-image pixels. ``map_boxes`` reproduces torchvision's ``Resize``/``CenterCrop`` arithmetic
exactly (shorter side -> ``resize``, longer side -> ``int(resize * long / short)``; crop offset
``int(round((size - crop) / 2))``, padding when the crop is larger), scales coordinates by new/old size (as
wsolevaluation does, ``x' = x * W' / W``), shifts by the crop offset and clips to the crop, ``[0, crop_w - 1]`` x
``[0, crop_h - 1]`` (inclusive pixel indices, the ILSVRC convention).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tdam.validation import check_choice

__all__ = ["Geometry", "map_boxes", "resized_size", "crop_offset", "eval_geometry"]

IntOrPair = int | tuple[int, int]


@dataclass(frozen=True)
class Geometry:
    """An eval transform's geometry. ``resize``: int = shorter side (aspect kept), (h, w) = exact size (squash);
    ``crop``: int or (h, w) centre crop, or None."""

    resize: IntOrPair
    crop: IntOrPair | None = None

    def map(self, boxes, orig_size: tuple[int, int], *, return_keep: bool = False):
        return map_boxes(boxes, orig_size, self.resize, self.crop, return_keep=return_keep)

    def output_size(self, orig_size: tuple[int, int]) -> tuple[int, int]:
        """(w, h) of the transformed image."""
        if self.crop is None:
            return resized_size(orig_size, self.resize)
        ch, cw = _pair(self.crop)
        return cw, ch


def _pair(x: IntOrPair | Sequence[int]) -> tuple[int, int]:
    if isinstance(x, (int, np.integer)):
        return int(x), int(x)
    x = tuple(int(v) for v in x)
    if len(x) == 1:
        return x[0], x[0]
    if len(x) != 2:
        raise ValueError(f"expected an int or an (h, w) pair, got {x!r}")
    return x


def resized_size(orig_size: tuple[int, int], resize: IntOrPair | Sequence[int]) -> tuple[int, int]:
    """(w, h) after torchvision ``Resize(resize)``: an int (or 1-sequence) sets the shorter side, a pair (h, w)."""
    w, h = orig_size
    if isinstance(resize, (int, np.integer)) or len(resize) == 1:
        size = int(resize if isinstance(resize, (int, np.integer)) else resize[0])
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size, int(size * long / short)
        return (new_short, new_long) if w <= h else (new_long, new_short)
    rh, rw = _pair(resize)
    return rw, rh


def crop_offset(size: tuple[int, int], crop: IntOrPair) -> tuple[int, int]:
    """(left, top) of torchvision's ``CenterCrop(crop)`` on an image of size (w, h); negative = padding."""
    w, h = size
    ch, cw = _pair(crop)
    left = -((cw - w) // 2) if cw > w else int(round((w - cw) / 2.0))
    top = -((ch - h) // 2) if ch > h else int(round((h - ch) / 2.0))
    return left, top


def map_boxes(boxes, orig_size: tuple[int, int], resize: IntOrPair | Sequence[int], crop: IntOrPair | None = None,
              *, return_keep: bool = False):
    """Map xyxy ``boxes`` (K, 4) of an image of ``orig_size`` = (w, h) through ``Resize(resize)`` then
    ``CenterCrop(crop)``; coordinates are clipped to the output. Returns a float tensor (K, 4), and with
    ``return_keep`` also a bool (K,) mask of boxes that intersect the output at all (a box entirely outside the
    crop collapses onto the border after clipping: drop it with this mask)."""
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    w, h = orig_size
    nw, nh = resized_size(orig_size, resize)
    scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=torch.float32)
    out = b * scale
    if crop is None:
        ow, oh = nw, nh
    else:
        left, top = crop_offset((nw, nh), crop)
        out = out - torch.tensor([left, top, left, top], dtype=torch.float32)
        oh, ow = _pair(crop)
    keep = (out[:, 2] >= 0) & (out[:, 3] >= 0) & (out[:, 0] <= ow - 1) & (out[:, 1] <= oh - 1)
    hi = torch.tensor([ow - 1, oh - 1, ow - 1, oh - 1], dtype=torch.float32)
    out = torch.minimum(out.clamp(min=0.0), hi)
    return (out, keep) if return_keep else out


def eval_geometry(img_size: int = 224, *, crop_pct: float = 0.875, preset: str = "imagenet") -> Geometry:
    """Geometry of :func:`tdam.data.build_transform`'s eval transform for ``preset``:
    'imagenet' -> Resize(floor(img_size / crop_pct)) shorter side + CenterCrop(img_size) (224: 256 -> 224);
    'wsdan' -> Resize((int(img_size / crop_pct),) * 2) squash + CenterCrop(img_size) (448: 512 -> 448);
    'asl' -> Resize((img_size, img_size)) squash, no crop."""
    from .transforms import PRESETS

    check_choice("preset", preset, PRESETS)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if preset == "imagenet":
        return Geometry(resize=math.floor(img_size / crop_pct), crop=img_size)
    if preset == "wsdan":
        s = int(img_size / crop_pct)
        return Geometry(resize=(s, s), crop=img_size)
    return Geometry(resize=(img_size, img_size), crop=None)
