"""The trainer: one engine for every backbone and attention (the paper's timm-style recipes), its CLI, cached runs.

- :mod:`tdam.train.config`: :class:`TrainConfig` (validated dataclass; the model is its ``model`` mapping, the
  keyword arguments of ``tdam.create_model``) and :func:`load_config` (params YAML with ``base:`` inheritance, profile
  overlays, overrides).
- :mod:`tdam.train.engine`: the training step (:func:`train_one_epoch`), :func:`evaluate`, the pluggable
  :class:`Task` (default :class:`ClassificationTask`).
- :mod:`tdam.train.trainer`: :func:`train` - a whole run: checkpoints, resume, signals, metrics files.
- :mod:`tdam.train.distributed`: DDP set-up for torchrun / SLURM; :mod:`tdam.train.launch`: notebook launcher.
- :mod:`tdam.train.cache`: :func:`ensure_run`, the one cache-or-train mechanism (lock, reuse, resume, train), and
  :func:`ensure_checkpoint` for notebooks 02-09; :mod:`tdam.train.plots`: curves.
- CLI: ``python -m tdam.train --config params/imagenet/<model>.yaml [--profile smoke] [--key value ...]``.
"""
from tdam.train.cache import checkpoint_config, ensure_checkpoint, ensure_run, find_checkpoint
from tdam.train.config import TrainConfig, load_config
from tdam.train.engine import (ClassificationTask, EvalContext, NonFiniteLossError, Task, TrainState, evaluate,
                               train_one_epoch)
from tdam.train.launch import check_gpus, run_training
from tdam.train.plots import plot_curves, read_metrics
from tdam.train.trainer import RunResult, build_model, train

__all__ = [
    "TrainConfig", "load_config", "train", "build_model", "RunResult", "run_training", "check_gpus",
    "ensure_checkpoint", "checkpoint_config", "ensure_run", "find_checkpoint", "Task", "ClassificationTask",
    "EvalContext", "TrainState", "NonFiniteLossError", "train_one_epoch", "evaluate", "plot_curves", "read_metrics",
]
