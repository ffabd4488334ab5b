"""Which ImageNet checkpoint a transfer run starts from: ``backbone_checkpoint`` names it in one of three ways.

1. **A params file of** ``params/imagenet/`` (``resnet50_td_joint_t2_m1``): the finished run that notebook 01 or
   ``python -m tdam.train --config <name> --data_dir <ImageNet>`` trained from that file with the paper's recipe
   (profile ``paper``), found under ``runs/01_train_imagenet/`` by its folder name
   (``<model tag>-paper-e<epochs>-<identity>``) and its record (``run.json``: the same request, whatever ImageNet
   root or format it read). Its ``best.pth`` (else ``last.pth``) is the checkpoint.
2. **A run folder name** under ``runs/01_train_imagenet/`` (``resnet50_td_joint_t2_m1-paper-e160-1a2b3c4d``): that
   run, which must be finished.
3. **A path** to a checkpoint file (relative paths are read from the repository root).

A named run that is missing or unfinished is an error naming the command that trains or finishes it; two finished
runs of one params file (trained from different ImageNet copies) are an error naming both folders. ``required=False``
(``--dry-run``, ``--print-config``) accepts a params-file name whose run is not trained yet: the backbone's model is
then the params file's, and the note says what was assumed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdam.errors import ConfigError
from tdam.paths import params_dir, repo_root, runs_dir
from tdam.runs import BEST_FILE, IMAGENET_KIND, LAST_FILE, plain_json, read_record, run_state

__all__ = ["Backbone", "resolve_backbone", "IGNORED_FOR_MATCH"]

#: request keys a params-file name does not pin down: where the ImageNet copy lies and in which format it was read
IGNORED_FOR_MATCH = ("data_dir", "dataset", "data_size")


@dataclass(frozen=True)
class Backbone:
    """A resolved ``backbone_checkpoint``: as given (``spec``), the checkpoint (None: not trained yet, allowed only when not required),
    the backbone's model description when it is known without the checkpoint (a params file's), and a note saying
    how it was resolved or what was assumed."""

    spec: str
    checkpoint: Path | None
    model: dict[str, Any] | None
    note: str
    missing: str = ""                    # what is missing and the command that trains it (checkpoint None)

    def require(self) -> "Backbone":
        """``self`` when its checkpoint is there, else :class:`~tdam.errors.ConfigError` naming what to run."""
        if self.checkpoint is None:
            raise ConfigError(f"backbone_checkpoint {self.spec!r}: {self.missing}")
        return self


def _finished_checkpoint(folder: Path) -> Path:
    best = folder / BEST_FILE
    return best if best.is_file() else folder / LAST_FILE


def _from_params(name: str, required: bool) -> Backbone:
    from tdam.train.config import load_config, semantic_config   # the trainer's config: only when a name is given

    cfg = load_config(name, profile="paper")
    want = {k: v for k, v in semantic_config(cfg).items() if k not in IGNORED_FOR_MATCH}
    root = runs_dir() / IMAGENET_KIND
    prefix = "-".join(p for p in cfg.name_parts() if p) + "-"
    finished, unfinished = [], []
    for folder in sorted(root.glob(f"{prefix}*")) if root.is_dir() else []:
        try:
            record = read_record(folder)
        except ValueError:
            continue
        if record is None:
            continue
        have = {k: v for k, v in plain_json(record["request"]).items() if k not in IGNORED_FOR_MATCH}
        if have != plain_json(want):
            continue
        (finished if run_state(folder).state == "finished" else unfinished).append(folder)
    command = f"python -m tdam.train --config {name} --data_dir <ImageNet root>"
    if len(finished) == 1:
        return Backbone(name, _finished_checkpoint(finished[0]), None,
                        f"{name}: the finished run {finished[0].name} of params/imagenet/{name}.yaml")
    if len(finished) > 1:
        raise ConfigError(f"backbone_checkpoint {name!r}: {len(finished)} finished runs of params/imagenet/{name}.yaml "
                          f"under {root}: {[f.name for f in finished]}; name one by its folder name or give the path "
                          f"of its best.pth")
    if unfinished:
        missing = f"its run {unfinished[0].name} is not finished; finish it: {command} --resume true"
    else:
        missing = (f"no run of params/imagenet/{name}.yaml (the paper recipe, {cfg.epochs} epochs) under {root}; "
                   f"train it: {command}")
    found = Backbone(name, None, dict(cfg.model), f"assumed: the backbone of params/imagenet/{name}.yaml "
                                                  f"({cfg.model_tag()}); {missing}", missing)
    return found.require() if required else found


def _from_run_folder(folder: Path) -> Backbone:
    state = run_state(folder).state
    if state != "finished":
        raise ConfigError(f"backbone_checkpoint {folder.name!r}: the run {folder} is {state}, not finished; finish it "
                          f"with python -m tdam.train (its command with --resume true)")
    return Backbone(folder.name, _finished_checkpoint(folder), None, f"the finished run {folder.name}")


def resolve_backbone(spec: str | Path, *, required: bool = True) -> Backbone:
    """The checkpoint ``spec`` names (see the module docstring). Raises :class:`~tdam.errors.ConfigError` for a
    named run that is missing, unfinished or ambiguous, ``FileNotFoundError`` for a path that is not a file (naming
    the three forms)."""
    text = str(spec)
    bare = "/" not in text and not Path(text).suffix
    if bare and (params_dir() / "imagenet" / f"{text}.yaml").is_file() and not text.startswith("_"):
        return _from_params(text, required)
    if bare and (runs_dir() / IMAGENET_KIND / text).is_dir():
        return _from_run_folder(runs_dir() / IMAGENET_KIND / text)
    path = Path(text).expanduser()
    path = path if path.is_absolute() else repo_root() / path
    if path.is_file():
        return Backbone(text, path, None, f"the checkpoint {path}")
    available = sorted(p.stem for p in (params_dir() / "imagenet").glob("[!_]*.yaml"))
    raise FileNotFoundError(f"backbone_checkpoint {text!r} is not a checkpoint file ({path} does not exist), a "
                            f"params/imagenet/ name ({', '.join(available)}) or a run folder under "
                            f"{runs_dir() / IMAGENET_KIND}")
