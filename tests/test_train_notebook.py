"""Notebook 01 through papermill, as a user runs it (slow: the default suite runs the stored defaults via nbval)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tdam.paths import repo_root
from tdam.train import load_config

NB = repo_root() / "notebooks" / "01_train_imagenet.ipynb"


def _papermill(out, *params: str) -> None:
    cmd = [sys.executable, "-m", "papermill", "-k", "python3", "--log-level", "WARNING", str(NB), str(out), *params]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def _stdout(out) -> str:
    nb = json.loads(out.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []) if o.get("name") == "stdout")


@pytest.mark.slow
def test_default_run_learns(tmp_path):
    """Stored defaults (TD-ResNet-18, smoke profile, embedded data): >= 3x chance top-1 on the embedded val split."""
    out = tmp_path / "01.ipynb"
    _papermill(out)
    run_dir = load_config(None, profile="smoke", model={"arch": "resnet18", "attention": "td"}).run_dir()
    summary = json.loads((run_dir / "summary.json").read_text())
    top1, chance = summary["final"]["val_top1"], summary["chance_top1"]
    print(f"default notebook run: val top-1 {top1:.1f}% = {top1 / chance:.1f}x chance ({chance:.1f}%)")
    assert top1 >= 3 * chance
    assert "final val top-1" in _stdout(out)


@pytest.mark.slow
def test_papermill_resnet50(tmp_path):
    out = tmp_path / "01_r50.ipynb"
    _papermill(out, "-p", "backbone", "resnet50")
    text = _stdout(out)
    assert "resnet50_td_joint_t2_m1" in text and "final val top-1" in text
    run_dir = load_config(None, profile="smoke", model={"arch": "resnet50", "attention": "td"}).run_dir()
    assert (run_dir / "best.pth").is_file() and (run_dir / "summary.json").is_file()


@pytest.mark.slow
def test_papermill_mobilenetv3_default_placement(tmp_path):
    """MobileNetV3-Large with TD in its own default stages (4, 5, 6) trains from notebook 01."""
    out = tmp_path / "01_mbv3.ipynb"
    _papermill(out, "-p", "backbone", "mobilenetv3_large_100", "-p", "epochs", "1", "-p", "steps_per_epoch", "2")
    text = _stdout(out)
    assert "mobilenetv3_large_100_td_joint_t2_m1" in text and "final val top-1" in text
    assert "model: {'arch': 'mobilenetv3_large_100'" in text and "'attention': 'td'}" in text
