"""The training configuration: one flat dataclass, validated before any work starts.

A run is described by a YAML file under ``params/`` (``base:`` inheritance keeps the Table 1 files short), an optional
profile overlay (``params/profiles/<name>.yaml``, e.g. ``smoke`` for the embedded dataset) and ``--key value``
overrides. :func:`load_config` merges the three in that order and returns a validated :class:`TrainConfig`; every
wrong value raises ``ValueError`` naming the valid choices, before a model or a dataset is touched.

Learning rate follows the paper's rule "0.1 per 128 images, scaled linearly with the global batch": leave ``lr``
unset and give ``lr_base``/``lr_base_size``; the global batch is ``batch_size`` (per process) x processes x
``accum_steps``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from tdam.paths import params_dir, runs_dir
from tdam.validation import check_choice

__all__ = [
    "TrainConfig", "load_config", "load_yaml_with_base", "BACKBONES", "ATTENTIONS", "TD_MODES",
    "RUNS_SUBDIR", "semantic_config",
]

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "convnext_tiny", "mobilenetv3_large_100")
ATTENTIONS = (None, "td", "se", "cbam", "eca", "fca")
TD_MODES = ("top", "joint", "additive")
# Feedback distance m allowed per block type (spec 01 §1.2): BasicBlock 0-2, Bottleneck 0-3, ConvNeXt 1-2, MBv3 1.
TD_M_CHOICES = {
    "resnet18": (0, 1, 2), "resnet34": (0, 1, 2), "resnet50": (0, 1, 2, 3), "resnet101": (0, 1, 2, 3),
    "convnext_tiny": (1, 2), "mobilenetv3_large_100": (1,),
}
DATASETS = ("imagenet", "cub200", "stanford_dogs", "coco2014")
AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "constant", "none")
CLIP_MODES = ("norm", "value", "agc")
MIXUP_MODES = ("batch", "pair", "elem")
REMODES = ("pixel", "const", "rand")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
RUNS_SUBDIR = "01_train_imagenet"

# Fields that do not change what is learned: ignored when deciding whether a cached run matches a request.
NON_SEMANTIC = frozenset({
    "name", "output_dir", "resume", "workers", "progress", "log_interval", "device", "compile",
    "checkpoint_every_steps", "pin_memory", "profile",
})


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults are the paper's ResNet-18 ImageNet recipe (spec 04 §4.1)."""

    # --- run ---
    name: str | None = None                # run folder name; default: derived from the model and a config hash
    output_dir: str | None = None          # default: runs/01_train_imagenet/<name>
    profile: str | None = None             # profile overlay that was applied (recorded for provenance)
    seed: int = 0
    device: str = "auto"                   # auto | cpu | cuda | cuda:N
    resume: bool | str = False             # True: <run dir>/last.pth; 'auto': that if it exists; or a path
    # --- model (tdam.create_model) ---
    backbone: str = "resnet18"
    attention: str | None = None           # None (or 'plain') | td | se | cbam | eca | fca
    t: int = 2                             # TD computation steps (attention='td' only)
    m: int = 1                             # TD feedback distance
    td_mode: str = "joint"
    td_stages: list[int] | None = None     # None: the paper's default placement for the backbone
    td_blocks: dict[int, list[int]] | None = None
    model_options: dict[str, Any] = field(default_factory=dict)   # other create_model kwargs
    num_classes: int | None = None         # None: from the dataset
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    # --- data (tdam.data) ---
    dataset: str = "imagenet"
    data_dir: str | None = None            # None: the embedded tdam-shapes dataset (tdam.data.make_shapes_dataset)
    data_size: str = "default"             # embedded dataset size when data_dir is None: default | tiny
    train_split: str = "train"
    val_split: str = "val"
    img_size: int = 224
    crop_pct: float = 0.875                # validation: resize img_size/crop_pct, centre crop img_size
    interpolation: str = "bilinear"
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])   # RandomResizedCrop area range
    hflip: float = 0.5
    auto_augment: str | None = None        # e.g. 'rand-m9-mstd0.5-inc1' (ConvNeXt)
    reprob: float = 0.0                    # random erasing probability
    remode: str = "pixel"
    skip_bad_images: bool = False          # skip and count unreadable images instead of failing on the first
    workers: int = 4
    pin_memory: bool = True
    # --- optimisation (timm.optim / timm.scheduler) ---
    epochs: int = 110
    batch_size: int = 128                  # per process
    accum_steps: int = 1                   # gradient accumulation (micro-batches per optimizer update)
    opt: str = "sgd"
    lr: float | None = None                # None: lr_base * global_batch / lr_base_size
    lr_base: float = 0.1
    lr_base_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 1e-4
    sched: str = "cosine"
    warmup_epochs: float = 5
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    smoothing: float = 0.1
    mixup: float = 0.0                     # mixup alpha (0: off)
    cutmix: float = 0.0                    # cutmix alpha (0: off)
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    clip_grad: float | None = None
    clip_mode: str = "norm"
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    model_ema_warmup: bool = False
    # --- performance ---
    amp: str = "auto"                      # auto: bf16 (or fp16+GradScaler) on CUDA, fp32 on CPU
    channels_last: bool | None = None      # None: on CUDA only
    compile: bool = False
    sync_bn: bool = False                  # SyncBatchNorm across GPUs (CUDA only)
    find_unused_parameters: bool = False
    # --- limits, logging, checkpoints ---
    steps_per_epoch: int | None = None     # cap optimizer updates per epoch (smoke runs)
    val_batches: int | None = None         # cap validation batches (smoke runs)
    eval_every: int = 1
    checkpoint_every_steps: int | None = None   # also save last.pth every N updates (resumable mid-epoch)
    log_interval: int = 50
    progress: bool | None = None           # None: a tqdm bar only when interactive (never under nbval/papermill/CI)

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML 1.1 reads '1e-4' as a string: accept numeric strings for float fields
            v = getattr(self, f.name)
            if isinstance(v, str) and "float" in str(f.type):
                try:
                    setattr(self, f.name, float(v))
                except ValueError:
                    raise ValueError(f"{f.name}={v!r}: expected a number") from None
        if isinstance(self.attention, str) and self.attention.lower() in ("none", "plain", ""):
            self.attention = None                      # 'plain' / 'none' spell the plain backbone in YAML and CLIs
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Type and range checks; raises ValueError naming the valid choices."""
        check_choice("backbone", self.backbone, BACKBONES)
        check_choice("attention", self.attention, ATTENTIONS)
        check_choice("td_mode", self.td_mode, TD_MODES)
        _int("t", self.t, 1)
        _int("m", self.m, 0)
        if self.attention == "td":
            valid_m = TD_M_CHOICES[self.backbone]
            if self.m not in valid_m:
                raise ValueError(f"m={self.m} is not a valid TD feedback distance for {self.backbone}: "
                                 f"valid choices are {list(valid_m)}")
        elif self.m > 3:
            raise ValueError(f"m={self.m} is out of range: valid choices are [0, 1, 2, 3]")
        if self.td_stages is not None:
            if not isinstance(self.td_stages, (list, tuple)) or not all(
                    isinstance(s, int) and 1 <= s <= 4 for s in self.td_stages):
                raise ValueError(f"td_stages={self.td_stages!r}: expected a list of stage numbers in 1..4, e.g. [3, 4]")
            self.td_stages = [int(s) for s in self.td_stages]
        if self.td_blocks is not None:
            if not isinstance(self.td_blocks, Mapping):
                raise ValueError(f"td_blocks={self.td_blocks!r}: expected a mapping stage -> list of block indices")
            self.td_blocks = {int(k): [int(i) for i in v] for k, v in self.td_blocks.items()}
        if not isinstance(self.model_options, Mapping):
            raise ValueError(f"model_options={self.model_options!r}: expected a mapping of create_model kwargs")
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("data_size", self.data_size, ("default", "tiny"))
        check_choice("amp", self.amp, AMP_CHOICES)
        check_choice("sched", self.sched, SCHEDULERS)
        check_choice("clip_mode", self.clip_mode, CLIP_MODES)
        check_choice("mixup_mode", self.mixup_mode, MIXUP_MODES)
        check_choice("remode", self.remode, REMODES)
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ValueError(f"device={self.device!r}: valid choices are 'auto', 'cpu', 'cuda', 'cuda:N'")
        _optcheck_choice(self.opt)
        for name, lo in (("seed", 0), ("img_size", 8), ("workers", 0), ("epochs", 1), ("batch_size", 1),
                         ("accum_steps", 1), ("lr_base_size", 1), ("eval_every", 1), ("log_interval", 1)):
            _int(name, getattr(self, name), lo)
        for name in ("num_classes", "steps_per_epoch", "val_batches", "checkpoint_every_steps"):
            if getattr(self, name) is not None:
                _int(name, getattr(self, name), 1)
        for name in ("drop_rate", "drop_path_rate", "hflip", "reprob", "mixup_prob", "mixup_switch_prob",
                     "smoothing"):
            _float(name, getattr(self, name), 0.0, 1.0)
        for name in ("lr_base", "momentum", "weight_decay", "warmup_epochs", "warmup_lr", "min_lr", "mixup",
                     "cutmix"):
            _float(name, getattr(self, name), 0.0, None)
        _float("crop_pct", self.crop_pct, 0.05, 1.0)
        _float("model_ema_decay", self.model_ema_decay, 0.0, 1.0)
        if self.lr is not None:
            _float("lr", self.lr, 0.0, None)
        if self.clip_grad is not None:
            _float("clip_grad", self.clip_grad, 0.0, None)
        if (not isinstance(self.scale, (list, tuple)) or len(self.scale) != 2
                or not 0 < float(self.scale[0]) <= float(self.scale[1]) <= 1):
            raise ValueError(f"scale={self.scale!r}: expected [min_area, max_area] with 0 < min <= max <= 1")
        self.scale = [float(s) for s in self.scale]
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise ValueError(f"batch_size={self.batch_size} must be even when mixup/cutmix is on (timm pairs images)")
        if not isinstance(self.resume, (bool, str)):
            raise ValueError(f"resume={self.resume!r}: expected true/false or a checkpoint path")
        for name in ("channels_last", "progress"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: expected true, false or null (auto)")
        for name in ("compile", "sync_bn", "find_unused_parameters", "model_ema", "model_ema_warmup",
                     "skip_bad_images", "pin_memory"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: expected true or false")
        return self

    # ------------------------------------------------------------------ derived values
    def global_batch(self, world_size: int = 1) -> int:
        return self.batch_size * world_size * self.accum_steps

    def resolved_lr(self, world_size: int = 1) -> float:
        """The peak learning rate: ``lr`` if given, else the linear scaling rule."""
        if self.lr is not None:
            return float(self.lr)
        return self.lr_base * self.global_batch(world_size) / self.lr_base_size

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``tdam.create_model(backbone, **kwargs)`` (num_classes added by the trainer)."""
        kw: dict[str, Any] = {"attention": self.attention}
        if self.attention == "td":
            kw.update(t=self.t, m=self.m, td_mode=self.td_mode)
            if self.td_stages is not None:
                kw["td_stages"] = tuple(self.td_stages)
            if self.td_blocks is not None:
                kw["td_blocks"] = dict(self.td_blocks)
        if self.drop_rate:
            kw["drop_rate"] = self.drop_rate
        if self.drop_path_rate:
            kw["drop_path_rate"] = self.drop_path_rate
        kw.update(self.model_options)
        return kw

    def model_tag(self) -> str:
        """Short model name in the paper's vocabulary, e.g. ``resnet50_td_joint_t2_m1`` or ``resnet18_se``."""
        if self.attention is None:
            return f"{self.backbone}_plain"
        if self.attention == "td":
            tag = f"{self.backbone}_td_{self.td_mode}_t{self.t}_m{self.m}"
            if self.td_stages is not None:
                tag += "_L" + "".join(str(s) for s in self.td_stages)
            return tag
        return f"{self.backbone}_{self.attention}"

    def run_name(self) -> str:
        """``name`` if set, else ``<model tag>-<profile>-<hash of the semantic config>`` (stable across sessions)."""
        if self.name:
            return self.name
        return f"{self.model_tag()}-{self.profile or 'custom'}-{config_hash(self)}"

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
            raise ValueError(f"unknown config key(s) {unknown}; valid keys are {sorted(valid)}")
        return cls(**dict(d))


