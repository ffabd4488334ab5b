"""The training configuration: one flat dataclass, validated before any work starts.

A run is described by a YAML file under ``params/`` (``base:`` inheritance keeps the Table 1 files short), an optional
profile overlay (``params/profiles/<name>.yaml``, e.g. ``smoke`` for the embedded dataset) and ``--key value``
overrides. :func:`load_config` merges the three in that order and returns a validated :class:`TrainConfig`; every
wrong value raises ``ValueError`` naming the valid choices, before a model or a dataset is touched. Files and
command-line values are read by one YAML loader (:func:`load_yaml`): a syntax error or a key given twice raises
:class:`~tdam.errors.ConfigError` with the file (or flag), line and column; ``base:`` must be a path or a list
of paths. Every float field must be a finite number.

A run's identity is everything that changes its weights (:func:`semantic_config`, ``epochs`` included), hashed by
:func:`tdam.runs.run_identity`; the run folder is named by it (:meth:`TrainConfig.run_name`), so a request for 3 epochs
never meets a 5-epoch run. A run continues in its own folder only with the same config; a resume that changes a
:data:`SCHEDULE_FIELDS` value (more epochs, another lr) makes a new run, derived from the one it continues
(:mod:`tdam.train.lineage`); any other change is refused (:func:`config_changes`).

The model is one mapping, ``model:``, holding exactly the keyword arguments of :func:`tdam.create_model` (``arch``,
``attention``, ``t``, ``m``, ``td_mode``, ``td_stages``, ``drop_path_rate``, ...). The trainer passes it unchanged
(``num_classes`` added from the data unless the mapping has it), and it is validated by building it on the meta
device, so the trainer accepts exactly what ``create_model`` accepts. ``base:`` files, profiles and overrides merge
``model`` key by key.

Learning rate follows the paper's rule "0.1 per 128 images, scaled linearly with the global batch": leave ``lr``
unset and give ``lr_base``/``lr_base_size``; the global batch is ``batch_size`` (per process) x processes x
``accum_steps``. A warm-up must be shorter than the run (``warmup_epochs < epochs``, checked on the final config,
so a resume that raises ``epochs`` is judged by the new length), and warm-up plus cool-down must leave an epoch of
the schedule. The schedule's shape (``lr_step``, ``warmup_prefix``, ``cooldown_epochs``): :mod:`tdam.train.schedule`.

Each field's group and one-line meaning live in its metadata (:data:`GROUPS`, ``help``, ``choices``), the one
description ``python -m tdam.train --help`` prints. Importing this module loads neither torch nor timm (the checks
import them when they run), so reading the fields stays fast.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from tdam.paths import params_dir, runs_dir
from tdam.runs import IMAGENET_KIND, folder_name, run_identity
from tdam.errors import ConfigError

__all__ = ["TrainConfig", "load_config", "load_yaml", "load_yaml_with_base", "merge_config", "RUNS_SUBDIR",
           "semantic_config", "config_changes", "SCHEDULE_FIELDS", "NON_SEMANTIC", "GROUPS",
           "TRAIN_ON", "model_tag"]

DATASETS = ("imagenet", "imagenet_wds", "imagenet_parquet", "cub200", "stanford_dogs", "coco2014")
AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "constant", "none")
REMODES = ("pixel", "const", "rand")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
TRAIN_INTERPOLATIONS = (*INTERPOLATIONS, "random")   # random: bilinear or bicubic per image (timm)
LR_STEPS = ("epoch", "update")   # when the learning rate changes (tdam.train.schedule)
DATA_SIZES = ("default", "tiny")
TRAIN_ON = ("last", "most_confident")   # which computation step's logits a TD model is trained on (engine)
RUNS_SUBDIR = IMAGENET_KIND   # runs/<this>/<run name>: the ImageNet runs
DEFAULT_MODEL = {"arch": "resnet18"}   # the model a config gets when no file names one (merged under any model: given)

# Fields that do not change what is learned: ignored when deciding whether a cached run matches a request.
NON_SEMANTIC = frozenset({
    "name", "output_dir", "resume", "workers", "progress", "log_interval", "device", "compile",
    "checkpoint_every_steps", "profile", "deterministic", "tensorboard", "wandb",
    "cudnn_benchmark", "tf32",   # like deterministic: which kernels run, not what is computed (up to rounding)
})
# Fields of the schedule: they change what is learned, so they are part of a run's identity, but a resume may change
# them: ``--resume true --epochs 200`` on a finished 110-epoch run makes a NEW 200-epoch run that continues it from
# its last state and names it as its parent (tdam.train.lineage); the 110-epoch run is left as it is.
SCHEDULE_FIELDS = frozenset({
    "epochs", "lr", "lr_base", "lr_base_size", "sched", "warmup_epochs", "warmup_lr", "min_lr", "steps_per_epoch",
    "val_batches", "lr_step", "cooldown_epochs", "warmup_prefix",
})



GROUPS = {   # the TrainConfig field groups, in order, and their titles (the CLI's --help sections)
    "run": "run",
    "model": "model: the keyword arguments of tdam.create_model (num_classes: from the data unless given)",
    "data": "data (tdam.data)",
    "optimisation": "optimisation (timm.optim / timm.scheduler)",
    "performance": "performance",
    "logging": "limits, logging, checkpoints",
}


def _field(group: str, default: Any = dataclasses.MISSING, help: str = "", *,
           factory: Callable[[], Any] | None = None, choices: Sequence[Any] | None = None) -> Any:
    """A TrainConfig field with its group, one-line meaning and (for choice fields) the valid choices in its
    metadata: the one description of each field, read by the CLI's ``--help``."""
    if group not in GROUPS:
        raise ValueError(f"group={group!r} is not valid; valid choices are {list(GROUPS)}")
    meta = {"group": group, "help": help, **({"choices": tuple(choices)} if choices is not None else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything a training run needs. The defaults are a plain per-update timm-style recipe (SGD, lr 0.1 per 128
    images, 5 warm-up epochs inside a per-update cosine to 0, label smoothing 0.1, 110 epochs); the paper's recipes,
    as the authors ran them (per-epoch steps, cool-down, colour jitter, ...), are the files
    ``params/imagenet/_recipe_*.yaml``, and :mod:`tdam.train.provenance` says where each of their values comes from.
    Each field's meaning is in its metadata (``help``), shown by ``python -m tdam.train --help``."""

    # --- run ---
    name: str | None = _field("run", None, "run folder name; null: <model tag>[-<train_on>]-<profile>-e<epochs>-<hash "
                                           "of everything that changes the weights>")
    output_dir: str | None = _field("run", None, "the run folder; null: runs/01_train_imagenet/<name>")
    profile: str | None = _field("run", None, "the profile overlay applied (set by --profile; recorded for "
                                                 "provenance)")
    seed: int = _field("run", 0, "seed of the initial weights, the data order and the augmentation")
    device: str = _field("run", "auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    resume: bool | str = _field("run", False, "true: continue <run dir>/last.pth; auto: that if it exists; or a "
                                              "checkpoint path")
    # --- model ---
    model: dict[str, Any] = _field("model", help="the model: tdam.create_model keyword arguments (arch, attention, "
                                                 "t, m, td_mode, td_stages, drop_path_rate, ...)",
                                   factory=lambda: dict(DEFAULT_MODEL))
    # --- data ---
    dataset: str = _field("data", "imagenet", "dataset format of data_dir", choices=DATASETS)
    data_dir: str | None = _field("data", None, "dataset root; null: the embedded tdam-shapes dataset")
    data_size: str = _field("data", "default", "embedded dataset size when data_dir is null",
                            choices=DATA_SIZES)
    img_size: int = _field("data", 224, "training crop and validation image size (px)")
    crop_pct: float = _field("data", 0.875, "validation: resize img_size/crop_pct, centre crop img_size")
    interpolation: str = _field("data", "bilinear", "resize interpolation (evaluation; training too unless "
                                                    "train_interpolation is set)", choices=INTERPOLATIONS)
    train_interpolation: str | None = _field("data", None, "training crop interpolation; random: bilinear or "
                                                           "bicubic per image (timm); null: interpolation",
                                             choices=(None, *TRAIN_INTERPOLATIONS))
    scale: list[float] = _field("data", help="RandomResizedCrop area range [min, max]",
                                factory=lambda: [0.08, 1.0])
    hflip: float = _field("data", 0.5, "horizontal flip probability")
    auto_augment: str | None = _field("data", None, "timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1 "
                                                    "(ConvNeXt); null: none")
    color_jitter: float | None = _field("data", None, "colour jitter factor for brightness, contrast and "
                                                      "saturation (timm; not applied with auto_augment); null: none")
    reprob: float = _field("data", 0.0, "random erasing probability")
    remode: str = _field("data", "pixel", "random erasing mode", choices=REMODES)
    skip_bad_images: bool = _field("data", False, "skip and count unreadable images instead of failing on the "
                                                  "first")
    workers: int = _field("data", 4, "data-loader worker processes per training process")
    # --- optimisation ---
    epochs: int = _field("optimisation", 110, "training epochs (a resume may raise it)")
    batch_size: int = _field("optimisation", 128, "images per process per micro-batch")
    accum_steps: int = _field("optimisation", 1, "gradient accumulation: micro-batches per optimizer update")
    opt: str = _field("optimisation", "sgd", "timm optimizer name")
    lr: float | None = _field("optimisation", None, "peak learning rate; null: lr_base x global batch / "
                                                    "lr_base_size")
    lr_base: float = _field("optimisation", 0.1, "learning rate per lr_base_size images (linear scaling rule)")
    lr_base_size: int = _field("optimisation", 128, "global batch that lr_base is given for")
    momentum: float = _field("optimisation", 0.9, "optimizer momentum")
    weight_decay: float = _field("optimisation", 1e-4, "weight decay")
    sched: str = _field("optimisation", "cosine", "learning-rate schedule after the warm-up (tdam.train.lr_schedule)",
                        choices=SCHEDULERS)
    lr_step: str = _field("optimisation", "update", "when the lr changes: every update, or once per epoch (the "
                                                    "authors' timm script)", choices=LR_STEPS)
    warmup_epochs: float = _field("optimisation", 5, "linear warm-up length in epochs (less than epochs)")
    warmup_lr: float = _field("optimisation", 1e-5, "learning rate the warm-up starts from")
    warmup_prefix: bool = _field("optimisation", False, "true: the warm-up precedes the cosine, which spans the "
                                                        "remaining epochs (ConvNeXt's utils.cosine_scheduler); false: "
                                                        "the warm-up is inside it (timm)")
    min_lr: float = _field("optimisation", 0.0, "learning rate the schedule ends at")
    cooldown_epochs: int = _field("optimisation", 0, "the last epochs of the run at min_lr, after the schedule "
                                                     "(timm's --cooldown-epochs; counted in epochs)")
    smoothing: float = _field("optimisation", 0.1, "label smoothing")
    mixup: float = _field("optimisation", 0.0, "mixup alpha (0: off)")
    cutmix: float = _field("optimisation", 0.0, "cutmix alpha (0: off)")
    train_on: str = _field("optimisation", "last", "a TD model's step the loss sees: last (the authors' code) or "
                                                   "most_confident (supplement §1.1)", choices=TRAIN_ON)
    model_ema: bool = _field("optimisation", False, "also keep and evaluate an EMA of the weights")
    model_ema_decay: float = _field("optimisation", 0.9998, "EMA decay per update")
    # --- performance ---
    amp: str = _field("performance", "auto", "mixed precision; auto: bf16 (or fp16 + GradScaler) on CUDA, fp32 on "
                                             "CPU", choices=AMP_CHOICES)
    channels_last: bool | None = _field("performance", None, "channels-last memory format; null: on CUDA only")
    compile: bool = _field("performance", False, "torch.compile the model")
    deterministic: bool = _field("performance", False, "GPU: deterministic algorithms, no cuDNN autotuning")
    cudnn_benchmark: bool = _field("performance", True, "CUDA: cuDNN autotuning (torch.backends.cudnn.benchmark), "
                                                        "as the authors' script; off under deterministic")
    tf32: bool = _field("performance", True, "CUDA: TF32 tensor cores for float32 matmuls and convolutions outside "
                                             "autocast (PyTorch's defaults of the authors' time)")
    # --- limits, logging, checkpoints ---
    steps_per_epoch: int | None = _field("logging", None, "cap on optimizer updates per epoch (smoke runs); null: "
                                                          "the whole training set")
    val_batches: int | None = _field("logging", None, "cap on validation batches (smoke runs); null: all")
    checkpoint_every_steps: int | None = _field("logging", None, "also save last.pth every N updates (resumable "
                                                                 "after a crash or kill)")
    log_interval: int = _field("logging", 50, "updates between progress lines (train.log, TensorBoard, stdout "
                                              "when not a terminal)")
    tensorboard: bool = _field("logging", True, "live curves in <run dir>/tb/ (tensorboard --logdir runs/)")
    wandb: bool = _field("logging", False, "also log to Weights & Biases (offline unless WANDB_MODE says "
                                           "otherwise; extra)")
    progress: bool | None = _field("logging", None, "tqdm progress bar; null: only when interactive (a terminal, "
                                                    "not CI)")

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML 1.1 reads '1e-4' as a string: accept numeric strings for float fields
            v = getattr(self, f.name)
            if isinstance(v, str) and "float" in str(f.type):
                try:
                    setattr(self, f.name, float(v))
                except ValueError:
                    raise ValueError(f"{f.name}={v!r}: expected a number") from None
        if isinstance(self.model, Mapping):
            from tdam.models import canonical_model

            self.model = canonical_model(self.model)   # 'plain' / 'none' spell the plain backbone in YAML and CLIs
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Type and range checks; raises ValueError naming the valid choices. The model description is checked by
        building it on the meta device (:func:`tdam.models.check_model`)."""
        from tdam.models import check_model
        from tdam.validation import DEVICE_CHOICES, check_bool, check_choice, check_int, check_number

        try:
            check_model(self.model)
        except ValueError as e:
            raise ValueError(f"model: {e}") from None
        check_choice("dataset", self.dataset, DATASETS)
        if self.data_dir is not None and not str(self.data_dir).strip():   # never the embedded data by accident
            raise ValueError("data_dir is empty (an unset shell variable, e.g. --data_dir \"$IMAGENET\"?): give the "
                             "dataset root, or leave data_dir out (null) for the embedded tdam-shapes data")
        check_choice("data_size", self.data_size, DATA_SIZES)
        check_choice("amp", self.amp, AMP_CHOICES)
        check_choice("sched", self.sched, SCHEDULERS)
        check_choice("remode", self.remode, REMODES)
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        check_choice("train_interpolation", self.train_interpolation, (None, *TRAIN_INTERPOLATIONS))
        check_choice("lr_step", self.lr_step, LR_STEPS)
        check_choice("train_on", self.train_on, TRAIN_ON)
        if self.train_on == "most_confident" and self.model.get("attention") != "td":
            raise ValueError("train_on='most_confident' needs a TD model (model.attention: td): it trains on the most "
                             "confident of the TD steps, and a model without TD blocks has a single step")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", str(self.device))):
            raise ValueError(f"device={self.device!r} is not valid; valid choices are {list(DEVICE_CHOICES)}")
        _check_optimizer(self.opt)
        for name, lo in (("seed", 0), ("img_size", 8), ("workers", 0), ("epochs", 1), ("batch_size", 1),
                         ("accum_steps", 1), ("lr_base_size", 1), ("log_interval", 1)):
            check_int(name, getattr(self, name), lo)
        for name in ("steps_per_epoch", "val_batches", "checkpoint_every_steps"):
            check_int(name, getattr(self, name), 1, optional=True)
        for name in ("hflip", "reprob", "smoothing", "model_ema_decay"):
            check_number(name, getattr(self, name), 0.0, 1.0)
        for name in ("lr_base", "momentum", "weight_decay", "warmup_epochs", "warmup_lr", "min_lr", "mixup",
                     "cutmix"):
            check_number(name, getattr(self, name), 0.0)
        check_number("color_jitter", self.color_jitter, 0.0, optional=True)
        check_int("cooldown_epochs", self.cooldown_epochs, 0)
        check_number("crop_pct", self.crop_pct, 0.05, 1.0)
        check_number("lr", self.lr, 0.0, optional=True)
        if self.sched != "none" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs:g} is not shorter than the run (epochs="
                             f"{self.epochs}): the learning rate would never leave the warm-up; give warmup_epochs "
                             f"< epochs (e.g. warmup_epochs: 0 for a run this short)")
        if self.sched != "none" and self.warmup_epochs + self.cooldown_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs:g} + cooldown_epochs={self.cooldown_epochs} leave no "
                             f"epoch of the schedule in a run of epochs={self.epochs}; give fewer warm-up or "
                             f"cool-down epochs (cooldown_epochs: 0 for a run this short)")
        if self.warmup_prefix and self.sched != "cosine":
            raise ValueError(f"warmup_prefix=true is ConvNeXt's warm-up-then-cosine (utils.cosine_scheduler): it needs "
                             f"sched='cosine', not {self.sched!r}")
        if (not isinstance(self.scale, (list, tuple)) or len(self.scale) != 2
                or not 0 < float(self.scale[0]) <= float(self.scale[1]) <= 1):
            raise ValueError(f"scale={self.scale!r}: expected [min_area, max_area] with 0 < min <= max <= 1")
        self.scale = [float(s) for s in self.scale]
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise ValueError(f"batch_size={self.batch_size} must be even when mixup/cutmix is on (timm pairs images)")
        if not isinstance(self.resume, (bool, str)):
            raise ValueError(f"resume={self.resume!r}: expected true/false or a checkpoint path")
        for name in ("channels_last", "progress"):
            check_bool(name, getattr(self, name), optional=True)
        for name in ("compile", "model_ema", "skip_bad_images", "deterministic", "tensorboard", "wandb",
                     "warmup_prefix", "cudnn_benchmark", "tf32"):
            check_bool(name, getattr(self, name))
        if self.wandb and importlib.util.find_spec("wandb") is None:
            raise ValueError("wandb: true needs the optional Weights & Biases package: pip install 'tdam[wandb]'")
        return self

    # ------------------------------------------------------------------ derived values
    def global_batch(self, world_size: int = 1) -> int:
        return self.batch_size * world_size * self.accum_steps

    def resolved_lr(self, world_size: int = 1) -> float:
        """The peak learning rate: ``lr`` if given, else the linear scaling rule."""
        if self.lr is not None:
            return float(self.lr)
        return self.lr_base * self.global_batch(world_size) / self.lr_base_size

    def model_tag(self) -> str:
        """Short model name in the paper's vocabulary (:func:`model_tag` of ``model``)."""
        return model_tag(self.model)

    def identity(self) -> str:
        """The run's identity when trained from scratch: :func:`tdam.runs.run_identity` of :func:`semantic_config`."""
        return run_identity(semantic_config(self))

    def name_parts(self) -> list[str]:
        """What tells this run from its neighbours at a glance, before the hash in its folder name: model tag,
        ``train_on`` when it is not the authors' ``last``, profile, epochs (``e3``)."""
        return [self.model_tag(), None if self.train_on == "last" else self.train_on, self.profile or "custom",
                f"e{self.epochs}"]

    def run_name(self) -> str:
        """``name`` if set, else ``<model tag>[-<train_on>]-<profile>-e<epochs>-<identity>`` (stable across sessions
        and machines), e.g. ``resnet18_td_joint_t2_m1-smoke-e3-1a2b3c4d``."""
        return self.name or folder_name(self.name_parts(), self.identity())

    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else runs_dir() / RUNS_SUBDIR / self.run_name()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            from tdam.models import MODEL_OPTIONS

            hint = ""
            if set(unknown) & {*MODEL_OPTIONS, "backbone", "model_options", "drop_rate", "drop_path_rate"}:
                hint = ("; the model is described under `model:` by the keyword arguments of tdam.create_model, "
                        "e.g. model: {arch: resnet50, attention: td, t: 2, m: 1}")
            raise ValueError(f"unknown config key(s) {unknown}{hint}; valid keys are {sorted(valid)}")
        return cls(**dict(d))


def model_tag(model: Mapping[str, Any]) -> str:
    """Short name of a model description in the paper's vocabulary, e.g. ``resnet50_td_joint_t2_m1`` or
    ``resnet18_se`` (also the name of its params file under params/imagenet/, where there is one)."""
    from tdam.models import TD_OPTION_DEFAULTS, canonical_model

    model = canonical_model(model)
    arch, attention = model["arch"], model.get("attention")
    if attention is None:
        return f"{arch}_plain"
    if attention != "td":
        return f"{arch}_{attention}"
    td = {**TD_OPTION_DEFAULTS, **{k: v for k, v in model.items() if v is not None}}
    tag = f"{arch}_td_{td['td_mode']}_t{td['t']}_m{td['m']}"
    if (stages := model.get("td_stages")) is not None:
        tag += "_L" + "".join(str(s) for s in ([stages] if isinstance(stages, int) else stages))
    return tag


def semantic_config(cfg: TrainConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config without the fields that do not change what is learned (paths, workers, logging, ...): a run's
    request, the input of its identity. ``epochs`` is in it: a 5-epoch run is not the 3-epoch one."""
    d = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    if isinstance(d.get("model"), Mapping):
        d["model"] = _built_model(d["model"])
    return {k: v for k, v in sorted(d.items()) if k not in NON_SEMANTIC}


def _built_model(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model description as ``create_model`` builds it: a TD model's TD options that are not given (or None) at
    their defaults, so writing a default out (``t: 2``, as the params files do) or leaving it out names one run."""
    if model.get("attention") != "td":
        return dict(model)
    from tdam.models import TD_OPTION_DEFAULTS

    return {**TD_OPTION_DEFAULTS, **{k: v for k, v in model.items() if v is not None}}


def config_changes(stored: Mapping[str, Any], new: TrainConfig | Mapping[str, Any]
                   ) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """``(refused, schedule)``: the fields that differ between a checkpoint's stored config and ``new``, as
    ``{field: (stored, new)}`` (model keys as ``model.<key>``). ``schedule`` holds the :data:`SCHEDULE_FIELDS` (a
    resume may change them, as a new run: :mod:`tdam.train.lineage`); ``refused`` every other field that changes what is learned (the model, the data, the
    optimizer, augmentation, seed). A field missing from an older stored config counts as its default, and so does
    a TD option the model leaves unset (``t: 2`` written out or not is one model)."""
    new_d = new.to_dict() if isinstance(new, TrainConfig) else dict(new)
    defaults = TrainConfig.__dataclass_fields__

    def default(k: str) -> Any:
        f = defaults.get(k)
        if f is None:
            return None
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default

    def plain(v: Any) -> Any:
        return json.loads(json.dumps(v, sort_keys=True, default=str))

    refused: dict[str, tuple[Any, Any]] = {}
    schedule: dict[str, tuple[Any, Any]] = {}
    for k in sorted(set(new_d) | set(stored)):
        if k in NON_SEMANTIC:
            continue
        old_v = plain(stored[k] if k in stored else default(k))
        new_v = plain(new_d[k] if k in new_d else default(k))
        if k == "model" and isinstance(old_v, dict) and isinstance(new_v, dict):   # a default written out or not
            old_v, new_v = plain(_built_model(old_v)), plain(_built_model(new_v))    # is the same model
        if old_v == new_v:
            continue
        if k == "model" and isinstance(old_v, dict) and isinstance(new_v, dict):
            for mk in sorted(set(old_v) | set(new_v)):
                if old_v.get(mk) != new_v.get(mk):
                    refused[f"model.{mk}"] = (old_v.get(mk), new_v.get(mk))
        elif k in SCHEDULE_FIELDS:
            schedule[k] = (old_v, new_v)
        else:
            refused[k] = (old_v, new_v)
    return refused, schedule


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``{'lr': (0.1, 0.05)}`` -> ``"lr 0.1 -> 0.05"`` (comma-separated)."""
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())


# ---------------------------------------------------------------------- loading
class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML itself keeps the last silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"{key_node.start_mark.name}:{line}: duplicate key {key!r} (first given on line "
                              f"{seen[key]}); give each key once")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` (a params file's content or one CLI value) with the one loader of tdam's configs: a syntax
    error raises :class:`ConfigError` ``"<source>:<line>:<column>: <problem>"``, a duplicate key names both lines.
    ``source`` is the file path or e.g. ``'--lr'`` for a command-line value."""
    loader = _StrictLoader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = f"{e.problem}" + (f" ({e.context})" if e.context else "")
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: YAML error: {e}") from None
    finally:
        loader.dispose()


def load_yaml_with_base(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a params YAML; a ``base:`` entry (a path relative to the file, or a list of them) is loaded first and
    the file's own keys override it. ``model`` mappings are merged key by key. Errors name the file (and the line
    and column of a syntax error or duplicate key)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (params live under {params_dir()})")
    if path in _seen:
        raise ConfigError(f"circular 'base:' chain: {' -> '.join(str(p) for p in (*_seen, path))}")
    data = load_yaml(path.read_text(), str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    bases = data.pop("base", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: base={bases!r}: expected a file path or a list of file paths (relative to "
                          f"{path.parent})")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge_config(merged, load_yaml_with_base(path.parent / base, (*_seen, path)))
    return merge_config(merged, data)


def merge_config(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``; the ``model`` mapping is merged key by key (a file or override that sets
    ``model: {t: 3}`` keeps the inherited ``arch`` and ``attention``)."""
    out = dict(base)
    for k, v in update.items():
        if k == "model" and isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def _resolve_params_path(name: str | Path, subdir: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = params_dir() / subdir / (p.name if p.suffix else f"{p.name}.yaml")
    if candidate.is_file():
        return candidate
    if (params_dir() / p).is_file():
        return params_dir() / p
    available = sorted(q.stem for q in (params_dir() / subdir).glob("[!_]*.yaml"))
    raise FileNotFoundError(f"params file {name!r} not found (looked for {p} and {candidate}); available in "
                            f"{params_dir() / subdir}: {available}")


def load_config(config: str | Path | Mapping[str, Any] | None = None, *, profile: str | None = None,
                **overrides: Any) -> TrainConfig:
    """Resolve ``config`` (a YAML path, a name under params/imagenet/, a dict or None for the defaults), then the
    ``profile`` overlay (params/profiles/<profile>.yaml), then ``overrides`` (None values are ignored, so notebook
    parameters left at None keep the file's value; ``model={...}`` is merged into the model key by key). Returns a
    validated :class:`TrainConfig`. Example: ``load_config('resnet50_td_joint_t2_m1', profile='smoke',
    model={'t': 3}, epochs=1)``."""
    data: dict[str, Any] = {"model": dict(DEFAULT_MODEL)}
    if isinstance(config, Mapping):
        data = merge_config(data, config)
    elif config is not None:
        data = merge_config(data, load_yaml_with_base(_resolve_params_path(config, "imagenet")))
    if profile:
        data = merge_config(data, load_yaml_with_base(_resolve_params_path(profile, "profiles")))
        data["profile"] = Path(profile).stem
    data = merge_config(data, {k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data)


# ---------------------------------------------------------------------- checks
def _check_optimizer(opt: str) -> None:
    from timm.optim import list_optimizers

    from tdam.validation import check_choice

    check_choice("opt (a timm optimizer)", str(opt).lower(), list_optimizers())
