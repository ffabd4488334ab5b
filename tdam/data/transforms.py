"""Image transforms of the three recipes, as named presets of :func:`build_transform`.

* ``'imagenet'`` (timm's ``create_transform``; ImageNet training and evaluation): train = RandomResizedCrop(img_size,
  scale=(0.08, 1)) + horizontal flip 0.5 (+ RandAugment via ``auto_augment='rand-m9-mstd0.5-inc1'``, + RandomErasing
  ``re_prob`` 'pixel' mode, + optional colour jitter ``color_jitter``: ColorJitter(brightness, contrast, saturation)
  when no ``auto_augment`` is given, as timm) + ImageNet normalisation; the training crop's interpolation may be
  ``'random'`` (bilinear or bicubic, drawn per image: timm's default ``--train-interpolation`` of the authors'
  script); eval = Resize(floor(img_size / crop_pct)) on the shorter side (bilinear) + CentreCrop(img_size):
  256 -> 224 at the default, and the test-resolution variants res / 0.875 -> res for any ``img_size``.
* ``'wsdan'`` (WS-DAN's ``utils.get_transform`` generalised from 448; fine-grained transfer): train = Resize((s, s))
  with s = int(img_size / crop_pct) (aspect ignored; 448 -> 512) + RandomCrop(img_size) + flip + ColorJitter(
  brightness=0.126, saturation=0.5) + normalise; eval = Resize((s, s)) + CenterCrop(img_size) + normalise.
* ``'asl'`` (ASL's COCO recipe; multi-label transfer): train = Resize((img_size, img_size)) squash + CutoutPIL(0.5) +
  RandAugment (torchvision's, 2 ops, magnitude 9, standing in for the PyPI ``randaugment`` package of the original,
  which does not work with numpy >= 1.24); eval = Resize((img_size, img_size)). ASL feeds [0, 1] tensors to TResNet;
  our timm/torchvision backbones were trained on normalised inputs, so ImageNet normalisation is applied unless
  ``normalize=False``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from tdam.validation import check_choice, check_int, check_number

__all__ = ["build_transform", "CutoutPIL", "PRESETS", "INTERPOLATIONS", "TRAIN_INTERPOLATIONS", "IMAGENET_MEAN",
           "IMAGENET_STD"]

PRESETS = ("imagenet", "wsdan", "asl")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
TRAIN_INTERPOLATIONS = (*INTERPOLATIONS, "random")   # 'random': the 'imagenet' preset's training crop only
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TRAIN_WORDS = {"train": True, "val": False, "eval": False, "test": False}


class CutoutPIL:
    """ASL's CutoutPIL: one rectangle of int(f*size + 0.5) per side, centred at a uniform random pixel, clipped to the
    image, filled with a uniform random RGB colour (ImageDraw's inclusive corners). Draws from torch's RNG, like the
    RandAugment after it, so one generator (seeded per DataLoader worker by torch) drives the whole pipeline."""

    def __init__(self, cutout_factor: float = 0.5) -> None:
        if not 0.0 < cutout_factor <= 1.0:
            raise ValueError(f"cutout_factor must be in (0, 1], got {cutout_factor}")
        self.cutout_factor = cutout_factor

    def __call__(self, img):
        from PIL import ImageDraw

        img = img.copy()
        w, h = img.size
        h_cut, w_cut = int(self.cutout_factor * h + 0.5), int(self.cutout_factor * w + 0.5)
        y_c, x_c = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y1, y2 = min(max(y_c - h_cut // 2, 0), h), min(max(y_c + h_cut // 2, 0), h)
        x1, x2 = min(max(x_c - w_cut // 2, 0), w), min(max(x_c + w_cut // 2, 0), w)
        fill = tuple(int(v) for v in torch.randint(0, 256, (3,)))
        ImageDraw.Draw(img).rectangle([x1, y1, x2, y2], fill=fill)
        return img

    def __repr__(self) -> str:
        return f"CutoutPIL(cutout_factor={self.cutout_factor})"


def _as_train(train, kind) -> bool:
    if kind is not None and train is not None:
        raise ValueError("pass either train or kind, not both")
    value = kind if train is None else train
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):  # 0 / 1 would compare equal to False / True
        raise ValueError(f"train={value!r}: expected True, False or one of {list(_TRAIN_WORDS)}")
    check_choice("train", value, [True, False, *_TRAIN_WORDS])
    return _TRAIN_WORDS[value]


def build_transform(train: bool | str | None = None, img_size: int = 224, *, kind: str | None = None,
                    preset: str = "imagenet", crop_pct: float = 0.875, interpolation: str = "bilinear",
                    scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                    hflip: float = 0.5, auto_augment: str | None = None, re_prob: float = 0.0, re_mode: str = "pixel",
                    re_count: int = 1, color_jitter: float | Sequence[float] | None = None,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    normalize: bool = True):
    """The train / eval transform of ``preset`` (see the module docstring) at ``img_size``.

    ``train``: True / False, or 'train' / 'val' ('eval', 'test'); ``kind=`` is accepted as an alias. ``auto_augment``
    is a timm RandAugment / AutoAugment string for 'imagenet' (e.g. ``'rand-m9-mstd0.5-inc1'``); for 'asl' any
    non-empty value other than ``'none'`` keeps torchvision's RandAugment (on by default there)."""
    is_train = _as_train(train, kind)
    check_choice("preset", preset, PRESETS)
    random_ok = is_train and preset == "imagenet"
    check_choice("interpolation", interpolation, TRAIN_INTERPOLATIONS if random_ok else INTERPOLATIONS)
    check_int("img_size", img_size, 1)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    check_number("hflip", hflip, 0, 1)
    check_number("re_prob", re_prob, 0, 1)
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode

    mode = None if interpolation == "random" else InterpolationMode(interpolation)
    tail = [T.ToTensor()] + ([T.Normalize(mean=list(mean), std=list(std))] if normalize else [])

    if preset == "imagenet":
        from timm.data import create_transform

        # normalize=False -> identity normalisation, so both branches give float [0, 1] tensors (timm's own
        # normalize=False would return uint8 tensors)
        m, sd = (tuple(mean), tuple(std)) if normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        if is_train:
            return create_transform(img_size, is_training=True, scale=scale, ratio=ratio, hflip=hflip, vflip=0.0,
                                    color_jitter=color_jitter, auto_augment=auto_augment, interpolation=interpolation,
                                    mean=m, std=sd, re_prob=re_prob, re_mode=re_mode, re_count=re_count)
        return create_transform(img_size, is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                                mean=m, std=sd)

    if preset == "wsdan":
        s = int(img_size / crop_pct)
        if not is_train:
            return T.Compose([T.Resize((s, s), interpolation=mode), T.CenterCrop(img_size), *tail])
        cj = (0.126, 0.0, 0.5) if color_jitter is None else color_jitter
        cj = (float(cj),) * 3 if isinstance(cj, (int, float)) else tuple(cj)
        return T.Compose([T.Resize((s, s), interpolation=mode), T.RandomCrop(img_size), T.RandomHorizontalFlip(hflip),
                          T.ColorJitter(brightness=cj[0], contrast=cj[1], saturation=cj[2]), *tail])

    # asl
    if not is_train:
        return T.Compose([T.Resize((img_size, img_size), interpolation=mode), *tail])
    ops = [T.Resize((img_size, img_size), interpolation=mode), CutoutPIL(0.5)]
    if auto_augment is None or (auto_augment and auto_augment != "none"):
        ops.append(T.RandAugment())
    return T.Compose([*ops, *tail])
