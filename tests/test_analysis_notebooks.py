"""Notebooks 05, 06, 09: stored clean, parameters first, thin; (slow) run headlessly and write their figures."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import nbformat
import pytest

from tdam.paths import figures_dir, repo_root

NOTEBOOKS = {
    "05_attention_shift": ["05_attention_shift"],
    "06_weak_localization": ["06_localization_boxes_td", "06_localization_boxes_baseline"],
    "09_feature_selectivity": ["09_fig3_entropy_layer4", "09_fig4_entropy_layer3"],
}


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(repo_root() / "notebooks" / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_is_clean_and_thin(name):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "stored with outputs"
    assert code[0].metadata.get("tags") == ["parameters"]
    params = ast.parse(code[0].source)
    assert all(isinstance(s, ast.Assign) and isinstance(s.value, (ast.Constant, ast.List)) for s in params.body), \
        "the parameters cell holds flat literals only"
    from papermill.translators import PythonTranslator

    assert len(PythonTranslator.inspect(code[0])) == len(params.body), "papermill must see every parameter"
    assert 'nb.parameters("' in code[1].source, "the cell after the parameters validates them"
    for c in code:
        tree = ast.parse(c.source)
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree))
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_and_writes_figures(name, tmp_path):
    """Runs on defaults (trains the smoke checkpoints on first use through tdam.train.ensure_checkpoint)."""
    env = {**os.environ, "TDAM_RUNS": str(repo_root() / "runs")}  # the notebooks' shared checkpoint cache
    before = {f: (figures_dir() / f).stat().st_mtime if (figures_dir() / f).exists() else 0.0
              for stem in NOTEBOOKS[name] for f in (f"{stem}.png", f"{stem}.pdf")}
    subprocess.run([sys.executable, "-m", "papermill", "-k", "python3", "--log-level", "WARNING",
                    str(repo_root() / "notebooks" / f"{name}.ipynb"), str(tmp_path / "out.ipynb")],
                   check=True, env=env, cwd=tmp_path)
    for f, t in before.items():
        path = figures_dir() / f
        assert path.is_file() and path.stat().st_mtime > t and path.stat().st_size > 1000, f
