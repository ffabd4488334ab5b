"""Checkpoints, data and batches for the analysis notebooks (05, 06, 09).

A checkpoint carries its run config: the model is rebuilt from it (``tdam.checkpoint.load_model``) and the
evaluation data (dataset, eval transform, box geometry) follows that config unless a ``data_dir`` is given, so a model
trained on the embedded tdam-shapes data is analysed on the same data and at the same input size.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from tdam.data import Geometry, ImageDataset
    from tdam.train.config import TrainConfig

__all__ = [
    "AnalysisRun",
    "resolve_checkpoint",
    "load_run",
    "model_label",
    "crop_boxes",
    "crop_objects",
    "two_object_indices",
    "choose_images",
    "sample_indices",
    "spread",
    "load_images",
    "image_batches",
    "localization_batches",
]


@dataclass
class AnalysisRun:
    """A trained model ready for analysis, with the data it is evaluated on.

    ``geometry`` maps original-image boxes to the evaluated crop; ``mean``/``std`` undo the input normalisation.
    """

    label: str
    model: nn.Module
    checkpoint: Path
    config: TrainConfig
    dataset: ImageDataset
    geometry: Geometry
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device

    @property
    def class_names(self) -> list[str]:
        return list(getattr(self.dataset, "class_names", self.dataset.classes))

    @property
    def model_config(self) -> dict:
        return dict(getattr(self.model, "model_config", {}))


def resolve_checkpoint(path: str, backbone: str, attention: str | None, profile: str = "smoke") -> Path:
    """``path`` when given; else the cached (or freshly trained) run of ``tdam.train.ensure_checkpoint``."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {p} does not exist (expected a file written by the tdam trainer)")
        return p
    from tdam.train import ensure_checkpoint

    return Path(ensure_checkpoint(backbone, attention, profile=profile))


def model_label(model_config: dict) -> str:
    """Short name of a model for tables and figures, e.g. ``resnet18 TD-joint t2 m1`` or ``resnet18 plain``."""
    from tdam.evaluation.tables import model_key

    key = model_key(model_config)
    if key["attention"] == "td":
        return f"{key['backbone']} TD-{key['td_mode']} t{key['t']} m{key['m']}"
    return f"{key['backbone']} {key['attention'].upper() or 'plain'}"


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def load_run(
    checkpoint: str | Path,
    *,
    data_dir: str = "",
    split: str = "val",
    device: str = "cpu",
    label: str | None = None,
) -> AnalysisRun:
    """Rebuild the checkpoint's model (eval mode, on ``device``) and open its evaluation data.

    ``data_dir`` '' = the data of the checkpoint's run config (the embedded tdam-shapes set by default); the eval
    transform (resize ``img_size / crop_pct``, centre crop ``img_size``) is the run's own.
    """
    from tdam.checkpoint import load_model, read_checkpoint
    from tdam.data import build_dataset, build_transform, eval_geometry
    from tdam.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from tdam.train.config import TrainConfig
    from tdam.train.data import data_root

    ckpt = read_checkpoint(checkpoint)
    if "config" not in ckpt:
        raise ValueError(f"{checkpoint} has no run 'config' (expected a checkpoint written by the tdam trainer)")
    cfg = TrainConfig.from_dict(ckpt["config"])
    dev = _device(device)
    model = load_model(ckpt).eval().to(dev)
    root = Path(data_dir).expanduser() if data_dir else data_root(cfg)
    transform = build_transform("val", img_size=cfg.img_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation)
    dataset = build_dataset(cfg.dataset, root, split, transform=transform)
    return AnalysisRun(
        label=label or model_label(ckpt.get("model_config", {})),
        model=model,
        checkpoint=Path(checkpoint),
        config=cfg,
        dataset=dataset,
        geometry=eval_geometry(cfg.img_size, crop_pct=cfg.crop_pct),
        mean=tuple(IMAGENET_MEAN),
        std=tuple(IMAGENET_STD),
        device=dev,
    )


