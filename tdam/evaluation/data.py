"""Evaluation data: the single-centre-crop datasets, a checkpoint's model with the data it was trained on, and
batches of images with their ground-truth boxes in the evaluated crop's pixels.

A trainer checkpoint carries its run config: the model is rebuilt from it (:func:`tdam.checkpoint.load_model`) and the
evaluation data (dataset, eval transform, box geometry) follows that config unless a ``data_dir`` is given, so a model
trained on the embedded tdam-shapes data is evaluated on the same data and at the same input size. Data with another
class count than the model's is refused (:class:`~tdam.evaluation.classes.ClassCountError`).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from tdam.validation import resolve_device

from .classes import check_class_count

if TYPE_CHECKING:
    from tdam.data import Geometry, ImageDataset

__all__ = [
    "eval_dataset", "eval_loader", "run_data_settings", "eval_data_dir", "eval_root", "trained_on", "check_data",
    "v2_root", "EvalRun", "load_run", "model_label", "crop_boxes",
    "crop_objects", "two_object_indices", "choose_images", "sample_indices", "spread", "load_images",
    "image_batches", "localization_batches",
]


def eval_dataset(kind: str, root: str | Path, *, img_size: int, crop_pct: float = 0.875,
                 interpolation: str = "bilinear", variant: str | None = None, split: str | None = None):
    """The 'val' split (or ``split``) of ImageNet (``kind='imagenet'``) or an ImageNetV2 test set
    (``kind='imagenet_v2'``, with ``variant``), or any other classification ``kind`` of :mod:`tdam.data`, through the
    single-centre-crop transform (resize ``img_size / crop_pct``, centre crop ``img_size``)."""
    from tdam.data import build_dataset, build_transform

    tf = build_transform("val", img_size=img_size, crop_pct=crop_pct, interpolation=interpolation)
    if kind == "imagenet_v2":
        return build_dataset("imagenet_v2", root, split or "test", transform=tf, variant=variant)
    return build_dataset(kind, root, split or "val", transform=tf)


def eval_loader(dataset, *, batch_size: int = 50, workers: int = 0, max_images: int | None = None) -> DataLoader:
    """In-order loader over ``dataset`` (whole last batch kept). ``max_images``: an evenly strided subset of that
    many images (class folders are stored in order, so a stride keeps every class represented); None: all."""
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        n = len(dataset)
        if max_images < n:
            idx = torch.linspace(0, n - 1, max_images).round().long().unique().tolist()
            dataset = Subset(dataset, idx)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      persistent_workers=False)


def on_device(model: nn.Module, device: str | torch.device | None, *, channels_last: bool = False) -> torch.device:
    """Put ``model`` in eval mode on ``device`` (None: where it is), channels-last when asked; returns the device."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return device


