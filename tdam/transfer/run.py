"""Transfer runs (supplement §1.3): a params file -> datasets, task and model -> the shared trainer.

A transfer params YAML holds the trainer's keys (:class:`tdam.train.TrainConfig`: batch, epochs, lr, AMP, EMA, ...)
plus the transfer keys of :class:`TransferConfig` (which framework, which dataset, the ImageNet backbone checkpoint,
the WS-DAN / ASL hyper-parameters). The backbone's model description (the trainer's ``model:``) is the checkpoint's
own ``model_config`` (without its ImageNet ``num_classes``), so run names and logs name the backbone.
:func:`run_transfer` trains through ``tdam.train.train`` (same checkpointing,
resume, AMP and DDP as the ImageNet runs) into ``runs/07_transfer/<name>-e<epochs>-<identity>``: the identity is
:func:`tdam.runs.run_identity` of :func:`transfer_key` (the trainer's semantic config, the transfer settings and the
backbone checkpoint's SHA-256), the one hash every run is named by, so a retrained backbone or any changed setting
makes a new cached run beside the old one instead of an error. An explicit ``output_dir`` is used as given.

``backbone_checkpoint`` names the ImageNet backbone by its params file, its run folder or a path
(:mod:`tdam.transfer.backbone`).

**Batch: global.** A transfer params file's ``batch_size`` is the GLOBAL batch (the paper's 12 for WS-DAN, 64 for
ASL), whatever the number of processes: :func:`load_transfer_config` derives the trainer's per-process
``batch_size`` = global / (processes x ``accum_steps``) for the processes it runs in (torchrun's or SLURM's
``WORLD_SIZE``), and refuses a global batch that does not divide, naming the batches and process counts that do. The
learning rate is the recipe's fixed ``lr`` (WS-DAN's 1e-3, ASL's 1e-4, from their official code), never rescaled:
with the global batch fixed there is nothing to rescale. The recipe printout shows the derivation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from tdam.data import TASK_DATASETS
from tdam.errors import ConfigError
from tdam.paths import params_dir, repo_root, runs_dir
from tdam.transfer.backbone import Backbone, resolve_backbone
from tdam.runs import TRANSFER_KIND, file_digest, folder_name, run_identity
from tdam.validation import check_bool, check_choice, check_int, check_number

__all__ = ["TransferConfig", "load_transfer_config", "transfer_data_root", "build_transfer_datasets",
           "build_task", "run_transfer", "transfer_key", "transfer_run_name", "RUNS_SUBDIR", "TRANSFER_KEYS",
           "per_process_batch"]

RUNS_SUBDIR = TRANSFER_KIND


@dataclass
class TransferConfig:
    """The transfer-specific settings; ``train`` is the trainer's config (validated by it)."""

    task: str = "wsdan"                          # wsdan | asl
    dataset: str = "cub200"                      # wsdan: cub200 | stanford_dogs; asl: coco2014
    data_dir: str | None = None                  # dataset root in its real layout; None: the embedded tdam-shapes
    data_size: str = "default"                   # embedded dataset size: default | tiny
    backbone_checkpoint: str | None = None       # the ImageNet backbone: a params/imagenet/ name, a run folder or a path
    backbone_use_ema: bool = False
    random_backbone: bool = False                # no checkpoint: randomly initialised backbone (tests only)
    # WS-DAN (Hu et al. 2019; GuYuc/WS-DAN.PyTorch): M attention maps, feature centers, crop / drop, refinement
    num_attentions: int = 32
    beta: float = 5e-2
    crop_theta: list[float] = field(default_factory=lambda: [0.4, 0.6])
    crop_padding: float = 0.1
    drop_theta: list[float] = field(default_factory=lambda: [0.2, 0.5])
    test_theta: float = 0.1
    test_padding: float = 0.05
    combine: str = "logits"                      # logits (PyTorch re-implementation) | probs (official TF)
    lr_decay_epochs: float = 2
    lr_decay_rate: float = 0.9
    # ASL (Ridnik et al. 2021; Alibaba-MIIL/ASL): asymmetric focusing, probability clip, OneCycle schedule
    gamma_neg: float = 4
    gamma_pos: float = 0
    clip: float = 0.05
    disable_torch_grad_focal_loss: bool = True
    threshold: float = 0.8
    onecycle_epochs: int = 80
    pct_start: float = 0.2
    train: Any = None                            # tdam.train.TrainConfig (its batch_size: per process)
    # set by load_transfer_config, not options: the processes the run was loaded for, and how the backbone resolved
    world_size: int = field(default=1, compare=False)
    backbone: Backbone | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "TransferConfig":
        check_choice("task", self.task, TASK_DATASETS)
        check_choice(f"dataset (for task {self.task!r})", self.dataset, TASK_DATASETS[self.task])
        check_choice("data_size", self.data_size, ("default", "tiny"))
        check_choice("combine", self.combine, ("logits", "probs"))
        check_int("num_attentions", self.num_attentions, 1)
        check_int("onecycle_epochs", self.onecycle_epochs, 1)
        for name in ("backbone_use_ema", "random_backbone", "disable_torch_grad_focal_loss"):
            check_bool(name, getattr(self, name))
        for name in ("crop_theta", "drop_theta"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or len(v) != 2 or not 0 <= float(v[0]) <= float(v[1]) <= 1:
                raise ValueError(f"{name}={v!r}: expected [lo, hi] with 0 <= lo <= hi <= 1")
        for name, lo, hi in (("beta", 0.0, 1.0), ("crop_padding", 0.0, 1.0), ("test_padding", 0.0, 1.0),
                             ("test_theta", 0.0, 1.0), ("lr_decay_rate", 0.0, 1.0), ("clip", 0.0, 1.0),
                             ("threshold", 0.0, 1.0), ("pct_start", 0.0, 1.0)):
            check_number(name, getattr(self, name), lo, hi)
        check_number("gamma_neg", self.gamma_neg, 0.0)
        check_number("gamma_pos", self.gamma_pos, 0.0)
        check_number("lr_decay_epochs", self.lr_decay_epochs, 0.0)
        if self.lr_decay_epochs == 0:
            raise ValueError("lr_decay_epochs=0: expected a finite number > 0")
        if self.backbone_checkpoint is None and not self.random_backbone and not self.backbone_assumed():
            raise ValueError("backbone_checkpoint is required (our ImageNet checkpoint, e.g. "
                             "runs/01_train_imagenet/<run>/best.pth); set random_backbone: true for a random init")
        if self.backbone_checkpoint is not None:
            if self.random_backbone:
                raise ValueError("backbone_checkpoint and random_backbone: true exclude each other")
            path = Path(self.backbone_checkpoint).expanduser()
            path = path if path.is_absolute() else repo_root() / path
            if not path.is_file():
                raise FileNotFoundError(f"backbone_checkpoint {path} does not exist (expected one of our ImageNet "
                                        f"checkpoints, e.g. runs/01_train_imagenet/<run>/best.pth)")
            self.backbone_checkpoint = str(path)
        if self.train is not None and self.task == "asl" and self.train.epochs > self.onecycle_epochs:
            raise ValueError(f"epochs={self.train.epochs} runs past the OneCycle schedule ({self.onecycle_epochs})")
        return self

    def backbone_assumed(self) -> bool:
        """True when the backbone is a params file's whose run is not trained yet (a dry run): nothing can train."""
        return self.backbone is not None and self.backbone.checkpoint is None

    def global_batch(self) -> int:
        """The global batch: the per-process batch x processes x accumulation steps (the file's ``batch_size``)."""
        return self.train.global_batch(self.world_size)

    def to_dict(self) -> dict[str, Any]:
        """The params-file view: trainer and transfer keys, ``batch_size`` the global batch (as written in a file)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name in TRANSFER_KEYS}
        if self.backbone_assumed():                      # not trained yet: its name as given
            d["backbone_checkpoint"] = self.backbone.spec
        train = self.train.to_dict() if self.train is not None else {}
        if self.train is not None:
            train["batch_size"] = self.global_batch()
        return {**train, **d}


_NOT_KEYS = {"train", "world_size", "backbone"}              # fields that are not params-file keys
TRANSFER_KEYS = {f.name for f in fields(TransferConfig)} - _NOT_KEYS


def per_process_batch(global_batch: int, world_size: int, accum_steps: int = 1) -> int:
    """``global_batch / (world_size x accum_steps)``; a ConfigError naming the global batches and the process counts
    that divide when it does not."""
    split = world_size * accum_steps
    if global_batch % split:
        near = sorted({max(split, global_batch // split * split), (global_batch // split + 1) * split})
        counts = [n for n in range(1, global_batch + 1) if global_batch % (n * accum_steps) == 0][:8]
        raise ConfigError(f"batch_size {global_batch} (a transfer run's GLOBAL batch) does not divide over "
                          f"{world_size} process(es) x {accum_steps} accumulation step(s): give batch_size "
                          f"{' or '.join(map(str, near))}, or run on {counts} processes")
    return global_batch // split


def _resolve(config: str | Path) -> Path:
    p = Path(config)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = params_dir() / "transfer" / (p.name if p.suffix else f"{p.name}.yaml")
    if candidate.is_file():
        return candidate
    available = sorted(q.stem for q in (params_dir() / "transfer").glob("*.yaml"))
    raise FileNotFoundError(f"transfer params {config!r} not found (looked for {p} and {candidate}); available: "
                            f"{available}")


def load_transfer_config(config: str | Path | Mapping[str, Any] | None = None, *, world_size: int | None = None,
                         require_backbone: bool = True, **overrides: Any) -> TransferConfig:
    """A params file (path or name under params/transfer/, ``base:`` inheritance), a dict, or None (defaults), then
    ``overrides`` (None values ignored). Transfer keys go to :class:`TransferConfig`, the rest to the trainer's
    config. ``backbone_checkpoint`` is resolved (:func:`tdam.transfer.backbone.resolve_backbone`) and the backbone's
    model description taken from the checkpoint (or, ``require_backbone=False`` and not trained yet, from its params
    file). ``batch_size`` is the global batch; the trainer's per-process batch is derived for ``world_size``
    processes (None: the launcher's, from the environment)."""
    from tdam.train.config import TrainConfig, load_yaml_with_base, merge_config
    from tdam.train.distributed import _env_rank_info   # loads torch: only when a config is loaded

    if config is None:
        data: dict[str, Any] = {}
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        data = load_yaml_with_base(_resolve(config))
    data = merge_config(data, {k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(data) - TRANSFER_KEYS - {f.name for f in fields(TrainConfig)})
    if unknown:                                          # before the backbone is looked for
        raise ConfigError(f"unknown config key(s) {unknown}: a transfer config takes the transfer keys "
                          f"{sorted(TRANSFER_KEYS)} and the trainer's (python -m tdam.train --help)")
    transfer = {k: data.pop(k) for k in list(data) if k in TRANSFER_KEYS}
    backbone = None
    if transfer.get("backbone_checkpoint") is not None:
        backbone = resolve_backbone(transfer["backbone_checkpoint"], required=False)   # values are checked first
        transfer["backbone_checkpoint"] = str(backbone.checkpoint) if backbone.checkpoint is not None else None
    world = _env_rank_info()[2] if world_size is None else int(world_size)
    tcfg = TransferConfig(**transfer, world_size=world, backbone=backbone)
    data.setdefault("dataset", tcfg.dataset)
    data["data_size"] = tcfg.data_size
    if tcfg.backbone_checkpoint is not None:
        data["model"] = _backbone_model(tcfg.backbone_checkpoint)
    elif backbone is not None:
        data["model"] = {k: v for k, v in backbone.model.items() if k != "num_classes"}
    global_batch = data.get("batch_size", TrainConfig.batch_size)
    if not isinstance(global_batch, int) or isinstance(global_batch, bool) or global_batch < 1:
        raise ConfigError(f"batch_size={global_batch!r}: expected the global batch, an integer >= 1")
    data["batch_size"] = per_process_batch(global_batch, world, int(data.get("accum_steps", 1)))
    tcfg.train = TrainConfig.from_dict(data)
    if require_backbone and backbone is not None:
        backbone.require()
    if not tcfg.train.output_dir and not tcfg.backbone_assumed():   # the folder's identity needs the checkpoint
        tcfg.train.output_dir = str(runs_dir() / RUNS_SUBDIR / transfer_run_name(tcfg))
    return tcfg.validate()


def transfer_key(tcfg: TransferConfig) -> dict[str, Any]:
    """Everything that changes what a transfer run learns: the trainer's semantic config, the transfer keys and the
    backbone checkpoint by content digest (``backbone_sha256``; not by path, so moving the checkout changes
    nothing), and the processes (``world_size``) when more than one: the per-process batch alone does not fix the
    global batch (one process, the default, is left out, so a one-process run keeps its identity)."""
    from tdam.train.config import semantic_config

    d = {f.name: getattr(tcfg, f.name) for f in fields(tcfg) if f.name in TRANSFER_KEYS - {"data_dir",
                                                                                            "backbone_checkpoint"}}
    d.update({f"train.{k}": v for k, v in semantic_config(tcfg.train).items() if k != "data_size"})
    if tcfg.backbone_checkpoint:
        d["backbone_sha256"] = file_digest(tcfg.backbone_checkpoint)
    if tcfg.world_size != 1:
        d["world_size"] = tcfg.world_size
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def transfer_run_name(tcfg: TransferConfig) -> str:
    """``<name>-e<epochs>-<identity>`` (``name`` default ``<task>_<dataset>``), the identity being
    :func:`tdam.runs.run_identity` of :func:`transfer_key`: one folder per distinct input, e.g. per backbone
    checkpoint."""
    return folder_name([tcfg.train.name or f"{tcfg.task}_{tcfg.dataset}", f"e{tcfg.train.epochs}"],
                       run_identity(transfer_key(tcfg)))


def _backbone_model(checkpoint: str) -> dict[str, Any]:
    """The model description of the checkpoint's backbone: its ``model_config`` without the ImageNet classifier size."""
    from tdam.checkpoint import read_checkpoint

    mc = read_checkpoint(Path(checkpoint).expanduser()).get("model_config") or {}
    if "arch" not in mc:
        raise ValueError(f"backbone_checkpoint {checkpoint} has no model_config['arch']: not one of our checkpoints")
    return {k: v for k, v in mc.items() if k != "num_classes"}


def transfer_data_root(tcfg: TransferConfig) -> Path:
    """``data_dir``, or the embedded dataset's folder (generated on first use)."""
    from tdam.data import dataset_root

    return dataset_root(tcfg.dataset, tcfg.data_dir, size=tcfg.data_size)


def build_transfer_datasets(tcfg: TransferConfig) -> tuple[Any, Any]:
    """(train, val) through the real readers, with the task's transform preset ('wsdan' or 'asl') at ``img_size``."""
    from tdam.data import build_dataset, build_transform

    root, size = transfer_data_root(tcfg), tcfg.train.img_size
    return (build_dataset(tcfg.dataset, root, "train", transform=build_transform("train", size, preset=tcfg.task)),
            build_dataset(tcfg.dataset, root, "val", transform=build_transform("val", size, preset=tcfg.task)))


def build_task(tcfg: TransferConfig):
    """The trainer task (with its model / optimizer / scheduler hooks) for ``tcfg``."""
    from tdam.transfer.models import load_backbone
    from tdam.transfer.tasks import ASLTask, WSDANTask

    if tcfg.backbone_assumed():
        raise ConfigError(f"backbone_checkpoint: {tcfg.backbone.note}; nothing can be trained without it")

    def backbone_fn():
        return load_backbone(tcfg.backbone_checkpoint, use_ema=tcfg.backbone_use_ema, model_config=tcfg.train.model)

    if tcfg.task == "wsdan":
        return WSDANTask(backbone_fn, num_attentions=tcfg.num_attentions, beta=tcfg.beta,
                         crop_theta=tuple(tcfg.crop_theta), crop_padding=tcfg.crop_padding,
                         drop_theta=tuple(tcfg.drop_theta), test_theta=tcfg.test_theta,
                         test_padding=tcfg.test_padding, combine=tcfg.combine, lr_decay_epochs=tcfg.lr_decay_epochs,
                         lr_decay_rate=tcfg.lr_decay_rate)
    return ASLTask(backbone_fn, gamma_neg=tcfg.gamma_neg, gamma_pos=tcfg.gamma_pos, clip=tcfg.clip,
                   disable_torch_grad_focal_loss=tcfg.disable_torch_grad_focal_loss, threshold=tcfg.threshold,
                   onecycle_epochs=tcfg.onecycle_epochs, pct_start=tcfg.pct_start)


def run_transfer(tcfg: TransferConfig, **train_kwargs: Any):
    """Train ``tcfg`` with the shared trainer; returns its ``RunResult`` (history rows hold every task metric)."""
    from tdam.train import train

    return train(tcfg.train, task=build_task(tcfg), datasets=build_transfer_datasets(tcfg), **train_kwargs)
