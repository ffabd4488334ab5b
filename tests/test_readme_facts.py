"""Facts the README states stay true: the pinned versions it names, the demo's result line in the form notebook 01
prints it (and `make demo` greps it), its papermill commands (live output, existing notebooks and parameters), and
the parameter defaults its vocabulary table gives."""
from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

import tdam.notebook as nb

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.split("==") for d in deps if "==" in d)


def test_named_versions_are_the_pins():
    tested = re.search(r"^Tested with: (.*?)\n\n", README, re.M | re.S).group(1)
    pins = _pins()
    for package in ("torch", "torchvision", "timm", "ptflops"):
        assert f"{package} {pins[package]}" in tested, f"README names another {package} than the pin {pins[package]}"
    for version in re.findall(r"(?:torch|torchvision)==([\d.]+)", README):   # the CPU-only install commands
        assert version in (pins["torch"], pins["torchvision"]), version


def test_demo_result_line_is_what_notebook_01_prints():
    cells = json.loads((ROOT / "notebooks" / "01_train_imagenet.ipynb").read_text())["cells"]
    printed = next(m.group(1) for c in cells if (m := re.search(r'print\(f"(final val top-1: [^"]*)"\)',
                                                                "".join(c["source"]))))
    form = re.escape(re.sub(r"\{[^}]*\}", "\0", printed)).replace("\0", r"([\d.]+)")
    quoted = re.search(r"`(final val top-1: [^`]*)`", README).group(1)
    top1, chance, ratio = map(float, re.fullmatch(form, quoted).groups())
    assert chance == pytest.approx(100 / 12, abs=0.05) and ratio == pytest.approx(top1 / (100 / 12), abs=0.05)
    grep = re.search(r"grep -o '([^']*)' runs/01_train_imagenet.ipynb", (ROOT / "Makefile").read_text()).group(1)
    assert re.match(grep, quoted), "make demo's grep does not find the quoted line"


def _papermill_commands() -> list[list[str]]:
    blocks = re.findall(r"^```(?:bash|text)\n(.*?)^```", README, re.M | re.S)
    lines = [ln.removeprefix("$ ") for b in blocks for ln in b.splitlines()]
    return [shlex.split(ln) for ln in lines if ln.startswith("papermill ") and "--help-notebook" not in ln]


def test_papermill_commands_stream_and_name_real_parameters():
    commands = _papermill_commands()
    assert len(commands) >= 5
    for args in commands:
        assert "--log-output" in args, f"{shlex.join(args)}: runs for minutes without live output"
        notebook = next(a for a in args if a.startswith("notebooks/"))
        name = Path(notebook).stem
        assert (ROOT / notebook).is_file() and name in nb.NOTEBOOKS, notebook
        given = [args[i + 1] for i, a in enumerate(args) if a == "-p"]
        given += [y.split(":")[0] for i, a in enumerate(args) if a == "-y" for y in [args[i + 1]]]
        unknown = set(given) - set(nb.NOTEBOOKS[name]) - {"tt"}          # 'tt': the README's unknown-name example
        assert not unknown, f"{shlex.join(args)}: {name} has no parameter {sorted(unknown)}"


@pytest.mark.parametrize("name", ["checkpoint", "baseline_checkpoint", "data_dir"])
def test_vocabulary_defaults_agree_with_the_readme(name):
    vocabulary = README[README.index("**One vocabulary.**"):]        # the notebooks' table, not the recipes'
    row = next(ln for ln in vocabulary.splitlines() if ln.startswith(f"| `{name}` |"))
    assert "None (the default)" in row
    for notebook, names in nb.NOTEBOOKS.items():
        if name in names:
            assert nb.notebook_defaults(notebook)[name] is None, f"{notebook}: {name} defaults to something else"
