"""Command line: ``python -m tdam.train --config <yaml> [--profile NAME] [--key value ...]`` (also ``tdam-train``).

Examples::

    python -m tdam.train --config params/imagenet/resnet50_td_joint_t2_m1.yaml --data_dir /data/imagenet
    python -m tdam.train --config resnet18_td_joint_t2_m1 --profile smoke          # embedded data, CPU minute
    torchrun --standalone --nproc_per_node 4 -m tdam.train --config <yaml> --data_dir /data/imagenet
    python -m tdam.train --config <yaml> --resume true                             # continue the run (see below)
    python -m tdam.train --config <yaml> --print-config                            # show the resolved config
    python -m tdam.train --config resnet50_td_joint_t2_m1 --explain                # ... with each value's source
    python -m tdam.train --config resnet50_td_joint_t2_m1 --data_dir /data/imagenet --dry-run   # the recipe only

``--key value`` sets any :class:`~tdam.train.config.TrainConfig` field; values are read as YAML (``--lr 0.4``,
``--resume true``); a bare ``--flag`` means true. The model (the keyword arguments of ``tdam.create_model``) is set
key by key with dotted keys, or as a YAML mapping merged into the file's::

    python -m tdam.train --config resnet50_td_joint_t2_m1 --model.t 3 --model.td_stages [4]
    python -m tdam.train --config resnet50_td_joint_t2_m1 --model '{arch: resnet18, m: 2}'
    python -m tdam.train --config resnet18_se --model.attention plain

A run's folder is named by everything that changes its weights, epochs included
(``runs/01_train_imagenet/<model>-<profile>-e<epochs>-<hash>``). ``--resume true`` continues the run's own folder when
it holds a checkpoint (an interrupted run); otherwise it continues the run that differs only in the schedule (epochs,
lr, warm-up, ...) as a NEW run that names it as its parent (``...-e5-from3-<hash>``, the parent's state hard-linked
in): ``--epochs 5 --resume true`` extends a finished 3-epoch run without changing it. A resume that would change the
model or the data is refused naming each difference, and one that would train nothing says so
(:mod:`tdam.train.lineage`). ``--resume <path>`` continues that checkpoint the same way.

Before training it prints the resolved recipe (:func:`tdam.train.recipe.describe_recipe`: data, epochs, global
batch, lr, updates, device, run folder; ``--dry-run`` prints only that); a finished run ends with the line
``done: best val top-1 <acc>% at epoch <n>; checkpoint <run dir>/best.pth``. A run that already finished with the
same configuration is not trained again: the command says so and prints that line (exit 0). A run trained to the
end whose outputs are missing (killed after its last save) gets them written, without training. ``--help`` lists every config field
with its type, default and meaning, without loading torch.

Errors end with one ``error:`` line naming the file, value or path, and an exit code (defined in
:mod:`tdam.errors`):

    0  the run finished                     4  the run folder cannot be written (no space, read-only, permission)
    1  non-finite loss (last.pth is kept)    5  interrupted after saving a resumable last.pth: rerun --resume true
    2  invalid configuration                6  another live run holds the run folder (its PID and host named)
    3  bad data (layout, shard, parquet row, label, annotation, unreadable image; file and record named)
   70  internal error (a bug): the traceback is written to the run's train.log or to a file the message names

Under torchrun or SLURM, rank 0 alone prints the recipe, the progress and the summary; an error is printed by each
rank that meets it (``[rank N]`` before the message of rank N > 0).
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from tdam import errors
from tdam.runs import LOG_FILE
from tdam.train.config import GROUPS, TrainConfig, load_yaml

__all__ = ["main", "parse_overrides", "help_text", "command_parser", "options_help", "env_rank", "RunCommand"]

PROG = "python -m tdam.train"
OPTIONS = (   # the CLI's own options: (flag, metavar or None for a switch, meaning)
    ("--config", "YAML", "params YAML (a path, or a name under params/imagenet/)"),
    ("--profile", "NAME", "overlay under params/profiles/ (e.g. smoke: embedded data on CPU; paper: none)"),
    ("--print-config", None, "print the resolved config and exit"),
    ("--explain", None, "print the resolved config with the source of every value (the paper, the authors' script "
                        "or the official code, tdam's choice, an override) and exit"),
    ("--dry-run", None, "print the resolved recipe (data, epochs, batch, lr, updates, device, run folder), the train "
                        "and eval transforms and the lr at each epoch, and exit without training or reading the data "
                        "(without the data: the dataset's published size, said so)"),
)


def parse_overrides(tokens: Sequence[str], field_types: dict[str, str] | None = None) -> dict[str, Any]:
    """``['--epochs', '3', '--model.td_stages=[4]', '--compile']`` ->
    ``{'epochs': 3, 'model': {'td_stages': [4]}, 'compile': True}``. ``field_types``: each key's type as written
    (default: :class:`TrainConfig`'s fields), for the bare-flag check."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise ValueError(f"unexpected argument {tok!r}: overrides are written --key value or --key=value")
        key, eq, value = tok[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value, i = tokens[i + 1], i + 1
            else:
                _check_bare_flag(key, field_types)
                value = "true"
        if not value.strip():                     # --data_dir "$IMAGENET" with the variable unset: not null
            raise ValueError(f"--{key} was given an empty value (an unset shell variable?): write --{key} VALUE, or "
                             f"--{key} null for the default")
        parsed = load_yaml(value, f"--{key}")      # the params files' loader: syntax errors name the flag
        section, dot, sub = key.partition(".")
        if dot:                                   # --model.t 3: one key of a mapping-valued field
            if not sub or "." in sub:
                raise ValueError(f"unexpected argument {tok!r}: dotted overrides are written --model.<key> value")
            parsed, key = {sub: parsed}, section
        if isinstance(out.get(key), dict) and isinstance(parsed, dict):
            out[key] = {**out[key], **parsed}
        else:
            out[key] = parsed
        i += 1
    return out


def _check_bare_flag(key: str, field_types: dict[str, str] | None = None) -> None:
    """A bare ``--key`` means true: only a field that takes true/false may be written so (a bare ``--data_dir`` is
    what a job script's unset ``$IMAGENET`` leaves)."""
    types = field_types if field_types is not None else {f.name: str(f.type) for f in fields(TrainConfig)}
    kind = types.get(key)
    if kind is not None and "bool" not in str(kind):
        raise ValueError(f"--{key} needs a value ({kind}); it was given none (an unset shell variable?): write "
                         f"--{key} VALUE")


def _default(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def yaml_value(value: Any) -> str:
    """``value`` as it is written on the command line and in params files: ``null``, ``true``, ``[0.08, 1.0]``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def help_text(width: int = 100) -> str:
    """The ``--help`` text: usage, the module documentation (examples, exit codes), the CLI's options, then every
    :class:`TrainConfig` field by group as ``--name TYPE (default: VALUE)`` with its meaning (and choices) below.
    Built from the dataclass alone: no torch, no timm."""
    usage = (f"usage: {PROG} [-h] " + " ".join(f"[{flag}{' ' + meta if meta else ''}]" for flag, meta, _ in OPTIONS)
             + " [--<field> VALUE ...] [--model.<key> VALUE ...]")
    out = [usage, "", __doc__.strip(), "", *options_help(OPTIONS, width)]
    by_group: dict[str, list[Field]] = {g: [] for g in GROUPS}
    for f in fields(TrainConfig):
        by_group[f.metadata["group"]].append(f)
    for group, members in by_group.items():
        out += ["", f"config fields, {GROUPS[group]}:"]
        for f in members:
            meaning = f.metadata["help"]
            if "choices" in f.metadata:
                meaning += "; choices: " + ", ".join(yaml_value(c) for c in f.metadata["choices"])
            out += [f"  --{f.name} {f.type} (default: {yaml_value(_default(f))})",
                    *textwrap.wrap(meaning, width, initial_indent=" " * 6, subsequent_indent=" " * 6)]
    out += ["", "Values are read as YAML (null, true, [4], {t: 3}); --model.<key> VALUE sets one tdam.create_model "
                "option."]
    return "\n".join(out) + "\n"


def options_help(options: Sequence[tuple[str, str | None, str]], width: int = 100) -> list[str]:
    """The ``options:`` section of a command's ``--help``: ``-h`` and each ``(flag, metavar, meaning)``."""
    out = ["options:", "  -h, --help", "      show this help and exit"]
    for flag, meta, meaning in options:
        out += [f"  {flag}{' ' + meta if meta else ''}",
                *textwrap.wrap(meaning, width, initial_indent=" " * 6, subsequent_indent=" " * 6)]
    return out


def command_parser(prog: str, options: Sequence[tuple[str, str | None, str]]) -> argparse.ArgumentParser:
    """A command's own ``options`` (``(flag, metavar or None for a switch, meaning)``) and ``-h``; every other
    ``--key value`` is left for :func:`parse_overrides` (``parse_known_args``)."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False, allow_abbrev=False)
    parser.add_argument("-h", "--help", action="store_true")
    for flag, meta, meaning in options:
        parser.add_argument(flag, help=meaning, **({"metavar": meta} if meta else {"action": "store_true"}))
    return parser


def env_rank() -> int:
    """This process's rank under torchrun / SLURM (0 alone); loads torch, so read after ``--help``."""
    from tdam.train.distributed import _env_rank_info

    return _env_rank_info()[0]


class RunCommand:
    """A run command's body, run by :func:`tdam.errors.run_command` (``python -m tdam.train``, ``python -m
    tdam.transfer``): it keeps the run's folder, so an error message and an internal error's traceback
    (``<run dir>/train.log``) can name the run. ``resume_hint``: how an interrupted run of this command resumes."""

    resume_hint = "resume with --resume true"

    def __init__(self) -> None:
        self.run_dir: Path | None = None                # the folder the run works in (a continued run's own)
        self.rank = 0                                   # read after --help: it loads torch

    def log_path(self):
        return self.run_dir / LOG_FILE if self.run_dir is not None else None

    def explain(self, e: BaseException) -> str:
        """The error line's message: the file's or value's, with the hint of this command, named by rank N > 0."""
        from tdam.data.errors import BadImageError

        msg = errors.one_line(e) or type(e).__name__
        if isinstance(e, BadImageError):
            msg += " (set skip_bad_images: true, or --skip_bad_images true, to skip and count unreadable images)"
        elif isinstance(e, KeyboardInterrupt):
            msg = ("interrupted before the run started" if self.run_dir is None else
                   f"interrupted; {self.run_dir / 'last.pth'} holds the last saved state ({self.resume_hint})")
        return f"[rank {self.rank}] {msg}" if self.rank else msg


class _TrainCommand(RunCommand):
    """``python -m tdam.train``'s body."""

    def __call__(self, argv: Sequence[str] | None) -> int:
        args, rest = command_parser(PROG, OPTIONS).parse_known_args(argv)
        if args.help:
            print(help_text(), end="")
            return errors.EXIT_OK

        from tdam.runs import run_state
        from tdam.train.cache import run_result
        from tdam.train.config import load_config
        from tdam.train.lineage import holds_request, resolve_run
        from tdam.train.provenance import explain_config
        from tdam.train.recipe import describe_recipe, resolve_profile
        from tdam.train.trainer import train

        self.rank = env_rank()
        main_process = self.rank == 0
        cfg = load_config(args.config, profile=args.profile, **parse_overrides(rest))
        if args.profile is None and cfg.data_dir is not None:   # real data, the file's recipe: named as notebook 01
            cfg = cfg.replace(profile=resolve_profile(None, cfg.data_dir))   # names it, so they share the run
        if args.print_config:
            if main_process:
                print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            return errors.EXIT_OK
        if args.explain:
            if main_process:
                print(explain_config(cfg))
            return errors.EXIT_OK
        self.run_dir = cfg.run_dir()
        if main_process:
            print(describe_recipe(cfg, gpus=None, detail=args.dry_run), flush=True)
        if args.dry_run:
            return errors.EXIT_OK
        resolved = resolve_run(cfg, create=False)              # the folder: a continued run's own (lineage)
        self.run_dir = run_dir = resolved.run_dir()
        # None: no run, or another run in a named folder (the trainer refuses that one, naming the differences)
        state = run_state(run_dir) if holds_request(run_dir, resolved) else None
        if state is not None and state.state == "finished":
            if main_process:
                print(f"{run_dir} already holds this run, finished: nothing trained (--resume true with more "
                      f"--epochs extends it as a new run; another --name trains anew)\n"
                      f"{run_result(run_dir).done_line()}", flush=True)
            return errors.EXIT_OK
        if state is not None and state.state == "incomplete":
            if main_process:
                print(f"{run_dir} was trained to the end but lacks {', '.join(state.missing)}: writing them, nothing "
                      f"trained", flush=True)
            cfg = cfg.replace(resume=cfg.resume or True)
        result = train(cfg)
        if result.interrupted:
            if main_process:
                print(f"pre-empted: resume with --resume true (checkpoint {result.last_checkpoint})")
            return errors.EXIT_INTERRUPTED
        if main_process:
            print(result.done_line(), flush=True)
        return errors.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tdam.train``: see the module docstring; returns the exit code (:mod:`tdam.errors`)."""
    command = _TrainCommand()
    return errors.run_command(command, argv, prog=PROG, log_path_fn=command.log_path, explain=command.explain)


if __name__ == "__main__":
    sys.exit(main())
