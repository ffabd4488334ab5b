"""Validated parameters of the analysis notebooks (05 attention shift, 06 weak localisation, 09 selectivity).

Each notebook's ``parameters`` cell holds flat literals; the next cell turns them into one of these dataclasses, which
checks types and ranges and raises ``ValueError`` naming the valid choices before any model or data is touched.
Empty strings mean "the default": checkpoints from ``tdam.train.ensure_checkpoint(backbone, attention,
profile=...)``, data from the checkpoint's own run config (the embedded tdam-shapes dataset by default).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from tdam.validation import check_choice

__all__ = ["BACKBONES", "AttentionShiftParams", "LocalizationParams", "SelectivityParams"]

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "convnext_tiny", "mobilenetv3_large_100")
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
SPLITS = ("train", "val")
DEVICES = ("cpu", "cuda", "auto")


def _int(name: str, v, lo: int, hi: int | None = None) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name}={v!r}: expected an integer {rng}")


def _path(name: str, v: str, *, file: bool) -> None:
    if not isinstance(v, str):
        raise ValueError(f"{name}={v!r}: expected a path string ('' for the default)")
    if v and not (Path(v).expanduser().is_file() if file else Path(v).expanduser().is_dir()):
        kind = "checkpoint file" if file else "dataset folder"
        raise ValueError(f"{name}={v!r}: no such {kind} ('' for the default)")


def _device(v: str) -> None:
    if not (v in DEVICES or (isinstance(v, str) and v.startswith("cuda:"))):
        raise ValueError(f"device={v!r} is not valid; choices: {list(DEVICES)} or 'cuda:N'")


@dataclass
class _Common:
    backbone: str = "resnet18"
    td_checkpoint: str = ""        # '' -> tdam.train.ensure_checkpoint(backbone, 'td', profile=profile)
    baseline_checkpoint: str = ""  # '' -> tdam.train.ensure_checkpoint(backbone, None, profile=profile)
    profile: str = "smoke"
    data_dir: str = ""             # '' -> the data the checkpoint was trained on (embedded tdam-shapes by default)
    split: str = "val"
    batch_size: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_choice("backbone", self.backbone, BACKBONES)
        _path("td_checkpoint", self.td_checkpoint, file=True)
        _path("baseline_checkpoint", self.baseline_checkpoint, file=True)
        if not isinstance(self.profile, str) or not self.profile:
            raise ValueError(f"profile={self.profile!r}: expected a profile name such as 'smoke'")
        _path("data_dir", self.data_dir, file=False)
        check_choice("split", self.split, SPLITS)
        _int("batch_size", self.batch_size, 1)
        _device(self.device)
        self.validate()

    def validate(self) -> None:
        """Notebook-specific checks."""

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class AttentionShiftParams(_Common):
    """Notebook 05: Grad-CAM over the computation steps of the last TD stage, TD vs plain baseline."""

    num_images: int = 4
    two_objects: bool = True       # choose images holding two objects of different classes (the side-car file)
    image_indices: list[int] = field(default_factory=list)  # explicit dataset indices (override the choice)
    seed: int = 0

    def validate(self) -> None:
        _int("num_images", self.num_images, 1, 64)
        if not isinstance(self.two_objects, bool):
            raise ValueError(f"two_objects={self.two_objects!r}: expected True or False")
        if not isinstance(self.image_indices, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.image_indices
        ):
            raise ValueError(f"image_indices={self.image_indices!r}: expected a list of non-negative dataset indices")
        self.image_indices = list(self.image_indices)
        _int("seed", self.seed, 0)


@dataclass
class LocalizationParams(_Common):
    """Notebook 06: Top-1 / Top-5 / GT-known Loc from Grad-CAM boxes (also under the unique-box rule for TD)."""

    max_images: int = 240          # 0: the whole split; else a seeded uniform sample
    num_figure_images: int = 12
    seed: int = 0

    def validate(self) -> None:
        _int("max_images", self.max_images, 0)
        _int("seed", self.seed, 0)
        _int("num_figure_images", self.num_figure_images, 1, 64)


@dataclass
class SelectivityParams(_Common):
    """Notebook 09: ρ(X, Y), H(X, Y^j), H(Y) of ResNet blocks (Table 3, Figs. 3-4).

    ``layer4_blocks`` / ``layer3_blocks`` are 1-based block numbers as the paper names them ([] = the paper's choice
    where the backbone has those blocks: layer4 2-3, layer3 2-6); block 1 of a stage cannot be analysed (its input
    and output sizes differ).
    """

    max_images: int = 128          # 0: the whole split; else a seeded uniform sample
    seed: int = 0
    layer4_blocks: list[int] = field(default_factory=list)
    layer3_blocks: list[int] = field(default_factory=list)

    def validate(self) -> None:
        check_choice("backbone", self.backbone, RESNETS)
        _int("max_images", self.max_images, 0)
        _int("seed", self.seed, 0)
        for name in ("layer4_blocks", "layer3_blocks"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or not all(
                isinstance(b, int) and not isinstance(b, bool) and b >= 2 for b in v
            ):
                raise ValueError(f"{name}={v!r}: expected 1-based block numbers >= 2 (block 1 changes the size), "
                                 "or [] for the paper's choice")
            setattr(self, name, list(v))

    def blocks(self, model) -> dict[int, list[int]]:
        """{stage: [0-based indices]} for ``collect_selectivity``: the given block numbers, or the paper's choice
        (``default_selectivity_blocks``) for a stage left empty."""
        from tdam.analysis.selectivity import default_selectivity_blocks

        out = default_selectivity_blocks(model)
        for stage, given in ((4, self.layer4_blocks), (3, self.layer3_blocks)):
            if given:
                out[stage] = [b - 1 for b in given]
        return out
