"""Which recipe a training request gets, and the resolved recipe in words.

One rule: **real data gets the real recipe.** A request that names no profile (``profile=None``) gets

- on the embedded tdam-shapes data (``data_dir`` None): the ``smoke`` overlay (``params/profiles/smoke.yaml``: small
  images, a few epochs, a CPU minute);
- on real data (a ``data_dir``): ``paper``, the explicitly empty overlay (``params/profiles/paper.yaml``): the params
  file's recipe unchanged, as in the paper. Without a params file, the model's own is used (:func:`recipe_for`).

A named profile is always honoured (``smoke`` on real data is a quick run of it). :func:`resolve_profile` applies the
rule; :func:`tdam.train.checkpoint_config` (notebooks 01-09) calls it.

:func:`describe_recipe` states what a config will do before anything runs (data, schedule, batch, learning rate,
updates, device, run folder): the CLI prints it before training and alone with ``--dry-run``; notebook 01 shows it
first. It counts the training images without reading them (file names of an ImageNet folder, or the embedded
dataset's known size); without the data (a ``data_dir`` that does not exist) it assumes the dataset's published size
and says so. ``--dry-run`` (``detail=True``) adds the train and eval transforms and the lr at every epoch boundary;
:func:`run_schedule` is the lr of every update of a config as the trainer will run it (notebook 01 plots it).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

from tdam.paths import params_dir
from tdam.train.config import TrainConfig, model_tag

__all__ = ["AUTO_PROFILES", "resolve_profile", "recipe_for", "train_images", "updates_per_epoch",
           "describe_recipe", "run_schedule", "KNOWN_TRAIN_IMAGES"]

#: what ``profile=None`` resolves to: on the embedded data, and on real data (a ``data_dir``)
AUTO_PROFILES = {"embedded": "smoke", "real": "paper"}
_IMAGENET_DIR = "imagenet"                        # params/imagenet/: the Table 1 files and their recipes
_IMAGENET_KINDS = ("imagenet", "imagenet_wds", "imagenet_parquet")   # formats of the same ImageNet (embedded) data
#: training images of each dataset's published training split, assumed by a dry run when its data_dir is absent
KNOWN_TRAIN_IMAGES = {"imagenet": (1_281_167, "ImageNet-1k's"), "imagenet_wds": (1_281_167, "ImageNet-1k's"),
                      "imagenet_parquet": (1_281_167, "ImageNet-1k's"), "cub200": (5_994, "CUB-200-2011's"),
                      "stanford_dogs": (12_000, "Stanford Dogs'"), "coco2014": (82_783, "COCO 2014's")}


def resolve_profile(profile: str | None, data_dir: str | os.PathLike | None) -> str:
    """The profile a request runs with: ``profile`` when named, else ``'smoke'`` on the embedded data
    (``data_dir`` None) and ``'paper'`` (no overlay: the params file's recipe) on real data."""
    if profile is not None:
        if not isinstance(profile, str) or not profile:
            raise ValueError(f"profile={profile!r}: expected a profile name under {params_dir() / 'profiles'} "
                             f"(e.g. 'smoke', 'paper') or None (automatic: {AUTO_PROFILES})")
        return profile
    if data_dir is not None and not str(data_dir):
        raise ValueError("data_dir='': expected a dataset root, or None for the embedded tdam-shapes data")
    return AUTO_PROFILES["embedded" if data_dir is None else "real"]


def recipe_for(model: Mapping[str, Any]) -> str:
    """The params file (its name under params/imagenet/) whose recipe trains ``model`` (a ``tdam.create_model``
    mapping): ``<model tag>.yaml`` when there is one (``{arch: resnet50, attention: td}`` ->
    ``resnet50_td_joint_t2_m1``), else the architecture's plain-backbone file ``<arch>_plain.yaml`` (its recipe; the
    caller overlays the model). Raises ValueError naming the available files when neither exists."""
    folder = params_dir() / _IMAGENET_DIR
    for name in (model_tag(model), f"{model['arch']}_plain"):
        if (folder / f"{name}.yaml").is_file():
            return name
    available = sorted(p.stem for p in folder.glob("[!_]*.yaml"))
    raise ValueError(f"no params file for the model {dict(model)} (looked for {model_tag(model)}.yaml and "
                     f"{model['arch']}_plain.yaml in {folder}); available: {available}")


def train_images(cfg: TrainConfig) -> int:
    """Images in the training split of ``cfg``'s data, counted without decoding any: an ImageNet folder by the image
    file names in ``train/<class>/``; the embedded ImageNet look-alike by its generator's size table (nothing is
    generated); other datasets (and a folder without ``train/``) by opening their reader (annotation files only), whose
    :class:`~tdam.data.DatasetLayoutError` names a wrong layout."""
    if cfg.dataset in _IMAGENET_KINDS and cfg.data_dir is None:
        from tdam.data.shapes import IMAGENET_CLASSES, SIZES

        return SIZES[cfg.data_size].imagenet_train * len(IMAGENET_CLASSES)
    train = Path(cfg.data_dir).expanduser() / "train" if cfg.data_dir is not None else None
    if cfg.dataset == "imagenet" and train is not None and train.is_dir():
        from tdam.data.base import list_images

        with os.scandir(train) as entries:
            return sum(len(list_images(Path(e.path))) for e in entries if e.is_dir())
    from tdam.data import build_dataset
    from tdam.train.data import data_root

    return len(build_dataset(cfg.dataset, data_root(cfg), "train"))   # a wrong layout: the reader's layout error


def updates_per_epoch(cfg: TrainConfig, images: int, world_size: int = 1) -> tuple[int, int]:
    """``(updates, uncapped)``: optimizer updates per epoch of ``images`` training images on ``world_size``
    processes, as the trainer runs them: each process gets ceil(images / world_size) samples in whole batches of
    ``batch_size``, ``accum_steps`` batches make an update, and ``steps_per_epoch`` caps the count."""
    uncapped = math.ceil(images / world_size) // cfg.batch_size // cfg.accum_steps
    return min(uncapped, cfg.steps_per_epoch or uncapped), uncapped


def _devices(cfg: TrainConfig, gpus: int | None) -> tuple[str, int]:
    """(device type, processes): ``gpus`` as ``tdam.train.run_training`` takes it (0: CPU, 1: one GPU, N: torchrun
    on N GPUs); None: ``cfg.device`` in the processes the launcher (torchrun, SLURM) started."""
    if gpus is None:
        from tdam.train.distributed import _env_rank_info
        from tdam.validation import resolve_device

        _, local_rank, world_size = _env_rank_info()
        return resolve_device(cfg.device, local_rank).type, world_size
    from tdam.train.launch import check_gpus

    check_gpus(gpus)
    return ("cuda", gpus) if gpus else ("cpu", 1)


def _epochs(n: float) -> str:
    return f"{n:g} epoch" + ("" if n == 1 else "s")


def _train_images_or_assumed(cfg: TrainConfig) -> tuple[int, str]:
    """(training images, note): counted when the data is there; else the dataset's published training-split size,
    with a note saying it was assumed."""
    if cfg.data_dir is not None and not Path(cfg.data_dir).expanduser().exists() and cfg.dataset in KNOWN_TRAIN_IMAGES:
        n, whose = KNOWN_TRAIN_IMAGES[cfg.dataset]
        return n, f" (assumed: {whose} {n:,} training images; {cfg.data_dir} does not exist)"
    return train_images(cfg), ""


def describe_recipe(cfg: TrainConfig, gpus: int | None = 0, *, detail: bool = False, schedule: str | None = None,
                    run_folder: str | None = None) -> str:
    """The resolved recipe of ``cfg`` in a few lines: model, data, profile, schedule, global batch, learning rate
    (and its rule), image size, updates per epoch (capped or not) and in total, warm-up, device and run folder.
    ``gpus``: as ``tdam.train.run_training`` takes it (0: CPU, 1: one GPU, N: torchrun on N GPUs); None: the
    config's own ``device`` in the processes the launcher started (the CLI). Reads no image and builds nothing.
    Without the data (a ``data_dir`` that does not exist) it assumes the dataset's published training-split size
    (:data:`KNOWN_TRAIN_IMAGES`) and says so. ``detail=True`` (``--dry-run``) adds the train and eval transforms
    (:func:`tdam.train.build_transforms`) and the lr at every epoch boundary (:func:`tdam.train.lr_schedule`).
    ``schedule`` / ``run_folder``: a task's own lr schedule (a transfer run's) and folder, printed instead of the
    trainer's warm-up line and ``cfg.run_dir()``."""
    device, world = _devices(cfg, gpus)
    images, assumed = _train_images_or_assumed(cfg)
    updates, uncapped = updates_per_epoch(cfg, images, world)
    global_batch = cfg.global_batch(world)
    lr = cfg.resolved_lr(world)
    lr_rule = ("given" if cfg.lr is not None else
               f"lr_base {cfg.lr_base:g} x global batch {global_batch} / {cfg.lr_base_size}")
    data = (f"{cfg.dataset} at {cfg.data_dir}" if cfg.data_dir is not None
            else f"embedded tdam-shapes ({cfg.data_size}, {cfg.dataset} layout)")
    if uncapped == 0:
        per_epoch = f"0 (too few training images for one update of the global batch {global_batch}: training stops)"
    elif updates < uncapped:
        per_epoch = f"{updates} (capped by steps_per_epoch {cfg.steps_per_epoch}; a whole pass is {uncapped})"
    else:
        per_epoch = f"{updates}"
    warmup = (f"{_epochs(cfg.warmup_epochs)} from lr {cfg.warmup_lr:g}, then {cfg.sched}"
              + (f" over the remaining {_epochs(cfg.epochs - cfg.cooldown_epochs - cfg.warmup_epochs)}"
                 if cfg.warmup_prefix else f" over {_epochs(cfg.epochs - cfg.cooldown_epochs)} (warm-up inside)")
              + f" to {cfg.min_lr:g}, stepped per {cfg.lr_step}"
              + (f"; then {_epochs(cfg.cooldown_epochs)} at {cfg.min_lr:g}" if cfg.cooldown_epochs else "")
              if cfg.sched != "none" else "none (sched: none, constant lr)")
    lines = [
        f"model:       {cfg.model_tag()}  {cfg.model}",
        f"data:        {data}; {images} training images{assumed}",
        f"profile:     {cfg.profile or 'none (the config as given)'}",
        f"epochs:      {cfg.epochs}",
        f"batch:       global {global_batch} = {cfg.batch_size} per process x {world} process"
        f"{'es' if world != 1 else ''} x {cfg.accum_steps} accumulation step{'s' if cfg.accum_steps != 1 else ''}",
        f"lr:          {lr:.4g} ({lr_rule}); {cfg.opt}, weight decay {cfg.weight_decay:g}",
        f"image size:  {cfg.img_size} px",
        f"updates:     {per_epoch} per epoch, {updates * cfg.epochs} in total",
        f"schedule:    {schedule}" if schedule is not None else f"warm-up:     {warmup}",
        f"device:      {device}" + (f" x {world}" if world > 1 else ""),
        f"run folder:  {run_folder if run_folder is not None else cfg.run_dir()}",
    ]
    if detail:
        lines += _details(cfg, updates, world)
    return "\n".join(lines)


def run_schedule(cfg: TrainConfig, gpus: int | None = 0) -> tuple[list[float], int]:
    """``(lr of every update, updates per epoch)`` of ``cfg`` as the trainer will run it (``gpus`` as in
    :func:`describe_recipe`; without the data, the dataset's published size). Reads no image."""
    from tdam.train.schedule import lr_schedule

    _, world = _devices(cfg, gpus)
    updates, _ = updates_per_epoch(cfg, _train_images_or_assumed(cfg)[0], world)
    if updates < 1:
        raise ValueError(f"no update per epoch: too few training images for the global batch {cfg.global_batch(world)}")
    return lr_schedule(cfg, updates, world), updates


def _details(cfg: TrainConfig, updates: int, world: int) -> list[str]:
    """The train and eval transforms and the lr at each epoch's first update."""
    from tdam.train.schedule import epoch_start_lrs, lr_schedule
    from tdam.train.transforms import build_transforms

    train_tf, eval_tf = build_transforms(cfg)
    out = ["train transform:", *(f"  {line.removeprefix('    ')}" for line in repr(train_tf).splitlines()[1:-1]),
           "eval transform:", *(f"  {line.removeprefix('    ')}" for line in repr(eval_tf).splitlines()[1:-1])]
    if updates < 1:
        return out + ["lr per epoch: none (no update)"]
    starts = epoch_start_lrs(lr_schedule(cfg, updates, world), updates)
    cells = [f"{e + 1}: {lr:.4g}" for e, lr in enumerate(starts)]
    out.append("lr at the first update of each epoch:")
    out += [f"  {', '.join(cells[i:i + 8])}" for i in range(0, len(cells), 8)]
    return out