def device_batches(loader, device: torch.device, *, channels_last: bool = False,
                   max_batches: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` of each batch of ``loader`` on ``device`` (``x`` channels-last when asked), ``max_batches`` at
    most (None: all)."""
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, torch.as_tensor(y).to(device, non_blocking=True)


def run_data_settings(config: Mapping) -> dict:
    """What the evaluation data of a trainer run depends on, read from the run config stored in its checkpoint:
    dataset kind, data_dir (None: embedded), data_size, img_size, crop_pct, interpolation. The one place that knows
    the trainer config's keys."""
    return {"dataset": config.get("dataset", "imagenet"), "data_dir": config.get("data_dir"),
            "data_size": config.get("data_size", "default"), "img_size": int(config.get("img_size", 224)),
            "crop_pct": float(config.get("crop_pct", 0.875)),
            "interpolation": config.get("interpolation", "bilinear")}


def eval_data_dir(config: Mapping, data_dir: str | Path | None = None) -> str | None:
    """The data folder a run is evaluated on: ``data_dir`` when given (not None or ''), else the one its run config
    trained on; None: the embedded tdam-shapes data."""
    found = data_dir or run_data_settings(config)["data_dir"]
    return str(found) if found else None


def eval_root(config: Mapping, data_dir: str | Path | None = None, *, kind: str | None = None) -> Path:
    """The dataset root a run is evaluated on (:func:`eval_data_dir`; the embedded data at the run's ``data_size``),
    for the run's dataset kind or ``kind``."""
    from tdam.data import dataset_root

    s = run_data_settings(config)
    return dataset_root(kind or s["dataset"], eval_data_dir(config, data_dir), size=s["data_size"])


def trained_on(config: Mapping) -> str:
    """The data a run was trained on, as an argument that evaluates on it, e.g. "data_dir=None: the embedded
    tdam-shapes data" or "data_dir='/data/imagenet'"; for a checkpoint without a trainer run config (e.g. the
    authors'), a request for that data's folder."""
    if "data_dir" not in config:
        return "the checkpoint records no training data: give data_dir=<the folder it was trained on>"
    d = run_data_settings(config)["data_dir"]
    return "data_dir=None: the embedded tdam-shapes data" if not d else f"data_dir={str(d)!r}"


def check_data(model: nn.Module, dataset, config: Mapping) -> None:
    """Refuse (:class:`~tdam.evaluation.classes.ClassCountError`) evaluation data whose class count is not the
    model's, naming the data the run (``config``: the checkpoint's run config) was trained on."""
    check_class_count(model, dataset, trained_on=trained_on(config))


def v2_root(v2_dir: str | Path | None, data_dir: str | Path | None, train_config: Mapping) -> tuple[Path | None, str]:
    """The ImageNet-V2 root to evaluate a run on, or None, with a one-line reason.

    ``v2_dir`` given: that folder. Else the embedded ImageNet-V2 stand-in, but only when the whole run is on the
    embedded data (trained on it, per ``train_config``, and evaluated on it: no ``data_dir``); a model trained or
    evaluated on other data has nothing to gain from the stand-in, so V2 is skipped.
    """
    if v2_dir:
        return Path(v2_dir).expanduser(), f"ImageNet-V2 from {v2_dir}"
    s = run_data_settings(train_config)
    if s["dataset"] != "imagenet":
        return None, f"no v2_dir given and the model was trained on {s['dataset']}, not ImageNet: ImageNet-V2 skipped"
    if s["data_dir"]:
        return None, "no v2_dir given and the model was not trained on the embedded data: ImageNet-V2 skipped"
    if data_dir:
        return None, ("no v2_dir given and the model is evaluated on data_dir, not the embedded data: "
                      "ImageNet-V2 skipped")
    return (eval_root(train_config, kind="imagenet_v2"),
            "the embedded ImageNet-V2 stand-in (the run is on the embedded data)")


@dataclass
class EvalRun:
    """A trained model ready for evaluation, with the data it is evaluated on.

    ``config`` is the run config stored in the checkpoint (a dict); ``geometry`` maps original-image boxes to the
    evaluated crop; ``mean``/``std`` undo the input normalisation; ``data_dir`` is the data folder evaluated (None:
    the embedded tdam-shapes data).
    """

    label: str
    model: nn.Module
    checkpoint: Path
    config: dict
    dataset: ImageDataset
    geometry: Geometry
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    data_dir: str | None = None

    @property
    def class_names(self) -> list[str]:
        return list(getattr(self.dataset, "class_names", self.dataset.classes))

    @property
    def model_config(self) -> dict:
        return dict(getattr(self.model, "model_config", {}))

    @property
    def img_size(self) -> int:
        return run_data_settings(self.config)["img_size"]


def model_label(model_config: Mapping) -> str:
    """Short name of a model for tables and figures, e.g. ``resnet18 TD-joint t2 m1`` or ``resnet18 plain``
    (:func:`tdam.reference.model_name`)."""
    from tdam.reference import model_name

    return model_name(model_config)


def load_run(checkpoint: str | Path, *, data_dir: str | None = None, split: str = "val", device: str = "cpu",
             label: str | None = None) -> EvalRun:
    """Rebuild the checkpoint's model (eval mode, on ``device``) and open its evaluation data.

    ``data_dir`` None or '' = the data of the checkpoint's run config (the embedded tdam-shapes set by default); the
    eval transform (resize ``img_size / crop_pct``, centre crop ``img_size``) is the run's own. Data whose class
    count is not the model's raise :class:`~tdam.evaluation.classes.ClassCountError`.
    """
    from tdam.checkpoint import load_model, read_checkpoint
    from tdam.data import eval_geometry
    from tdam.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    ckpt = read_checkpoint(checkpoint)
    if "config" not in ckpt:
        raise ValueError(f"{checkpoint} has no run 'config' (expected a checkpoint written by the tdam trainer)")
    config = dict(ckpt["config"])
    s = run_data_settings(config)
    dev = resolve_device(device)
    model = load_model(ckpt).eval().to(dev)
    dataset = eval_dataset(s["dataset"], eval_root(config, data_dir), img_size=s["img_size"], crop_pct=s["crop_pct"],
                           interpolation=s["interpolation"], split=split)
    check_data(model, dataset, config)
    return EvalRun(
        label=label or model_label(getattr(model, "model_config", None) or ckpt.get("model_config", {})),
        model=model, checkpoint=Path(checkpoint), config=config, dataset=dataset,
        geometry=eval_geometry(s["img_size"], crop_pct=s["crop_pct"]), mean=tuple(IMAGENET_MEAN),
        std=tuple(IMAGENET_STD), device=dev, data_dir=eval_data_dir(config, data_dir))


def crop_boxes(run: EvalRun, index: int) -> Tensor:
    """Ground-truth boxes of image ``index`` in the evaluated crop's pixels (M, 4) long, inclusive corners.

    Mapped through the eval geometry (``tdam.data.map_boxes``: scaled by new/old size, shifted by the crop offset,
    clipped to the crop); boxes entirely outside the crop are dropped; coordinates truncated to integers as
    wsolevaluation's ``int(x * W' / W)``.
    """
    ds = run.dataset
    boxes, keep = run.geometry.map(ds.boxes(index), ds.image_size(index), return_keep=True)
    return boxes[keep].long()


def crop_objects(run: EvalRun, index: int) -> list[tuple[str, list[int], bool]]:
    """Every drawn object of a tdam-shapes image (also the unlabelled second one): (class name, crop box, primary)."""
    ds = run.dataset
    objs = ds.all_objects(index)
    boxes, keep = run.geometry.map([o["box"] for o in objs], ds.image_size(index), return_keep=True)
    names = run.class_names
    return [(names[o["label"]], b.long().tolist(), bool(o["primary"])) for o, b, k in zip(objs, boxes, keep) if k]


def two_object_indices(run: EvalRun) -> list[int]:
    """Indices of the images holding two objects of different classes (from the tdam-shapes side-car file)."""
    ds = run.dataset
    return [i for i in range(len(ds)) if len({o["label"] for o in ds.all_objects(i)}) >= 2]


def choose_images(
    run: EvalRun, num_images: int, *, two_objects: bool = True, indices: Sequence[int] = (), seed: int = 0
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


def sample_indices(run: EvalRun, max_images: int | None, *, seed: int = 0) -> list[int]:
    """All indices of the split (``max_images`` None, 0 or >= its size), else ``max_images`` drawn uniformly with ``seed``
    (sorted). Readers list images class by class, so a prefix would cover only the first classes."""
    n = len(run.dataset)
    if max_images is not None and max_images < 0:
        raise ValueError(f"max_images must be >= 0 (0 or None = all), got {max_images}")
    if not max_images or max_images >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:max_images].tolist())


def spread(n_items: int, n: int) -> list[int]:
    """``n`` positions evenly spaced over ``range(n_items)`` (all of them when ``n >= n_items``): picks figure
    examples across classes from class-ordered lists."""
    if n >= n_items:
        return list(range(n_items))
    return torch.linspace(0, n_items - 1, n).round().long().tolist()


def load_images(run: EvalRun, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(images (N, 3, H, W) through the eval transform, labels (N,)) of the given dataset indices."""
    if not indices:
        raise ValueError("no image indices given")
    items = [run.dataset[i] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def image_batches(run: EvalRun, indices: Sequence[int], batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of (images, labels) of the given dataset indices, in order."""
    for s in range(0, len(indices), batch_size):
        yield load_images(run, list(indices[s : s + batch_size]))


def localization_batches(
    run: EvalRun, indices: Sequence[int], batch_size: int
) -> Iterator[tuple[Tensor, Tensor, list[Tensor]]]:
    """Batches of (images, labels, per-image GT boxes in crop pixels) for ``evaluate_localization``."""
    if not getattr(run.dataset, "has_boxes", False):
        raise ValueError(f"{run.dataset!r} has no ground-truth boxes (ImageNet: split 'val' with val_boxes/ XML)")
    for s in range(0, len(indices), batch_size):
        chunk = list(indices[s : s + batch_size])
        images, labels = load_images(run, chunk)
        yield images, labels, [crop_boxes(run, i) for i in chunk]
