"""The training run: build everything from a :class:`TrainConfig`, loop over epochs, checkpoint, log, resume.

``train(cfg)`` is what the CLI, notebook 01 and :func:`tdam.train.ensure_checkpoint` call. Per epoch it runs
:func:`tdam.train.engine.train_one_epoch` and the task's evaluation, appends a row to ``metrics.csv`` /
``metrics.jsonl`` and writes ``last.pth`` (and ``best.pth`` on a new best top-1, ``best_ema.pth`` on a new best
EMA top-1 when ``model_ema``) atomically. The learning rate of every update comes from
:func:`tdam.train.lr_schedule`; the CUDA settings (cuDNN autotuning, TF32) from
:func:`tdam.train.state.gpu_settings`. The run folder also holds ``config.yaml`` (the resolved config), ``env.json``
(versions, device, precision, GPU settings, derived lr/batch), ``train.log``, ``summary.json``, ``curves.png``/``.pdf``
and ``best.safetensors`` (weights only, for sharing) once the run has finished, and ``tb/`` (live TensorBoard curves,
:mod:`tdam.train.tensorboard`).

Run folder (:mod:`tdam.runs`): one live run per folder (its one lock, ``.lock``, :mod:`tdam.runs.lock`; a second
start is refused naming the first one's PID and host); ``run.json`` records the run's identity and, for a run that
continues another (:mod:`tdam.train.lineage`), its parent. Before anything is written, the data's class count is checked against the model's
``num_classes``, temporary files of an interrupted checkpoint write are removed and a resume checkpoint's config is
compared with the new one: a change of the model or the data is refused
(:class:`~tdam.errors.ResumeMismatchError` listing the differences), schedule changes (epochs, lr, warm-up, ...)
are logged and appended to ``config_history.jsonl``. A fresh start (``resume: false``) in a folder that holds a
``last.pth`` is refused: nothing of a run is overwritten. A refused start removes the run folder it created. Write
failures (no space, read-only) raise :class:`~tdam.errors.RunWriteError` naming the file.

Output (rank 0): a header line (run folder, model, device, lr, global batch, updates per epoch); a progress line
every ``log_interval`` updates (epoch, update in the epoch, step of the run, loss, lr, img/s, ETA) written to
``train.log`` and, unless a tqdm bar is drawn on this terminal (``progress``), to stdout, so SLURM logs and papermill
show progress within an epoch; one line per epoch (losses, accuracy, lr, img/s, data wait, ETA). Each line is
flushed. :meth:`RunResult.done_line` is the closing line the CLI prints.

Signals: SIGTERM / SIGINT set a flag; at the next optimizer update every rank stops, rank 0 writes a resumable
mid-epoch ``last.pth`` and :func:`train` returns with ``interrupted=True`` (a second Ctrl-C raises at once).
A non-finite loss raises :class:`~tdam.train.engine.NonFiniteLossError` without writing anything, so ``last.pth``
stays the last good state.
"""
from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import socket
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn
import yaml

import tdam
from tdam.checkpoint import export_safetensors, read_checkpoint, remove_stale_temps, save_checkpoint
from tdam.errors import ClassCountError, ConfigError, ResumeMismatchError, writing
from tdam.progress import duration
from tdam.runs import (BEST_EMA_FILE, BEST_FILE, CONFIG_FILE, ENV_FILE, LAST_FILE, LOG_FILE, SAFETENSORS_FILE,
                       SUMMARY_FILE, RunLock, link_file, read_record, write_json_atomic, write_record, write_text_atomic)
from tdam.train.config import TrainConfig, config_changes, describe_changes, semantic_config
from tdam.train.lineage import resolve_run
from tdam.train import data as run_data   # looked up at call time: a patched tdam.train.data applies here too
from tdam.train.distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from tdam.train.engine import ClassificationTask, EpochMeter, EvalContext, Task, TrainState, train_one_epoch
from tdam.train.schedule import ListScheduler, lr_schedule
from tdam.train.state import (deterministic_algorithms, gpu_settings, rng_state, seed_everything, set_rng_state,
                              versions)
from tdam.train.tensorboard import RunLogger, accuracy_per_step

__all__ = ["train", "build_model", "build_ema", "RunResult", "resolve_amp", "METRIC_COLUMNS"]

