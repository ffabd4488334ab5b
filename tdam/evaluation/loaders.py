"""Validation data for the evaluation notebooks: ImageNet V1/V2 readers (``tdam.data``) with the single-centre-crop
transform (resize img_size / crop_pct, centre crop img_size), embedded tdam-shapes by default."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

__all__ = ["embedded_root", "imagenet_root", "imagenet_v2_root", "eval_dataset", "eval_loader"]


def embedded_root() -> Path:
    """Root of the generated tdam-shapes dataset (made on first use, cached)."""
    from tdam.data import make_shapes_dataset

    return Path(make_shapes_dataset())


def imagenet_root(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else embedded_root() / "imagenet"


def imagenet_v2_root(v2_dir: str | Path | None) -> Path:
    return Path(v2_dir).expanduser() if v2_dir is not None else embedded_root() / "imagenet_v2"


def eval_dataset(kind: str, root: str | Path, *, img_size: int, crop_pct: float = 0.875,
                 interpolation: str = "bilinear", variant: str | None = None):
    """The 'val' split of ImageNet (``kind='imagenet'``) or an ImageNetV2 test set (``kind='imagenet_v2'``, with
    ``variant``), single centre crop."""
    from tdam.data import build_dataset, build_transform

    if kind not in ("imagenet", "imagenet_v2"):
        raise ValueError(f"kind={kind!r} is not valid: valid choices are ['imagenet', 'imagenet_v2']")
    tf = build_transform("val", img_size=img_size, crop_pct=crop_pct, interpolation=interpolation)
    if kind == "imagenet":
        return build_dataset("imagenet", root, "val", transform=tf)
    return build_dataset("imagenet_v2", root, "test", transform=tf, variant=variant)


def eval_loader(dataset, *, batch_size: int = 50, workers: int = 0, max_images: int | None = None) -> DataLoader:
    """In-order loader over ``dataset`` (whole last batch kept). ``max_images``: an evenly strided subset of that
    many images (class folders are stored in order, so a stride keeps every class represented)."""
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        n = len(dataset)
        if max_images < n:
            idx = torch.linspace(0, n - 1, max_images).round().long().unique().tolist()
            dataset = Subset(dataset, idx)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      persistent_workers=False)
