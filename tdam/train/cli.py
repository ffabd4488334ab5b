"""Command line: ``python -m tdam.train --config <yaml> [--profile NAME] [--key value ...]`` (also ``tdam-train``).

Examples::

    python -m tdam.train --config params/imagenet/resnet50_td_joint_t2_m1.yaml --data_dir /data/imagenet
    python -m tdam.train --config resnet18_td_joint_t2_m1 --profile smoke          # embedded data, CPU minute
    torchrun --standalone --nproc_per_node 4 -m tdam.train --config <yaml> --data_dir /data/imagenet
    python -m tdam.train --config <yaml> --resume true                             # continue <run dir>/last.pth
    python -m tdam.train --config <yaml> --print-config                            # show the resolved config
    python -m tdam.train --config resnet50_td_joint_t2_m1 --explain                # ... with each value's source
    python -m tdam.train --config resnet50_td_joint_t2_m1 --data_dir /data/imagenet --dry-run   # the recipe only

``--key value`` sets any :class:`~tdam.train.config.TrainConfig` field; values are read as YAML (``--lr 0.4``,
``--resume true``); a bare ``--flag`` means true. The model (the keyword arguments of ``tdam.create_model``) is set
key by key with dotted keys, or as a YAML mapping merged into the file's::

    python -m tdam.train --config resnet50_td_joint_t2_m1 --model.t 3 --model.td_stages [4]
    python -m tdam.train --config resnet50_td_joint_t2_m1 --model '{arch: resnet18, m: 2}'
    python -m tdam.train --config resnet18_se --model.attention plain

Before training it prints the resolved recipe (:func:`tdam.train.recipe.describe_recipe`: data, epochs, global
batch, lr, updates, device, run folder; ``--dry-run`` prints only that); a finished run ends with the line
``done: best val top-1 <acc>% at epoch <n>; checkpoint <run dir>/best.pth``. A run that already finished with the
same configuration is not trained again: the command says so and prints that line (exit 0). ``--help`` lists every config field
with its type, default and meaning, without loading torch.

Errors end with one ``error:`` line naming the file, value or path, and an exit code (defined in
:mod:`tdam.train.errors`):

    0  the run finished                     4  the run folder cannot be written (no space, read-only, permission)
    1  non-finite loss (last.pth is kept)    5  interrupted after saving a resumable last.pth: rerun --resume true
    2  invalid configuration                6  another live run holds the run folder (its PID and host named)
    3  bad data (layout, annotation, unreadable image; skip_bad_images: true skips those)
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import MISSING, Field, fields
from typing import Any, Sequence

import yaml

from tdam.train.config import GROUPS, TrainConfig, load_yaml

__all__ = ["main", "parse_overrides", "help_text"]

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


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """``['--epochs', '3', '--model.td_stages=[4]', '--compile']`` ->
    ``{'epochs': 3, 'model': {'td_stages': [4]}, 'compile': True}``."""
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
                value = "true"
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
    out = [usage, "", __doc__.strip(), "", "options:", "  -h, --help", "      show this help and exit"]
    for flag, meta, meaning in OPTIONS:
        out += [f"  {flag}{' ' + meta if meta else ''}",
                *textwrap.wrap(meaning, width, initial_indent=" " * 6, subsequent_indent=" " * 6)]
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


def _parser() -> argparse.ArgumentParser:
    """The CLI's own options (:data:`OPTIONS`); every other ``--key value`` is a config override."""
    parser = argparse.ArgumentParser(prog=PROG, add_help=False, allow_abbrev=False)
    parser.add_argument("-h", "--help", action="store_true")
    for flag, meta, meaning in OPTIONS:
        parser.add_argument(flag, help=meaning, **({"metavar": meta} if meta else {"action": "store_true"}))
    return parser


def _is_main_process() -> bool:
    from tdam.train.distributed import _env_rank_info

    return _env_rank_info()[0] == 0


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = _parser().parse_known_args(argv)
    if args.help:
        print(help_text(), end="")
        return 0

    from tdam.data.errors import BadImageError
    from tdam.train import errors
    from tdam.train.config import load_config
    from tdam.train.recipe import describe_recipe, resolve_profile
    from tdam.train.trainer import train

    main_process = _is_main_process()
    try:
        cfg = load_config(args.config, profile=args.profile, **parse_overrides(rest))
        if args.profile is None and cfg.data_dir is not None:   # real data, the file's recipe: named as notebook 01
            cfg = cfg.replace(profile=resolve_profile(None, cfg.data_dir))   # names it, so they share the run
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return errors.EXIT_CONFIG
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return errors.EXIT_OK
    if args.explain:
        from tdam.train.provenance import explain_config

        print(explain_config(cfg))
        return errors.EXIT_OK
    try:
        if main_process or args.dry_run:
            print(describe_recipe(cfg, gpus=None, detail=args.dry_run), flush=True)
        if args.dry_run:
            return errors.EXIT_OK
        if not cfg.resume and (done := _finished_run(cfg)) is not None:
            if main_process:
                print(f"{cfg.run_dir()} already holds this run, finished: nothing trained (--resume true with more "
                      f"--epochs extends it; another --name trains anew)\n{done.done_line()}", flush=True)
            return errors.EXIT_OK
        result = train(cfg)
    except (ValueError, OSError, FloatingPointError, errors.RunLockedError, KeyboardInterrupt) as e:
        try:
            code = errors.exit_code(e)
        except TypeError:
            raise e from None                     # not one of the named failures: a traceback is a bug report
        msg = errors.one_line(e)
        if isinstance(e, BadImageError):
            msg += " (set skip_bad_images: true, or --skip_bad_images true, to skip and count unreadable images)"
        elif isinstance(e, KeyboardInterrupt):
            msg = f"interrupted; {cfg.run_dir() / 'last.pth'} holds the last saved state (resume with --resume true)"
        print(f"error: {msg}", file=sys.stderr)
        return code
    if result.interrupted:
        if main_process:
            print(f"pre-empted: resume with --resume true (checkpoint {result.last_checkpoint})")
        return errors.EXIT_INTERRUPTED
    if main_process:
        print(result.done_line(), flush=True)
    return errors.EXIT_OK


def _finished_run(cfg):
    """The :class:`~tdam.train.trainer.RunResult` of the finished run of exactly ``cfg`` in its folder, else None (a
    folder holding another configuration is left to the trainer, which refuses it naming the difference)."""
    from tdam.train.cache import find_checkpoint, run_result

    try:
        found = find_checkpoint(cfg)
    except ValueError:
        return None
    return run_result(cfg.run_dir()) if found is not None else None


if __name__ == "__main__":
    sys.exit(main())