METRIC_COLUMNS = ("epoch", "step", "lr", "train_loss", "val_loss", "val_top1", "val_top5", "ema_val_top1",
                  "ema_val_top5", "images_per_s", "data_wait", "epoch_time_s", "peak_mem_mb", "bad_images")


@dataclass
class RunResult:
    """Outcome of :func:`train`: the run folder, per-epoch metrics and the checkpoints."""
    run_dir: Path
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    num_classes: int
    interrupted: bool = False
    primary_metric: str = "top1"
    env: dict[str, Any] = field(default_factory=dict)

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / LAST_FILE

    @property
    def best_checkpoint(self) -> Path | None:
        p = self.run_dir / BEST_FILE
        return p if p.exists() else None

    @property
    def best_ema_checkpoint(self) -> Path | None:
        """``best_ema.pth``: the epoch of the best EMA evaluation (``model_ema`` runs), else None."""
        p = self.run_dir / BEST_EMA_FILE
        return p if p.exists() else None

    @property
    def checkpoint(self) -> Path:
        """``best.pth`` if written, else ``last.pth``."""
        return self.best_checkpoint or self.last_checkpoint

    @property
    def metrics(self):
        """The per-epoch metrics as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.history, columns=[c for c in METRIC_COLUMNS if any(c in r for r in self.history)])

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}

    @property
    def chance(self) -> float:
        """Top-1 accuracy (%) of a uniform guess."""
        return 100.0 / self.num_classes

    def done_line(self) -> str:
        """The line that ends a finished run (the CLI's last): ``done: best val top-1 70.6% at epoch 3; checkpoint
        runs/01_train_imagenet/<run>/best.pth`` (the path relative to the working folder when inside it)."""
        label = {"top1": "top-1", "top5": "top-5"}.get(self.primary_metric, self.primary_metric)
        path = self.checkpoint
        if path.resolve().is_relative_to(Path.cwd().resolve()):
            path = path.resolve().relative_to(Path.cwd().resolve())
        if self.best is None:
            return f"done: no validation {label} recorded; checkpoint {path}"
        return (f"done: best val {label} {self.best[f'val_{self.primary_metric}']:.1f}% at epoch "
                f"{self.best['epoch']}; checkpoint {path}")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: 'auto' -> bf16 on CUDA where supported, else fp16 (with a GradScaler); fp32 (None) on CPU."""
    if amp == "fp32" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device: valid choices on CPU are 'auto', 'bf16', 'fp32'")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """``tdam.create_model(**cfg.model)``: the model description unchanged, with ``num_classes`` (the data's class
    count) added unless the description names it."""
    return tdam.create_model(**{"num_classes": num_classes, **cfg.model})


def build_ema(model: nn.Module, cfg: TrainConfig) -> Any:
    """The EMA of ``model``'s weights when ``cfg.model_ema`` (else None): timm's ``ModelEmaV3`` with the configured
    decay, applied from the first update on (the engine calls ``update(model)`` without a step count, so no
    warm-up of the decay): after update k, ``ema = decay x ema + (1 - decay) x weights`` for floating-point
    parameters and buffers, starting from the initial weights. That is ConvNeXt's EMA (``main.py`` line 314: timm's
    ``ModelEma``, constant decay; the authors' script, line 576: ``ModelEmaV2``, the same rule)."""
    if not cfg.model_ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=cfg.model_ema_decay)


def train(cfg: TrainConfig, *, task: Task | None = None, datasets: tuple[Any, Any] | None = None,
          stop_at_step: int | None = None) -> RunResult:
    """Train (or resume) the run described by ``cfg``; see the module docstring.

    ``task``: the objective (default :class:`ClassificationTask` from the config). ``datasets``: a (train, val) pair
    to use instead of reading ``cfg.dataset`` from ``cfg.data_dir``. ``stop_at_step``: behave as if pre-empted after
    that many optimizer updates (a resumable checkpoint is written), for pre-emption drills and tests.
    """
    cfg.validate()
    dist_info = init_distributed(cfg.device)
    started_group = dist_info.enabled
    try:
        cfg = resolve_run(cfg, create=dist_info.is_main)      # which folder; a resume's parent (tdam.train.lineage)
        return _Run(cfg, dist_info, task, datasets, stop_at_step).run()
    finally:
        if started_group:
            cleanup()




