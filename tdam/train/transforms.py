"""The train and eval transforms of a run: :func:`build_transforms` (the trainer's datasets and ``--dry-run`` use it).

Training: RandomResizedCrop(``img_size``, ``scale``) with ``train_interpolation`` (``random``: bilinear or bicubic
per image, timm's default in the authors' script), horizontal flip ``hflip``, then either RandAugment
(``auto_augment``) or ColorJitter(``color_jitter``) (timm applies the jitter only without an auto-augment policy),
ImageNet normalisation, random erasing ``reprob``. Evaluation: resize ``img_size / crop_pct`` (``interpolation``) and
centre crop ``img_size``. Both are timm's ``create_transform`` (:func:`tdam.data.build_transform`, preset
``imagenet``).
"""
from __future__ import annotations

from typing import Any

from tdam.data.transforms import build_transform
from tdam.train.config import TrainConfig

__all__ = ["build_transforms"]


def build_transforms(config: TrainConfig) -> tuple[Any, Any]:
    """``(train_transform, eval_transform)`` of ``config`` (see the module docstring)."""
    cfg = config
    train = build_transform("train", img_size=cfg.img_size, scale=tuple(cfg.scale), hflip=cfg.hflip,
                            auto_augment=cfg.auto_augment, color_jitter=cfg.color_jitter, re_prob=cfg.reprob,
                            re_mode=cfg.remode, interpolation=cfg.train_interpolation or cfg.interpolation)
    val = build_transform("val", img_size=cfg.img_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation)
    return train, val
