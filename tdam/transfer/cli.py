"""Command line: ``python -m tdam.transfer --config <yaml> [--key value ...]`` (also ``tdam-transfer``).

Examples::

    python -m tdam.transfer --config cub200_wsdan_resnet50_td --data_dir /data/CUB_200_2011
    torchrun --standalone --nproc_per_node 4 -m tdam.transfer --config coco2014_asl_resnet50_td --data_dir /data/coco
    python -m tdam.transfer --config params/transfer/cub200_wsdan_resnet50_td.yaml --dry-run   # the recipe only
    python -m tdam.transfer --config cub200_wsdan_resnet50_td --print-config                  # the resolved config

``--config``: a params file under ``params/transfer/`` (a path or its name). ``--key value`` sets any key of the file,
the transfer keys (:class:`tdam.transfer.TransferConfig`: task, dataset, data_dir, backbone_checkpoint, the WS-DAN /
ASL settings) and the trainer's (``python -m tdam.train --help``); values are read as YAML.

``backbone_checkpoint`` is the ImageNet backbone: the name of its params file (``resnet50_td_joint_t2_m1``: the
finished run notebook 01 / ``python -m tdam.train --config <name> --data_dir <ImageNet>`` trained from it), a run
folder under ``runs/01_train_imagenet/`` or a checkpoint path (:mod:`tdam.transfer.backbone`). A missing or unfinished
run is an error naming the command that trains it.

``batch_size`` is the GLOBAL batch (the paper's 12 for WS-DAN, 64 for ASL) whatever the number of processes: the
per-process batch is derived (global / processes / accum_steps; one that does not divide is refused) and printed in
the recipe; the lr is the recipe's fixed value, never rescaled.

The run folder is ``runs/07_transfer/<name>-e<epochs>-<identity>`` (the identity hashes every setting and the
backbone checkpoint's content). Rerunning the same command continues an interrupted run from its ``last.pth``
(``--resume`` is not an option here: the folder is the run) and reports a finished one without training it;
any changed setting trains a new run beside it. ``--dry-run`` and ``--print-config`` read neither the data nor
the backbone checkpoint when they are absent: the dataset's published size and the backbone's params file are assumed
and said so. Exit codes, rank-0-only printing and the run folder's lock: as ``python -m tdam.train`` (its ``--help``;
:mod:`tdam.errors`): 0 done, 1 non-finite loss, 2 invalid configuration, 3 bad data, 4 cannot write, 5 interrupted
(rerun the command to resume), 6 another process holds the run folder, 70 a bug.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import MISSING, fields
from typing import Any, Sequence

import yaml

from tdam import errors
from tdam.train.cli import RunCommand, command_parser, env_rank, options_help, parse_overrides, yaml_value
from tdam.train.config import TrainConfig

__all__ = ["main", "help_text"]

PROG = "python -m tdam.transfer"
OPTIONS = (
    ("--config", "YAML", "transfer params YAML (a path, or a name under params/transfer/)"),
    ("--print-config", None, "print the resolved config (batch_size: the global batch) and exit"),
    ("--dry-run", None, "print the resolved recipe (task, backbone, data, epochs, global and per-process batch, lr, "
                        "schedule, updates, device, run folder, transforms) and exit without training or reading "
                        "the data"),
)


def _field_types() -> dict[str, str]:
    from tdam.transfer.run import TransferConfig, TRANSFER_KEYS

    types = {f.name: str(f.type) for f in fields(TrainConfig)}
    types.update({f.name: str(f.type) for f in fields(TransferConfig) if f.name in TRANSFER_KEYS})
    return types


def help_text(width: int = 100) -> str:
    """The ``--help`` text: usage, this module's documentation, the options and every transfer key with its
    default (the trainer's keys: ``python -m tdam.train --help``)."""
    from tdam.transfer.run import TransferConfig, TRANSFER_KEYS

    usage = (f"usage: {PROG} [-h] " + " ".join(f"[{flag}{' ' + meta if meta else ''}]" for flag, meta, _ in OPTIONS)
             + " [--<key> VALUE ...]")
    out = [usage, "", __doc__.strip(), "", *options_help(OPTIONS, width), "", "transfer keys (defaults):"]
    for f in fields(TransferConfig):
        if f.name in TRANSFER_KEYS:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            out.append(f"  --{f.name} {f.type} (default: {yaml_value(default)})")
    out += ["", "trainer keys (batch_size: the global batch here): see python -m tdam.train --help"]
    return "\n".join(out) + "\n"


def _schedule(tcfg) -> str:
    """The task's own lr schedule in words (the trainer's warm-up and cosine do not apply)."""
    lr = tcfg.train.resolved_lr(tcfg.world_size)
    if tcfg.task == "wsdan":
        return (f"lr {lr:g} x {tcfg.lr_decay_rate:g} every {tcfg.lr_decay_epochs:g} epochs (WS-DAN's StepLR), fixed: "
                f"not rescaled with the batch")
    return (f"OneCycle over {tcfg.onecycle_epochs} epochs (max lr {lr:g}, pct_start {tcfg.pct_start:g}), training "
            f"stops after epoch {tcfg.train.epochs}; fixed: not rescaled with the batch")


def describe_transfer(tcfg, detail: bool = False) -> str:
    """The trainer's recipe lines (:func:`tdam.train.recipe.describe_recipe`) with the task's schedule and run
    folder, then the transfer lines: task and dataset, the backbone and how it was resolved (or assumed), the batch
    rule; ``detail`` (``--dry-run``) adds the task's train and eval transforms
    (``tdam.data.build_transform(split, img_size, preset=task)``)."""
    from tdam.data import build_transform
    from tdam.train.recipe import describe_recipe

    folder = None if tcfg.train.output_dir else (
        f"runs/07_transfer/{tcfg.train.name or f'{tcfg.task}_{tcfg.dataset}'}-e{tcfg.train.epochs}-<identity: "
        f"decided by the backbone checkpoint, not trained yet>")
    data = tcfg.train.replace(data_dir=tcfg.data_dir)   # the trainer's config leaves the transfer data out
    lines = [describe_recipe(data, gpus=None, schedule=_schedule(tcfg), run_folder=folder or str(tcfg.train.run_dir())),
             f"task:        {tcfg.task} on {tcfg.dataset}",
             f"backbone:    {tcfg.backbone.note if tcfg.backbone is not None else tcfg.backbone_checkpoint}",
             f"batch rule:  batch_size {tcfg.global_batch()} is the global batch; per process "
             f"{tcfg.train.batch_size} = {tcfg.global_batch()} / {tcfg.world_size} process"
             f"{'es' if tcfg.world_size != 1 else ''} / {tcfg.train.accum_steps} accumulation step"
             f"{'s' if tcfg.train.accum_steps != 1 else ''}"]
    if detail:
        for split, title in (("train", "train transform:"), ("val", "eval transform:")):
            tf = build_transform(split, tcfg.train.img_size, preset=tcfg.task)
            lines += [title, *(f"  {line.strip()}" for line in repr(tf).splitlines()[1:-1])]
    return "\n".join(lines)


class _TransferCommand(RunCommand):
    """``python -m tdam.transfer``'s body (run as ``python -m tdam.train``'s)."""

    resume_hint = "rerun the same command to resume"

    def __call__(self, argv: Sequence[str] | None) -> int:
        args, rest = command_parser(PROG, OPTIONS).parse_known_args(argv)
        if args.help:
            print(help_text(), end="")
            return errors.EXIT_OK
        if args.config is None:
            raise errors.ConfigError("--config is required: a params file under params/transfer/ (a path or a name)")

        from tdam.train.cache import find_checkpoint, run_result
        from tdam.transfer.report import ensure_transfer_run
        from tdam.transfer.run import load_transfer_config, run_transfer, transfer_key
        from tdam.transfer.tasks import ASLTask, WSDANTask

        self.rank = env_rank()
        main_process = self.rank == 0
        overrides: dict[str, Any] = parse_overrides(rest, _field_types())
        if "resume" in overrides:
            raise errors.ConfigError("--resume is not an option of python -m tdam.transfer: rerunning the same "
                                     "command continues an interrupted run (its folder is the run)")
        only_print = args.print_config or args.dry_run
        tcfg = load_transfer_config(args.config, require_backbone=not only_print, **overrides)
        if args.print_config:
            if main_process:
                print(yaml.safe_dump(tcfg.to_dict(), sort_keys=False), end="")
            return errors.EXIT_OK
        if main_process:
            print(describe_transfer(tcfg, detail=args.dry_run), flush=True)
        if args.dry_run:
            return errors.EXIT_OK
        self.run_dir = run_dir = tcfg.train.run_dir()
        cfg = tcfg.train
        if not main_process:        # rank 0 looks up, locks and records the run; the others join its training
            if find_checkpoint(cfg, key=transfer_key(tcfg)) is not None:
                return errors.EXIT_OK
            result = run_transfer(dataclasses.replace(tcfg, train=cfg.replace(resume="auto")))
            return errors.EXIT_INTERRUPTED if result.interrupted else errors.EXIT_OK
        trained = []

        def train_fn(c):
            trained.append(run_transfer(c))
            return trained[-1]

        ensure_transfer_run(tcfg, wait=False, train_fn=train_fn)   # KeyboardInterrupt when interrupted: exit 5
        if trained:
            result = trained[-1]
        else:
            print(f"{run_dir} already holds this run, finished: nothing trained (another setting trains a new run)")
            metric = (WSDANTask if tcfg.task == "wsdan" else ASLTask).primary_metric
            result = dataclasses.replace(run_result(run_dir), primary_metric=metric)
        print(result.done_line(), flush=True)
        return errors.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tdam.transfer``: see the module docstring; returns the exit code (:mod:`tdam.errors`)."""
    command = _TransferCommand()
    return errors.run_command(command, argv, prog=PROG, log_path_fn=command.log_path, explain=command.explain)


if __name__ == "__main__":
    sys.exit(main())
