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


@pytest.mark.slow
def test_two_runs_of_notebook_08_leave_two_figures(tmp_path):
    """A figure's name carries its run: notebook 08 on a ResNet-18 and then on a ResNet-34 checkpoint leaves both
    figures (tiny one-epoch checkpoints on the tiny embedded set; the figures go to the repository's figures/)."""
    from tdam.train import ensure_checkpoint

    figures = {}
    for backbone in ("resnet18", "resnet34"):
        ckpt = ensure_checkpoint(backbone, None, "smoke", data_size="tiny", epochs=1, steps_per_epoch=2, val_batches=1)
        stem = f"08_test_resolution-{backbone}-plain-shapes"
        for ext in ("png", "pdf"):
            (figures_dir() / f"{stem}.{ext}").unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "papermill", "-k", "python3", "--log-level", "WARNING",
                        str(repo_root() / "notebooks" / "08_test_resolution.ipynb"), str(tmp_path / f"{backbone}.ipynb"),
                        "-p", "backbone", backbone, "-p", "attention", "plain", "-p", "checkpoint", str(ckpt),
                        "-p", "resolutions", "[32, 64]", "-p", "max_images", "24"], check=True, cwd=tmp_path)
        figures[backbone] = figures_dir() / f"{stem}.png"
    assert all(f.is_file() and f.stat().st_size > 1000 for f in figures.values()), figures
    assert figures["resnet18"].read_bytes() != figures["resnet34"].read_bytes()