class _Log:
    """Rank-0 log: stdout (the run's lines, flushed one by one) and ``train.log`` (everything)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __call__(self, msg: str, *, echo: bool = True) -> None:
        if self.path is None:
            return
        with writing(self.path), open(self.path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
        if echo:
            print(msg, flush=True)


class _StopFlag:
    """SIGTERM/SIGINT -> stop at the next update (a second SIGINT raises KeyboardInterrupt immediately)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def handler(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    @contextmanager
    def installed(self) -> Iterator["_StopFlag"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self.handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class _Run:
    def __init__(self, cfg: TrainConfig, dist_info: DistInfo, task: Task | None, datasets: Any,
                 stop_at_step: int | None) -> None:
        self.cfg, self.dist, self.task, self.datasets, self.stop_at_step = cfg, dist_info, task, datasets, stop_at_step
        self.run_dir = cfg.run_dir()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_ema: dict[str, Any] | None = None     # the best EMA evaluation (model_ema): best_ema.pth
        self.stop = _StopFlag()
        self.resumed_from: Path | None = None
        self.lock: RunLock | None = None                # rank 0: the run folder's lock (tdam.runs.lock)
        self.created_dir = False                        # rank 0 created the run folder in this call
        self.record: dict[str, Any] | None = None       # the run record (run.json): identity, parent
        self.resume_ck: tuple[Path, dict[str, Any]] | None = None
        self.schedule_changes: dict[str, tuple[Any, Any]] = {}
        self.removed_temps: Any = None
        self.t_start, self.start_step = time.perf_counter(), 0   # when and at which step this process began training
        self.echo_progress = True                       # progress lines also on stdout (no bar on this terminal)

    # ------------------------------------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Everything before the first update. A failure here removes the run folder if this call created it, so a
        refused start leaves nothing behind."""
        try:
            self._setup()
        except BaseException:
            self.discard_new_run_dir()
            raise

    def _setup(self) -> None:
        cfg, d = self.cfg, self.dist
        train_set, val_set = self.datasets if self.datasets is not None else run_data.build_datasets(cfg)
        self.num_classes = self.check_class_count(train_set)
        if d.is_main:
            self.open_run_dir()
        barrier()
        self.log = _Log(self.run_dir / LOG_FILE if d.is_main else None)
        if d.is_main:
            self.report_run_dir()

        seed_everything(cfg.seed)                       # identical initial weights on every rank
        task_model = getattr(self.task, "build_model", None)      # task hook: e.g. WS-DAN on a trained backbone
        model = task_model(self.num_classes) if task_model is not None else build_model(cfg, self.num_classes)
        self.model_config = dict(model.model_config)
        model.to(d.device)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else d.device.type == "cuda"
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model                              # the plain module: state dicts, EMA, evaluation
        from timm.optim import create_optimizer_v2

        ema = build_ema(model, cfg)
        self.lr = cfg.resolved_lr(d.world_size)
        build_optimizer = getattr(self.task, "build_optimizer", None)
        optimizer = (build_optimizer(model, cfg, self.lr) if build_optimizer is not None
                     else create_optimizer_v2(model, opt=cfg.opt, lr=self.lr, weight_decay=cfg.weight_decay,
                                              momentum=cfg.momentum))
        self.amp_dtype = resolve_amp(cfg.amp, d.device)
        scaler = torch.amp.GradScaler(d.device.type, enabled=self.amp_dtype == torch.float16)
        self.train_loader, self.val_loader, self.sampler = run_data.build_loaders(cfg, train_set, val_set, d)
        batches = len(self.train_loader) // cfg.accum_steps
        if batches < 1:
            raise ValueError(f"the training split has {len(train_set)} images: too few for one update of "
                             f"{cfg.batch_size} x {cfg.accum_steps} x {d.world_size} (batch x accum x processes)")
        self.updates_per_epoch = min(batches, cfg.steps_per_epoch or batches)
        scheduler = None
        build_scheduler = getattr(self.task, "build_scheduler", None)
        if build_scheduler is not None:                 # task hook: a per-update scheduler (step_update/state_dict)
            scheduler = build_scheduler(optimizer, cfg, self.updates_per_epoch)
        elif cfg.sched != "none":                       # the run's whole schedule (tdam.train.schedule)
            scheduler = ListScheduler(optimizer, lr_schedule(cfg, self.updates_per_epoch, d.world_size), self.lr)
        run_model: nn.Module = model
        if cfg.compile:
            run_model = torch.compile(run_model)
        if d.enabled:
            run_model = nn.parallel.DistributedDataParallel(
                run_model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        self.state = TrainState(model=run_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema)
        self.task = self.task or ClassificationTask(
            self.num_classes, smoothing=cfg.smoothing, mixup=cfg.mixup, cutmix=cfg.cutmix, train_on=cfg.train_on)
        self.ctx = EvalContext(device=d.device, amp_dtype=self.amp_dtype, channels_last=self.channels_last,
                               max_batches=cfg.val_batches)
        seed_everything(cfg.seed + d.rank)              # per-rank augmentation / Mixup / drop-path streams
        if cfg.resume:
            self.restore()
        self.env = {"versions": versions(d.device), "world_size": d.world_size, "device": str(d.device),
                    "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
                    "channels_last": self.channels_last, "lr": self.lr, **self.gpu,
                    "global_batch": cfg.global_batch(d.world_size), "updates_per_epoch": self.updates_per_epoch,
                    "num_classes": self.num_classes, "train_images": len(train_set), "val_images": len(val_set),
                    "peak_mem": "torch.cuda.max_memory_allocated" if d.device.type == "cuda" else "process max RSS",
                    "model_config": self.model_config}
        self.board = RunLogger(self.run_dir, tensorboard=cfg.tensorboard, wandb=cfg.wandb, is_main=d.is_main,
                               purge_step=self.state.step if self.resumed_from else None, config=cfg.to_dict())
        if d.is_main:
            self.write_config()
            with writing(self.run_dir / ENV_FILE):
                write_json_atomic(self.run_dir / ENV_FILE, self.env)

    # --------------------------------------------------------------------------- run folder: lock, resume check
    def check_class_count(self, train_set: Any) -> int:
        """The model's class count: the mapping's ``num_classes`` if set, which must then equal the data's (checked
        here, before the first update), else the data's."""
        data_classes = len(train_set.classes) if hasattr(train_set, "classes") else None
        given = self.cfg.model.get("num_classes")
        if given is None:
            return data_classes
        if data_classes is not None and given != data_classes:
            where = getattr(train_set, "root", None) or self.cfg.data_dir or "the embedded dataset"
            raise ClassCountError(f"model.num_classes={given} but the {self.cfg.dataset} data at {where} has "
                                  f"{data_classes} classes; remove model.num_classes (it defaults to the data's) "
                                  f"or point data_dir at the intended dataset")
        return given

    def open_run_dir(self) -> None:
        """Rank 0: create the run folder, take its lock (a second live run is refused), remove temporary files
        that a killed run left behind, and read and compare the resume checkpoint - all before anything is
        written."""
        self.created_dir = not self.run_dir.is_dir()
        self.lock = RunLock(self.run_dir, wait=False).acquire()
        self.removed_temps = remove_stale_temps(self.run_dir)
        self.record = read_record(self.run_dir)
        if self.cfg.resume:
            self.resume_ck = self.read_resume()
        elif (self.run_dir / LAST_FILE).is_file():     # never overwrite a run's checkpoints by a fresh start
            raise ConfigError(f"{self.run_dir} already holds a run ({self.run_dir / LAST_FILE}); continue it with "
                              f"resume: true (--resume true), or remove the folder or set another `name`/`output_dir` "
                              f"to start over")
        if self.record is None:                         # a run from scratch (a continued one was recorded by lineage)
            self.record = {"identity": self.cfg.identity()}
            write_record(self.run_dir, identity=self.cfg.identity(), kind=self.run_dir.parent.name,
                         request=semantic_config(self.cfg))

    def report_run_dir(self) -> None:
        """Rank 0: log what :meth:`open_run_dir` found (a stale lock taken over, temporary files removed, schedule
        changes of a resume)."""
        if self.lock is not None and (msg := self.lock.takeover_message()):
            self.log(msg)
        if self.removed_temps:
            self.log(f"removed {len(self.removed_temps)} temporary file(s) left by an interrupted checkpoint write")
        if self.schedule_changes:
            self.log(f"resume: schedule changed: {describe_changes(self.schedule_changes)} "
                     f"(recorded in config_history.jsonl)")

    def read_resume(self) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint to resume, its config compared with this run's: fields that change the model or the data
        (or anything else learned, other than the schedule) are refused with the difference; schedule changes
        (more epochs, another lr) are accepted and reported."""
        cfg = self.cfg
        path = self.run_dir / LAST_FILE                 # resolve_run made a checkpoint to continue this folder's own
        if not path.is_file():
            if cfg.resume == "auto":
                return None                             # first start of a (re)queued job: train from scratch
            raise FileNotFoundError(f"resume: no checkpoint at {path} (tdam.train.lineage.resolve_run names it)")
        ck = read_checkpoint(path)
        missing = [k for k in ("model", "optimizer", "epoch", "step", "rng", "config") if k not in ck]
        if missing:
            raise ValueError(f"resume: {path} is not a resumable tdam training checkpoint (missing {missing})")
        refused, self.schedule_changes = config_changes(ck["config"], cfg)
        parent = (self.record or {}).get("parent") or {}
        from_parent = (int(ck["epoch"]), int(ck["step"])) == (parent.get("epoch"), parent.get("step"))
        if self.schedule_changes and not from_parent:   # a changed schedule is a new run (tdam.train.lineage)
            refused.update(self.schedule_changes)
        if refused:
            raise ResumeMismatchError(f"resume: {path} was trained with another config; these fields differ: "
                                      f"{describe_changes(refused)} (a changed schedule continues as a new run: "
                                      f"leave name/output_dir unset; another model or data: leave out --resume)")
        return path, ck

    def write_config(self) -> None:
        """``config.yaml`` (the config in force) and one line per start/resume in ``config_history.jsonl`` (with the
        schedule changes of a resume), so the stored config keeps its history."""
        cfg = self.cfg
        entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(),
                                 "host": socket.gethostname()}
        if self.resumed_from is not None:
            entry.update(event="resume", checkpoint=str(self.resumed_from),
                         changes={k: list(v) for k, v in self.schedule_changes.items()})
        else:
            entry.update(event="start", config=cfg.to_dict())
        with writing(self.run_dir / CONFIG_FILE):
            write_text_atomic(self.run_dir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        with writing(self.run_dir / "config_history.jsonl"), open(self.run_dir / "config_history.jsonl", "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")

    def discard_new_run_dir(self) -> None:
        """After a refused start: release the lock, and remove the run folder if this call created it."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.created_dir and self.dist.is_main:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    @contextmanager
    def holding_run_dir(self) -> Iterator[None]:
        """The run folder's lock is released when the run ends, however it ends; a run that fails before its first
        checkpoint (bad data met in the first epoch: a stream has no index to check up front) is a failed start,
        and the folder is removed if this call created it."""
        try:
            yield
        except BaseException:
            if not (self.run_dir / LAST_FILE).is_file():
                self.discard_new_run_dir()
            raise
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    # ------------------------------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict[str, Any]:
        s = self.state
        rng = [rng_state()]
        if self.dist.enabled:                           # every rank's generators, so each resumes its own stream
            rng = [None] * self.dist.world_size
            torch.distributed.all_gather_object(rng, rng_state())
        ckpt: dict[str, Any] = {
            "model": self.model.state_dict(), "model_config": self.model_config, "config": self.cfg.to_dict(),
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict() if s.scheduler is not None else None,
            "scaler": s.scaler.state_dict(), "epoch": s.epoch, "epoch_step": s.epoch_step, "step": s.step,
            "epoch_meter": s.meter.state_dict(), "rng": rng, "world_size": self.dist.world_size,
            "metrics": {"history": self.history, "best": self.best, "best_ema": self.best_ema},
            "tdam_version": tdam.__version__,
        }
        if s.ema is not None:
            ckpt["model_ema"] = s.ema.module.state_dict()
        return ckpt

    def save(self, *, best: bool = False, best_ema: bool = False) -> None:
        """``last.pth``; also ``best.pth`` (best non-EMA evaluation) and ``best_ema.pth`` (best EMA evaluation) when
        this epoch set them, as ConvNeXt's main.py lines 412-445 save "best" and "best-ema"."""
        ckpt = self.checkpoint()                        # collective under DDP: every rank takes part
        if self.dist.is_main:
            last = save_checkpoint(ckpt, self.run_dir / LAST_FILE)
            if best:
                link_file(last, self.run_dir / BEST_FILE)
            if best_ema:
                link_file(last, self.run_dir / BEST_EMA_FILE)
        barrier()

    def restore(self) -> None:
        cfg, s = self.cfg, self.state
        if self.resume_ck is None:
            return                                      # resume 'auto' and no last.pth yet: train from scratch
        path, ck = self.resume_ck
        try:
            self.model.load_state_dict(ck["model"])
        except RuntimeError as e:                       # the configs agree but the weights do not (another version)
            first = str(e).strip().splitlines()[0:2]
            raise ResumeMismatchError(f"resume: the weights in {path} do not fit the model of this config: "
                                      f"{' '.join(first)}") from None
        if s.ema is not None:
            if "model_ema" not in ck:
                raise ValueError(f"resume: model_ema=True but {path} has no EMA weights")
            s.ema.module.load_state_dict(ck["model_ema"])
        s.optimizer.load_state_dict(ck["optimizer"])
        if s.scheduler is not None and ck.get("scheduler") is not None and not self.schedule_changes:
            # a changed schedule (more epochs, another lr) keeps the scheduler built from the new config: the stored
            # state holds the old length and would, e.g., keep an extended cosine run at its final lr of 0
            s.scheduler.load_state_dict(ck["scheduler"])
        if s.scaler.is_enabled() and ck.get("scaler"):
            s.scaler.load_state_dict(ck["scaler"])
        s.epoch, s.step, s.epoch_step = int(ck["epoch"]), int(ck["step"]), int(ck.get("epoch_step", 0))
        if s.epoch_step and int(ck.get("world_size", 1)) != self.dist.world_size:
            raise ValueError(f"resume: {path} was saved mid-epoch with {ck.get('world_size')} processes; resume it "
                             f"with the same number of processes (now {self.dist.world_size})")
        s.meter = EpochMeter(**ck.get("epoch_meter", {}))
        self.history = list(ck["metrics"]["history"])
        self.best = ck["metrics"]["best"]
        self.best_ema = ck["metrics"].get("best_ema")
        self.link_best_if_missing(path)
        rngs = ck["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:
            seed_everything(cfg.seed + self.dist.rank + 1000 * s.step)
        if s.scheduler is not None:
            s.scheduler.step_update(num_updates=s.step)
        if self.dist.is_main:                           # metrics files = the checkpoint's history (drop later rows)
            self.write_metrics(rewrite=True)
        self.resumed_from = path

    # ------------------------------------------------------------------------------------------------ metrics
    def write_metrics(self, rewrite: bool = False) -> None:
        rows = self.history if rewrite else self.history[-1:]
        csv_path, jsonl_path = self.run_dir / "metrics.csv", self.run_dir / "metrics.jsonl"
        mode = "w" if rewrite or not csv_path.exists() else "a"
        with writing(csv_path), open(csv_path, mode, newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
            if mode == "w":
                w.writeheader()
            w.writerows(rows)
        with writing(jsonl_path), open(jsonl_path, mode) as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    def peak_memory_mb(self) -> float:
        if self.dist.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.dist.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # ------------------------------------------------------------------------------------------------ the loop
    def stop_requested(self, state: TrainState) -> bool:
        """A signal arrived (on any rank) or ``stop_at_step`` is reached; every rank gets the same answer."""
        stop = self.stop.signal is not None or (self.stop_at_step is not None and state.step >= self.stop_at_step)
        if self.dist.enabled:
            flag = torch.tensor([float(stop)], device=self.dist.device)
            stop = bool(all_reduce_sum(flag).item() > 0)
        return stop

    def on_update(self, state: TrainState) -> bool:
        if self.stop_requested(state):
            return True
        if self.cfg.checkpoint_every_steps and state.step % self.cfg.checkpoint_every_steps == 0:
            self.save()
        if state.step % self.cfg.log_interval == 0:
            self.log(self.progress_line(state), echo=self.echo_progress)
            self.board.update(state.step, state.last_finite_loss, state.lr)
        return False

    def progress_line(self, s: TrainState) -> str:
        """``epoch 2/3 update 5/25 step 30/75 loss 2.3012 lr 0.025 41.2 img/s ETA 1m05s``: the update within the
        epoch, the step of the whole run, the last loss, the learning rate, the epoch's throughput so far (all
        processes) and the time left at this run's pace so far (validation included)."""
        m, total = s.meter, self.updates_per_epoch * self.cfg.epochs
        busy = m.data_time + m.step_time
        img_s = m.samples * self.dist.world_size / busy if busy > 0 else float("nan")
        done_here = s.step - self.start_step
        elapsed = time.perf_counter() - self.t_start
        eta = duration(elapsed / done_here * (total - s.step)) if done_here > 0 else "?"
        return (f"  epoch {s.epoch + 1}/{self.cfg.epochs} update {s.epoch_step}/{self.updates_per_epoch} step "
                f"{s.step}/{total} loss {s.last_finite_loss:.4f} lr {s.lr:.4g} {img_s:.1f} img/s ETA {eta}")

    def run(self) -> RunResult:
        cfg = self.cfg
        with (self.stop.installed(), deterministic_algorithms(cfg.deterministic),
              gpu_settings(self.dist.device, cudnn_benchmark=cfg.cudnn_benchmark and not cfg.deterministic,
                           tf32=cfg.tf32) as self.gpu,
              self.holding_run_dir()):
            self.setup()
            s = self.state
            self.log(f"run {self.run_dir} | {cfg.model_tag()} | {self.num_classes} classes | device "
                     f"{self.env['device']} x{self.dist.world_size} | {self.env['amp']} | lr {self.lr:.4g} | "
                     f"global batch {self.env['global_batch']} | {self.updates_per_epoch} updates/epoch"
                     + ("" if not self.resumed_from else f" | resumed at epoch {s.epoch + 1} update {s.epoch_step}"
                        if s.epoch < cfg.epochs else f" | all {cfg.epochs} epochs trained: writing the outputs only"))
            self.t_start, self.start_step = time.perf_counter(), s.step
            epochs_done_here = 0
            while s.epoch < cfg.epochs:
                self.sampler.set_position(s.epoch, s.epoch_step * cfg.accum_steps * cfg.batch_size)
                self.train_loader.generator.manual_seed(cfg.seed + self.dist.rank + 7919 * s.epoch)  # worker seeds
                progress = self.progress_bar(s)
                self.echo_progress = progress is None or not sys.stdout.isatty()   # lines would break a bar
                try:
                    cut = train_one_epoch(s, self.task, self.train_loader, self.ctx, updates=self.updates_per_epoch,
                                          accum_steps=cfg.accum_steps, on_update=self.on_update,
                                          progress=progress)
                finally:
                    if progress is not None:
                        progress.close()
                if cut:
                    self.save()
                    self.log(f"stopped at epoch {s.epoch + 1} update {s.epoch_step} (step {s.step}"
                             f"{', signal ' + signal.Signals(self.stop.signal).name if self.stop.signal else ''}); "
                             f"resumable checkpoint: {self.run_dir / 'last.pth'}")
                    return self.result(interrupted=True)
                row = self.finish_epoch()
                epochs_done_here += 1
                eta = (time.perf_counter() - self.t_start) / epochs_done_here * (cfg.epochs - s.epoch)
                self.log(f"epoch {row['epoch']}/{cfg.epochs} train_loss {row['train_loss']:.4f} "
                         + (f"val_top1 {row['val_top1']:.2f} val_top5 {row['val_top5']:.2f} "
                            if row.get("val_top1") is not None else "")
                         + f"lr {row['lr']:.4g} {row['images_per_s']:.1f} img/s data {100 * row['data_wait']:.0f}% "
                         f"ETA {duration(eta)}"
                         + (f" | skipped {row['bad_images']} unreadable image(s), e.g. "
                            f"{self.train_loader.bad_images[0]}" if row["bad_images"] else ""))
                if s.epoch < cfg.epochs and self.stop_requested(s):
                    self.log(f"stopped after epoch {s.epoch} (step {s.step}"
                             f"{', signal ' + signal.Signals(self.stop.signal).name if self.stop.signal else ''}); "
                             f"resumable checkpoint: {self.run_dir / 'last.pth'}")
                    return self.result(interrupted=True)
            if self.dist.is_main:
                self.write_outputs()
            return self.result(interrupted=False)

    def link_best_if_missing(self, last: Path) -> None:
        """Rank 0: ``best.pth`` (``best_ema.pth``) from ``last`` when the best (best EMA) epoch is the one ``last``
        holds and the link is missing (a run killed between saving ``last.pth`` and linking it)."""
        for best, name in ((self.best, BEST_FILE), (self.best_ema, BEST_EMA_FILE)):
            if (self.dist.is_main and best is not None and best.get("epoch") == self.state.epoch
                    and not (self.run_dir / name).is_file()):
                link_file(last, self.run_dir / name)

    def write_outputs(self) -> None:
        """Rank 0, at the end of a run (also of one trained to the end whose outputs were missing): the best weights
        as safetensors, ``summary.json`` (written last and atomically: a run with a summary has every other output),
        the curves."""
        if (best := self.run_dir / BEST_FILE).is_file():              # weights-only file for sharing
            export_safetensors(read_checkpoint(best), self.run_dir / SAFETENSORS_FILE,
                               metadata={"run": self.run_dir.name, "best": self.best})
        self.plot()
        summary = {"run_dir": str(self.run_dir), "identity": (self.record or {}).get("identity"),
                   "parent": (self.record or {}).get("parent"),
                   "final": self.history[-1] if self.history else None, "best": self.best, "best_ema": self.best_ema,
                   "num_classes": self.num_classes, "chance_top1": 100 / self.num_classes,
                   "config": self.cfg.to_dict(), "env": self.env}
        with writing(self.run_dir / SUMMARY_FILE):
            write_json_atomic(self.run_dir / SUMMARY_FILE, summary)

    def finish_epoch(self) -> dict[str, Any]:
        s, d = self.state, self.dist
        m = s.meter
        totals = torch.tensor([m.loss_sum, m.samples], dtype=torch.float64, device=d.device)
        all_reduce_sum(totals)
        busy = m.data_time + m.step_time
        row: dict[str, Any] = {
            "epoch": s.epoch + 1, "step": s.step, "lr": s.lr, "train_loss": float(totals[0] / totals[1]),
            "images_per_s": float(totals[1]) / busy if busy > 0 else float("nan"),
            "data_wait": m.data_time / busy if busy > 0 else float("nan"), "epoch_time_s": busy,
            "peak_mem_mb": self.peak_memory_mb(), "bad_images": run_data.bad_image_count(self.train_loader),
        }
        val = self.task.evaluate(self.model, self.val_loader, self.ctx)
        row.update({f"val_{k}": v for k, v in val.items() if k != "samples"})
        if s.ema is not None:
            ema_val = self.task.evaluate(s.ema.module, self.val_loader, self.ctx)
            row.update({f"ema_val_{k}": v for k, v in ema_val.items() if k != "samples"})
        per_step = (accuracy_per_step(self.model, self.val_loader, self.ctx)    # TD models: accuracy at k = 1..t
                    if self.board.enabled and isinstance(self.task, ClassificationTask) else {})
        self.history.append(row)
        self.board.epoch(row, per_step)
        key = f"val_{self.task.primary_metric}"
        is_best = row.get(key) is not None and (self.best is None or row[key] > self.best[key])
        if is_best:
            self.best = {"epoch": row["epoch"], key: row[key]}
        ema_key = f"ema_{key}"
        is_best_ema = row.get(ema_key) is not None and (self.best_ema is None or row[ema_key] > self.best_ema[ema_key])
        if is_best_ema:
            self.best_ema = {"epoch": row["epoch"], ema_key: row[ema_key]}
        s.epoch += 1
        s.epoch_step = 0
        s.meter = EpochMeter()
        self.save(best=is_best, best_ema=is_best_ema)
        if d.is_main:
            self.write_metrics()
        return row

    def plot(self) -> None:
        """Loss / accuracy curves next to the metrics (``curves.png`` / ``.pdf``); the notebook also shows them."""
        import matplotlib.pyplot as plt

        from tdam.train.plots import plot_curves

        fig = plot_curves(self.history, title=f"{self.cfg.model_tag()} ({self.run_dir.name})",
                          chance=100 / self.num_classes, save_as="curves", folder=self.run_dir)
        plt.close(fig)

    def progress_bar(self, s: TrainState):
        """A tqdm bar over the epoch's micro-batches when ``progress`` is set, or when left None and stderr is a
        terminal outside CI; None otherwise (SLURM logs, papermill, CI: the progress lines go to stdout instead)."""
        show = self.cfg.progress if self.cfg.progress is not None else (
            sys.stderr.isatty() and not os.environ.get("CI"))
        if not (show and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        total = self.updates_per_epoch * self.cfg.accum_steps
        return tqdm(total=total, initial=s.epoch_step * self.cfg.accum_steps, leave=False, dynamic_ncols=True,
                    desc=f"epoch {s.epoch + 1}/{self.cfg.epochs}")

    def result(self, *, interrupted: bool) -> RunResult:
        self.board.close()
        return RunResult(run_dir=self.run_dir, history=list(self.history), best=self.best,
                         num_classes=self.num_classes, interrupted=interrupted,
                         primary_metric=self.task.primary_metric, env=self.env)
