"""The trainer: one engine for every backbone and attention (the paper's timm-style recipes), its CLI, cached runs.

- :mod:`tdam.train.config`: :class:`TrainConfig` (validated dataclass; the model is its ``model`` mapping, the
  keyword arguments of ``tdam.create_model``) and :func:`load_config` (params YAML with ``base:`` inheritance, profile
  overlays, overrides).
- :mod:`tdam.train.recipe`: which params file and profile a request gets (:func:`recipe_for`,
  :func:`resolve_profile`) and :func:`describe_recipe`, the resolved recipe in words.
- :mod:`tdam.train.schedule`: :func:`lr_schedule`, the lr of every update of a run; :mod:`tdam.train.transforms`:
  :func:`build_transforms`, its train and eval transforms; :mod:`tdam.train.provenance`: where each recipe value
  comes from (:func:`explain_config`, ``--explain``).
- :mod:`tdam.train.engine`: the training step (:func:`train_one_epoch`), :func:`evaluate`, the pluggable
  :class:`Task` (default :class:`ClassificationTask`).
- :mod:`tdam.train.trainer`: :func:`train` - a whole run: checkpoints, resume, signals, metrics files.
- :mod:`tdam.train.distributed`: DDP set-up for torchrun / SLURM; :mod:`tdam.train.launch`: notebook launcher.
- :mod:`tdam.train.cache`: :func:`ensure_run`, the one cache-or-train mechanism (lock, reuse, resume, train), and
  :func:`ensure_checkpoint` / :func:`checkpoint_config` for the notebooks; :mod:`tdam.train.plots`: curves.
- CLI: ``python -m tdam.train --config params/imagenet/<model>.yaml [--profile smoke] [--key value ...]``.

The names below are imported on first use (``tdam.train.train`` loads torch, the trainer and timm then), so the CLI's
``--help`` and config checks do not pay for modules they do not use. Submodules are attributes too
(``tdam.train.cache.train_or_reuse``).
"""
from __future__ import annotations

from tdam._lazy import lazy_attributes

_EXPORTS = {   # public name -> the module that defines it
    "TrainConfig": "config", "load_config": "config",
    "recipe_for": "recipe", "resolve_profile": "recipe", "describe_recipe": "recipe", "run_schedule": "recipe",
    "lr_schedule": "schedule", "build_transforms": "transforms", "explain_config": "provenance",
    "train": "trainer", "build_model": "trainer", "RunResult": "trainer",
    "run_training": "launch", "check_gpus": "launch",
    "ensure_checkpoint": "cache", "checkpoint_config": "cache", "ensure_run": "cache", "find_checkpoint": "cache",
    "Task": "engine", "ClassificationTask": "engine", "EvalContext": "engine", "TrainState": "engine",
    "NonFiniteLossError": "engine", "train_one_epoch": "engine", "evaluate": "engine",
    "plot_curves": "plots", "read_metrics": "plots", "plot_lr_schedule": "plots",
}
__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