def semantic_config(cfg: TrainConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config without the fields that do not change what is learned (paths, workers, logging, ...)."""
    d = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    return {k: v for k, v in sorted(d.items()) if k not in NON_SEMANTIC}


def config_hash(cfg: TrainConfig | Mapping[str, Any]) -> str:
    blob = json.dumps(semantic_config(cfg), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


# ---------------------------------------------------------------------- loading
def load_yaml_with_base(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a params YAML; a ``base:`` entry (a path relative to the file, or a list of them) is loaded first and
    the file's own keys override it. ``model_options`` dictionaries are merged key by key."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (params live under {params_dir()})")
    if path in _seen:
        raise ValueError(f"circular 'base:' chain: {' -> '.join(str(p) for p in (*_seen, path))}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys at the top level")
    bases = data.pop("base", None) or []
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = merge_config(merged, load_yaml_with_base(path.parent / base, (*_seen, path)))
    return merge_config(merged, data)


def merge_config(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if k == "model_options" and isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
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
    parameters left at None keep the file's value). Returns a validated :class:`TrainConfig`."""
    if config is None:
        data: dict[str, Any] = {}
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        data = load_yaml_with_base(_resolve_params_path(config, "imagenet"))
    if profile:
        data = merge_config(data, load_yaml_with_base(_resolve_params_path(profile, "profiles")))
        data["profile"] = Path(profile).stem
    data = merge_config(data, {k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data)


# ---------------------------------------------------------------------- checks
def _int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r}: expected an integer >= {lo}")
    if value < lo:
        raise ValueError(f"{name}={value} is out of range: expected an integer >= {lo}")


def _float(name: str, value: Any, lo: float, hi: float | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r}: expected a number")
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}={value} is out of range: expected {rng}")


def _optcheck_choice(opt: str) -> None:
    from timm.optim import list_optimizers

    valid = list_optimizers()
    if opt.lower() not in valid:
        raise ValueError(f"opt={opt!r} is not a timm optimizer: valid choices are {valid}")
