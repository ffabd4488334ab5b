"""Validated parameters of the evaluation notebooks (02, 03, 04, 08): the cell after ``parameters`` builds one of
these, so a wrong value fails at the top with a message naming the valid choices."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from tdam.validation import check_choice

from .complexity_report import table1_specs

__all__ = ["V2_VARIANTS", "resolve_device", "EvalParams", "ComplexityParams", "AblationParams", "ResolutionParams"]

V2_VARIANTS = {
    "matched-frequency": "imagenetv2-matched-frequency-format-val",
    "threshold0.7": "imagenetv2-threshold0.7-format-val",
    "top-images": "imagenetv2-top-images-format-val",
}
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "convnext_tiny", "mobilenetv3_large_100")
ATTENTIONS = ("plain", "td", "se", "cbam", "eca", "fca")
AMPS = ("fp32", "bf16", "fp16")


def _pos_int(name, value, lo=1, optional=False):
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name}={value!r}: expected an integer >= {lo}{' or None' if optional else ''}")


def _dir(name, value):
    if value is not None and not Path(value).expanduser().is_dir():
        raise ValueError(f"{name}={value!r}: directory not found")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda', 'cuda:N' as given (cuda must exist)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or str(device).startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: no CUDA device is available here; use 'cpu' or 'auto'")
        return torch.device(device)
    raise ValueError(f"device={device!r} is not valid: valid choices are 'auto', 'cpu', 'cuda', 'cuda:N'")


def _attention(a: str | None) -> str | None:
    return None if a in (None, "plain") else a


@dataclass
class EvalParams:
    """Notebook 02 (Table 1 accuracy columns on ImageNet V1 and V2)."""

    checkpoint: str | None = None
    backbone: str = "resnet18"
    attention: str = "td"
    profile: str | None = "smoke"
    data_dir: str | None = None
    v2_dir: str | None = None
    v2_variant: str = "matched-frequency"
    img_size: int | None = None
    crop_pct: float = 0.875
    batch_size: int = 50
    workers: int = 0
    device: str = "auto"
    amp: str = "fp32"
    use_ema: bool = False
    max_images: int | None = None

    def __post_init__(self):
        if self.checkpoint is not None and not Path(self.checkpoint).expanduser().is_file():
            raise ValueError(f"checkpoint={self.checkpoint!r}: file not found")
        check_choice("backbone", self.backbone, ARCHS)
        check_choice("attention", self.attention or "plain", ATTENTIONS)
        check_choice("v2_variant", self.v2_variant, tuple(V2_VARIANTS))
        check_choice("amp", self.amp, AMPS)
        _dir("data_dir", self.data_dir)
        _dir("v2_dir", self.v2_dir)
        _pos_int("img_size", self.img_size, 8, optional=True)
        _pos_int("batch_size", self.batch_size)
        _pos_int("workers", self.workers, 0)
        _pos_int("max_images", self.max_images, optional=True)
        if not 0.05 <= float(self.crop_pct) <= 1.0:
            raise ValueError(f"crop_pct={self.crop_pct!r}: expected a number in [0.05, 1]")
        self.torch_device = resolve_device(self.device)

    def resolve_checkpoint(self) -> Path:
        """The checkpoint path: as given, or the cached/trained run of (backbone, attention, profile)."""
        if self.checkpoint is not None:
            return Path(self.checkpoint).expanduser()
        from tdam.train import ensure_checkpoint

        return Path(ensure_checkpoint(self.backbone, _attention(self.attention), profile=self.profile))


def row_name(name: str) -> str:
    """A paper row/method name as notebook parameters write it: without '=' ("TDjoint(t2;m1)" for
    "TDjoint(t=2;m=1)"), because papermill cannot parse a parameter line holding '=' inside a string."""
    return str(name).replace("=", "")


@dataclass
class ComplexityParams:
    """Notebook 03 (Table 1 cost columns and scaling)."""

    flops_backbones: list = field(default_factory=lambda: list(ARCHS[:5]))
    flops_img_size: int = 224
    speed_backbones: list = field(default_factory=lambda: ["resnet18"])
    speed_methods: list = field(default_factory=lambda: ["ResNet", "SE", "TDjoint(t2;m1)"])
    batch_size: int = 4
    img_size: int = 64
    dtype: str = "fp32"
    channels_last: bool = False
    warmup: int = 2
    repeats: int = 3
    device: str = "auto"
    scaling_backbone: str = "resnet18"
    t_values: list = field(default_factory=lambda: [1, 2, 3])
    batch_values: list = field(default_factory=lambda: [1, 4, 16])
    resolution_values: list = field(default_factory=lambda: [32, 64, 128])

    def __post_init__(self):
        for name in ("flops_backbones", "speed_backbones"):
            for b in getattr(self, name):
                check_choice(name, b, ARCHS)
        check_choice("scaling_backbone", self.scaling_backbone, ARCHS)
        methods = {row_name(s["method"]) for s in table1_specs(self.speed_backbones)}
        for m in self.speed_methods:
            check_choice("speed_methods", row_name(m), sorted(methods))
        check_choice("dtype", self.dtype, AMPS)
        for name in ("flops_img_size", "img_size"):
            _pos_int(name, getattr(self, name), 8)
        _pos_int("batch_size", self.batch_size)
        _pos_int("warmup", self.warmup, 0)
        _pos_int("repeats", self.repeats)
        for name, lo in (("t_values", 1), ("batch_values", 1), ("resolution_values", 8)):
            vals = getattr(self, name)
            if not vals:
                raise ValueError(f"{name} must not be empty")
            for v in vals:
                _pos_int(name, v, lo)
        if not isinstance(self.channels_last, bool):
            raise ValueError(f"channels_last={self.channels_last!r}: expected true or false")
        self.torch_device = resolve_device(self.device)

    def speed_specs(self) -> list[dict]:
        """Table 1 rows to time: those of ``speed_backbones`` named in ``speed_methods`` (all when it is empty)."""
        specs = table1_specs(self.speed_backbones)
        wanted = {row_name(m) for m in self.speed_methods}
        return [s for s in specs if not wanted or row_name(s["method"]) in wanted]

    def speed(self) -> dict:
        """kwargs of :func:`tdam.evaluation.complexity_report.measure_speed`."""
        return dict(batch_size=self.batch_size, img_size=self.img_size, device=self.torch_device, dtype=self.dtype,
                    channels_last=self.channels_last, warmup=self.warmup, repeats=self.repeats)


@dataclass
class AblationParams:
    """Notebook 04 (supplement Table 2)."""

    sets: list = field(default_factory=lambda: ["mode_and_distance"])
    rows: list = field(default_factory=lambda: ["ResNet", "TDj(m1)"])
    profile: str | None = "smoke"
    backbone_override: str | None = "resnet18"
    data_dir: str | None = None
    train: bool = True
    batch_size: int = 50
    workers: int = 0
    device: str = "auto"
    max_images: int | None = None

    def __post_init__(self):
        from .ablations import TABLE2_SETS, table2_entries

        for s in self.sets:
            check_choice("sets", s, TABLE2_SETS)
        entries = table2_entries(self.sets)
        known = [row_name(e["row"]) for e in entries]
        for r in self.rows:
            check_choice("rows", row_name(r), known)
        if self.backbone_override is not None:
            check_choice("backbone_override", self.backbone_override, ARCHS)
        _dir("data_dir", self.data_dir)
        _pos_int("batch_size", self.batch_size)
        _pos_int("workers", self.workers, 0)
        _pos_int("max_images", self.max_images, optional=True)
        self.torch_device = resolve_device(self.device)

    def entries(self) -> list[dict]:
        from .ablations import table2_entries

        entries = table2_entries(self.sets)
        wanted = {row_name(r) for r in self.rows}
        return [e for e in entries if not wanted or row_name(e["row"]) in wanted]


@dataclass
class ResolutionParams:
    """Notebook 08 (supplement Fig. 2: accuracy from 112 to 448 px)."""

    backbone: str = "resnet18"
    attentions: list = field(default_factory=lambda: ["plain", "td"])
    checkpoints: list = field(default_factory=list)
    profile: str | None = "smoke"
    data_dir: str | None = None
    resolutions: list | None = None
    train_img_size: int | None = None
    batch_size: int = 50
    workers: int = 0
    device: str = "auto"
    max_images: int | None = 120

    PAPER_RESOLUTIONS = (112, 140, 168, 196, 224, 280, 336, 392, 448)

    def __post_init__(self):
        check_choice("backbone", self.backbone, ARCHS)
        for a in self.attentions:
            check_choice("attentions", a, ATTENTIONS)
        if self.checkpoints and len(self.checkpoints) != len(self.attentions):
            raise ValueError(f"checkpoints ({len(self.checkpoints)}) must be empty or one per attention "
                             f"({self.attentions})")
        for c in self.checkpoints:
            if not Path(c).expanduser().is_file():
                raise ValueError(f"checkpoint {c!r}: file not found")
        _dir("data_dir", self.data_dir)
        if self.resolutions is not None:
            if not self.resolutions:
                raise ValueError("resolutions must be None or a non-empty list")
            for r in self.resolutions:
                _pos_int("resolutions", r, 8)
        _pos_int("train_img_size", self.train_img_size, 8, optional=True)
        _pos_int("batch_size", self.batch_size)
        _pos_int("workers", self.workers, 0)
        _pos_int("max_images", self.max_images, optional=True)
        self.torch_device = resolve_device(self.device)

    def resolve_resolutions(self, train_img_size: int) -> list[int]:
        """The given list, or the paper's 112 ... 448 scaled by train_img_size / 224 (the paper trained at 224)."""
        if self.resolutions is not None:
            return [int(r) for r in self.resolutions]
        return [int(round(r * train_img_size / 224)) for r in self.PAPER_RESOLUTIONS]

    def resolve_checkpoints(self) -> dict[str, Path]:
        """{attention label: checkpoint}: as given, or the cached/trained runs of (backbone, attention, profile)."""
        if self.checkpoints:
            return {a: Path(c).expanduser() for a, c in zip(self.attentions, self.checkpoints)}
        from tdam.train import ensure_checkpoint

        return {a: Path(ensure_checkpoint(self.backbone, _attention(a), profile=self.profile)) for a in self.attentions}
