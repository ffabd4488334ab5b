"""Notebooks 05, 06, 09 (slow tier): run headlessly with papermill and write their figures (their hygiene:
tests/test_notebooks_meta.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tdam.paths import figures_dir, repo_root

# the defaults: ResNet-18 TD (t=2) beside its plain baseline, on the embedded data ("shapes")
NOTEBOOKS = {
    "05_attention_shift": ["05_attention_shift-resnet18-td+plain-t2-shapes"],
    "06_weak_localization": ["06_localization_boxes-resnet18-td-t2-shapes", "06_localization_boxes-resnet18-plain-shapes"],
    "09_feature_selectivity": ["09_fig3_entropy_layer4-resnet18-td+plain-t2-shapes",
                               "09_fig4_entropy_layer3-resnet18-td+plain-t2-shapes"],
}


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