def crop_boxes(run: AnalysisRun, index: int) -> Tensor:
    """Ground-truth boxes of image ``index`` in the evaluated crop's pixels (M, 4) long, inclusive corners.

    Mapped through the eval geometry (``tdam.data.map_boxes``: scaled by new/old size, shifted by the crop offset,
    clipped to the crop); boxes entirely outside the crop are dropped; coordinates truncated to integers as
    wsolevaluation's ``int(x * W' / W)``.
    """
    ds = run.dataset
    boxes, keep = run.geometry.map(ds.boxes(index), ds.image_size(index), return_keep=True)
    return boxes[keep].long()


def crop_objects(run: AnalysisRun, index: int) -> list[tuple[str, list[int], bool]]:
    """Every drawn object of a tdam-shapes image (also the unlabelled second one): (class name, crop box, primary)."""
    ds = run.dataset
    objs = ds.all_objects(index)
    boxes, keep = run.geometry.map([o["box"] for o in objs], ds.image_size(index), return_keep=True)
    names = run.class_names
    return [(names[o["label"]], b.long().tolist(), bool(o["primary"])) for o, b, k in zip(objs, boxes, keep) if k]


def two_object_indices(run: AnalysisRun) -> list[int]:
    """Indices of the images holding two objects of different classes (from the tdam-shapes side-car file)."""
    ds = run.dataset
    return [i for i in range(len(ds)) if len({o["label"] for o in ds.all_objects(i)}) >= 2]


def choose_images(
    run: AnalysisRun, num_images: int, *, two_objects: bool = True, indices: Sequence[int] = (), seed: int = 0
) -> list[int]:
    """Dataset indices to show: ``indices`` when given (checked), else ``num_images`` drawn with ``seed`` from the
    two-object images (``two_objects``) or from the whole split, returned in increasing order."""
    n = len(run.dataset)
    if indices:
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise ValueError(f"image indices {bad} are out of range: the {run.dataset.split!r} split has {n} images")
        return list(indices)
    pool = two_object_indices(run) if two_objects else list(range(n))
    if len(pool) < num_images:
        raise ValueError(f"asked for {num_images} images but only {len(pool)} are available"
                         + (" with two objects" if two_objects else ""))
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(pool), generator=g)[:num_images]
    return sorted(pool[i] for i in pick.tolist())


def sample_indices(run: AnalysisRun, max_images: int, *, seed: int = 0) -> list[int]:
    """All indices of the split (``max_images`` 0 or >= its size), else ``max_images`` drawn uniformly with ``seed``
    (sorted). Readers list images class by class, so a prefix would cover only the first classes."""
    n = len(run.dataset)
    if max_images < 0:
        raise ValueError(f"max_images must be >= 0 (0 = all), got {max_images}")
    if max_images == 0 or max_images >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:max_images].tolist())


def spread(n_items: int, n: int) -> list[int]:
    """``n`` positions evenly spaced over ``range(n_items)`` (all of them when ``n >= n_items``): picks figure
    examples across classes from class-ordered lists."""
    if n >= n_items:
        return list(range(n_items))
    return torch.linspace(0, n_items - 1, n).round().long().tolist()


def load_images(run: AnalysisRun, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(images (N, 3, H, W) through the eval transform, labels (N,)) of the given dataset indices."""
    if not indices:
        raise ValueError("no image indices given")
    items = [run.dataset[i] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def image_batches(run: AnalysisRun, indices: Sequence[int], batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of (images, labels) of the given dataset indices, in order."""
    for s in range(0, len(indices), batch_size):
        yield load_images(run, list(indices[s : s + batch_size]))


def localization_batches(
    run: AnalysisRun, indices: Sequence[int], batch_size: int
) -> Iterator[tuple[Tensor, Tensor, list[Tensor]]]:
    """Batches of (images, labels, per-image GT boxes in crop pixels) for ``evaluate_localization``."""
    if not getattr(run.dataset, "has_boxes", False):
        raise ValueError(f"{run.dataset!r} has no ground-truth boxes (ImageNet: split 'val' with val_boxes/ XML)")
    for s in range(0, len(indices), batch_size):
        chunk = list(indices[s : s + batch_size])
        images, labels = load_images(run, chunk)
        yield images, labels, [crop_boxes(run, i) for i in chunk]
