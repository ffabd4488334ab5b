"""The training notebooks (01, and the dry runs of 04 and 07) through papermill, as a user runs them (mostly slow: the
default suite runs the stored defaults via nbval)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tdam.paths import repo_root
from tdam.train import load_config

NB = repo_root() / "notebooks" / "01_train_imagenet.ipynb"


def _papermill(out, *params: str, notebook=NB) -> None:
    cmd = [sys.executable, "-m", "papermill", "-k", "python3", "--log-level", "WARNING", str(notebook), str(out),
           *params]
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
    model_line = next(line for line in text.splitlines() if line.startswith("model:"))
    assert "{'arch': 'mobilenetv3_large_100'" in model_line and "'attention': 'td'" in model_line


def test_real_data_gets_the_paper_recipe_dry_run(tmp_path):
    """`-p backbone resnet50 -p data_dir <ImageNet-layout folder> -p dry_run True`: no profile named, real data, so
    the params file's recipe (the paper's: read from the file here, 160 epochs at 224 px for ResNet-50) is resolved,
    printed first, and nothing is trained."""
    import re

    from tdam.data import make_shapes_dataset, shapes_root
    from tdam.paths import params_dir
    from tdam.train import checkpoint_config
    from tdam.train.config import load_yaml_with_base

    data = shapes_root(make_shapes_dataset(tmp_path / "somewhere" / "shapes", size="tiny"), "imagenet")
    recipe = load_yaml_with_base(params_dir() / "imagenet" / "resnet50_td_joint_t2_m1.yaml")
    assert (recipe["epochs"], recipe["img_size"]) == (160, 224)        # the file under test says what the paper says
    out = tmp_path / "01_dry.ipynb"
    # batch 8: the tiny look-alike has 96 training images, too few for one update of the paper's 128 (a dry run
    # plots the lr schedule, which needs at least one update per epoch)
    _papermill(out, "-p", "backbone", "resnet50", "-p", "data_dir", data, "-p", "dry_run", "True",
               "-p", "batch_size", "8")
    text = _stdout(out)
    first = json.loads(out.read_text())["cells"]
    first = next(c for c in first if c["cell_type"] == "code" and c.get("outputs")
                 and "injected-parameters" not in c["metadata"].get("tags", []))
    shown = "".join("".join(o.get("text", "")) for o in first["outputs"])
    assert re.search(r"epochs\D{0,20}160\b", shown) and re.search(r"\b224\b", shown), shown
    assert "paper" in shown and "nothing trained" in text and "final val top-1" not in text
    cfg = checkpoint_config("resnet50", "td", None, data_dir=data, batch_size=8)
    assert (cfg.epochs, cfg.img_size, cfg.profile) == (160, 224, "paper")
    assert not cfg.run_dir().exists(), "a dry run wrote a run folder"


@pytest.mark.slow
def test_ablations_dry_run_prints_each_rows_recipe_and_trains_nothing(tmp_path, monkeypatch):
    """Notebook 04 with dry_run: every row's resolved recipe is printed, its sizes are in the table, nothing is trained
    or evaluated, and no table or provenance file is written over a real one."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("TDAM_RUNS", str(runs))
    out = tmp_path / "04_dry.ipynb"
    _papermill(out, "-p", "dry_run", "True", notebook=repo_root() / "notebooks" / "04_ablations.ipynb")
    text = _stdout(out)
    assert text.count("updates:     ") == 2 and text.count("run folder:  ") == 2, text   # a recipe per row
    assert "mode_and_distance / ResNet" in text and "dry run" in text
    assert not (runs / "01_train_imagenet").exists() and not (runs / "04_ablations").exists()


@pytest.mark.slow
def test_transfer_dry_run_trains_neither_backbone_nor_transfer_run(tmp_path, monkeypatch):
    """Notebook 07 with dry_run on an empty run cache: the untrained backbone's recipe is printed, the transfer runs
    are resolved and shown, and nothing is trained or written."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("TDAM_RUNS", str(runs))
    out = tmp_path / "07_dry.ipynb"
    _papermill(out, "-p", "dry_run", "True", notebook=repo_root() / "notebooks" / "07_transfer.ipynb")
    text = _stdout(out)
    assert "dry run: backbone resnet18_td_joint_t2_m1 is not trained yet" in text, text
    assert "transfer run(s) resolved" in text and "nothing trained" in text
    assert not (runs / "01_train_imagenet").exists() and not (runs / "07_transfer").exists()
