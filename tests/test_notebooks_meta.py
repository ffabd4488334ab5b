"""Notebook hygiene, for every committed notebook: stored without outputs, kernel `python3`, a `parameters`-tagged
first code cell of flat literals that papermill reads in full (it injects after it; nbval runs the stored defaults),
the next cell validating them through the library, and thin: no function, class or lambda in any cell (the logic lives
in the package)."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from tdam.paths import repo_root

NOTEBOOKS = sorted((repo_root() / "notebooks").glob("*.ipynb"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_there_are_notebooks():
    assert any(p.name.startswith("01_train_imagenet") for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    nb = _load(path)
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs/execution counts (clear them before committing)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_of_flat_literals(path):
    nb = _load(path)
    assert nb.get("metadata", {}).get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernel not python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and "parameters" in code[0].get("metadata", {}).get("tags", []), \
        f"{path.name}: the first code cell must be tagged 'parameters'"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    tree = ast.parse("".join(code[0]["source"]))
    for stmt in tree.body:
        assert isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None, \
            f"{path.name}: parameters cell line {stmt.lineno} is not `name: \"type\" = literal  # help`"
        ast.literal_eval(stmt.value)        # raises ValueError on anything but a literal


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter(path):
    """papermill's parameter parser skips (with a warning on every run) lines it cannot read, e.g. a comment holding
    quotes; such a parameter is missing from `papermill --help-notebook`."""
    import nbformat
    from papermill.translators import PythonTranslator

    nb = nbformat.reads(path.read_text(), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    tree = ast.parse(cell.source)
    seen = [p.name for p in PythonTranslator().inspect(cell)]
    assert seen == [s.target.id for s in tree.body], f"{path.name}: papermill reads only {seen}"


# the annotations a parameters cell may use, as the check of a default: papermill shows them as the parameter's type
_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool}


def _matches(annotation: str, value) -> bool:
    if annotation.startswith("Optional[") and annotation.endswith("]"):
        return value is None or _matches(annotation[9:-1], value)
    if annotation.startswith("list[") and annotation.endswith("]"):
        return isinstance(value, list) and all(_matches(annotation[5:-1], v) for v in value)
    kind = _TYPES[annotation]
    return isinstance(value, kind) and (annotation == "bool" or not isinstance(value, bool))


def test_annotation_check_rejects_what_it_should():
    assert _matches("Optional[list[int]]", None) and _matches("list[int]", [1, 2]) and _matches("float", 1)
    assert not _matches("int", True) and not _matches("list[int]", [1, "2"]) and not _matches("str", None)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_help_notebook_gives_every_parameter_a_type_and_help(path):
    """`papermill --help-notebook` lists each parameter with the type annotated in the parameters cell (instead of
    "Unknown type") and the comment on its line as its help; the annotation fits the default."""
    from click.testing import CliRunner
    from papermill.cli import papermill

    result = CliRunner().invoke(papermill, ["--help-notebook", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    cell = next(c for c in _load(path)["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "".join(cell["source"])
    tree = ast.parse(source)
    defined = [i for i, line in enumerate(lines) if re.match(r"  \w+: ", line)]
    assert len(defined) == len(tree.body), result.output
    for i, stmt in zip(defined, tree.body):
        kind = stmt.annotation.value
        definition = f"  {stmt.target.id}: {kind} (default {ast.get_source_segment(source, stmt.value)})"
        assert lines[i].startswith(definition), f"{path.name}: {lines[i]!r}, expected {definition!r}"
        help_text = lines[i][len(definition):].strip() or (lines[i + 1].strip() if i + 1 < len(lines)
                                                           and lines[i + 1].startswith(" " * 34) else "")
        assert help_text, f"{path.name}: {stmt.target.id} has no help"
        assert _matches(kind, ast.literal_eval(stmt.value)), f"{path.name}: {stmt.target.id}: default is not {kind}"


# the call that validates a notebook's parameters, in the cell right after them
_VALIDATES = {"07_transfer": "tdam.transfer.TransferNotebookParams("}   # which calls nb.parameters


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_validated_next_and_no_logic_in_cells(path):
    nb = _load(path)
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    call = _VALIDATES.get(path.stem, f'nb.parameters("{path.stem}", globals())')
    assert call in code[1], f"{path.name}: the cell after the parameters must validate them with {call}"
    for i, source in enumerate(code):
        defs = [type(n).__name__ for n in ast.walk(ast.parse(source))
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defs, f"{path.name}: code cell {i} defines {defs}; put the logic in the tdam package"
