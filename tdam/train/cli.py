"""Command line: ``python -m tdam.train --config <yaml> [--profile NAME] [--key value ...]`` (also ``tdam-train``).

Examples::

    python -m tdam.train --config params/imagenet/resnet50_td_joint_t2_m1.yaml --data_dir /data/imagenet
    python -m tdam.train --config resnet18_td_joint_t2_m1 --profile smoke          # embedded data, CPU minute
    torchrun --standalone --nproc_per_node 4 -m tdam.train --config <yaml> --data_dir /data/imagenet
    python -m tdam.train --config <yaml> --resume true                             # continue <run dir>/last.pth
    python -m tdam.train --config <yaml> --print-config                            # show the resolved config

``--key value`` sets any :class:`~tdam.train.config.TrainConfig` field; values are read as YAML (``--lr 0.4``,
``--resume true``); a bare ``--flag`` means true. The model (the keyword arguments of ``tdam.create_model``) is set
key by key with dotted keys, or as a YAML mapping merged into the file's::

    python -m tdam.train --config resnet50_td_joint_t2_m1 --model.t 3 --model.td_stages [4]
    python -m tdam.train --config resnet50_td_joint_t2_m1 --model '{arch: resnet18, m: 2}'
    python -m tdam.train --config resnet18_se --model.attention plain

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
from typing import Any, Sequence

import yaml

from tdam.train.config import load_yaml

__all__ = ["main", "parse_overrides"]


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdam.train", description=__doc__.split("\n\n")[0],
                                     epilog="Any other --key value pair overrides that TrainConfig field; "
                                            "--model.<key> value sets one tdam.create_model option.")
    parser.add_argument("--config", help="params YAML (path, or a name under params/imagenet/)")
    parser.add_argument("--profile", help="overlay under params/profiles/ (e.g. smoke)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args, rest = parser.parse_known_args(argv)

    from tdam.data.errors import BadImageError
    from tdam.train import errors
    from tdam.train.config import load_config
    from tdam.train.trainer import train

    try:
        cfg = load_config(args.config, profile=args.profile, **parse_overrides(rest))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return errors.EXIT_CONFIG
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return errors.EXIT_OK
    try:
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
        print(f"pre-empted: resume with --resume true (checkpoint {result.last_checkpoint})")
        return errors.EXIT_INTERRUPTED
    return errors.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
