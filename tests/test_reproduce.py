"""`make reproduce` (tdam.notebook.reproduce): parameters per profile, order, records, skipping what is done."""
from __future__ import annotations

import json
import sys
import types

import pytest

from tdam import paths
from tdam.notebook import reproduce as R


def test_order_is_01_then_02_to_09():
    assert R.ORDER == tuple(f"{n}" for n in sorted(p.stem for p in (paths.repo_root() / "notebooks").glob("0*.ipynb")))
    assert R.ORDER[0] == "01_train_imagenet" and len(R.ORDER) == 9


def test_parameters_per_profile(tmp_path):
    assert R.notebook_parameters("05_attention_shift", "embedded") == {}
    p01 = R.notebook_parameters("01_train_imagenet", "paper", str(tmp_path))
    assert p01["data_dir"] == str(tmp_path) and p01["profile"] is None and p01["backbone"] == "resnet50"
    assert R.notebook_parameters("03_complexity", "paper", str(tmp_path)) == {"backbone": "resnet50"}
    assert R.notebook_parameters("04_ablations", "paper", str(tmp_path))["backbone"] is None   # each row's own
    with pytest.raises(ValueError, match=r"profile='bogus' is not valid; valid choices are \['embedded', 'paper'\]"):
        R.notebook_parameters("02_eval_imagenet", "bogus")
    with pytest.raises(ValueError, match="needs data_dir"):
        R.notebook_parameters("02_eval_imagenet", "paper", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="data_dir is for profile='paper'"):
        R.notebook_parameters("02_eval_imagenet", "embedded", str(tmp_path))


@pytest.fixture
def fake_papermill(monkeypatch, tmp_path):
    """papermill stand-in: records the call, writes the executed copy and, per notebook, one table and one figure
    (figures into a temporary folder, not the repository's)."""
    calls = []
    monkeypatch.setattr(paths, "figures_dir", lambda: tmp_path)

    def execute_notebook(source, executed, *, parameters, **kwargs):
        name = source.split("/")[-1].removesuffix(".ipynb")
        calls.append((name, parameters, kwargs["log_output"]))
        if name.startswith("03"):
            raise RuntimeError("boom\nValueError: the last line names the failure")
        (paths.runs_dir() / name).mkdir(parents=True, exist_ok=True)
        (paths.runs_dir() / name / "table.csv").write_text("a\n1\n")
        (paths.figures_dir() / f"{name}_fig.png").write_bytes(b"png")
        open(executed, "w").write("{}")

    monkeypatch.setitem(sys.modules, "papermill", types.SimpleNamespace(execute_notebook=execute_notebook))
    return calls


def test_records_failures_skips_done_and_forces(fake_papermill, capsys):
    records = R.reproduce(only=["01", "02", "03"])
    assert [c[0] for c in fake_papermill] == ["01_train_imagenet", "02_eval_imagenet", "03_complexity"]
    by = {r["notebook"]: r for r in records}
    assert by["01_train_imagenet"]["status"] == "done"
    assert len(by["02_eval_imagenet"]["tables"]) == 1 and len(by["02_eval_imagenet"]["figures"]) == 1
    assert by["03_complexity"]["status"] == "failed: RuntimeError: ValueError: the last line names the failure"
    saved = json.loads((paths.runs_dir() / "reproduce" / "embedded" / "02_eval_imagenet.json").read_text())
    assert saved["status"] == "done" and saved["parameters"] == {}

    fake_papermill.clear()
    again = R.reproduce(only=["01", "02", "03"])
    assert [c[0] for c in fake_papermill] == ["03_complexity"]          # done ones skipped, the failed one rerun
    assert [r["status"] for r in again][:2] == ["skipped (done)"] * 2
    table = R.summary_table(again)
    assert table.splitlines()[0].split() == ["notebook", "status", "wall", "(s)", "tables", "figures"]
    assert "03_complexity" in table and "failed" in table

    fake_papermill.clear()
    R.reproduce(only=["02"], force=True)
    assert [c[0] for c in fake_papermill] == ["02_eval_imagenet"]


def test_only_names_nothing_is_an_error(fake_papermill):
    with pytest.raises(ValueError, match="matches no notebook; valid choices are"):
        R.reproduce(only=["42"])


def test_cli_exit_codes(fake_papermill, capsys):
    assert R.main(["--only", "02"]) == 0
    assert "02_eval_imagenet" in capsys.readouterr().out
    assert R.main(["--only", "03"]) == 1
    assert R.main(["--profile", "paper"]) == 2 and "needs data_dir" in capsys.readouterr().err


def test_cli_streams_each_notebooks_output_unless_quiet(fake_papermill):
    """A headless run talks: each notebook's progress lines stream to the terminal (papermill's log_output)."""
    assert R.main(["--only", "02", "--force"]) == 0 and R.main(["--only", "02", "--force", "--quiet"]) == 0
    assert [c[2] for c in fake_papermill] == [True, False]


def test_gallery_copies_each_notebooks_first_figure(fake_papermill, tmp_path, capsys):
    gallery = tmp_path / "gallery"
    assert R.main(["--only", "01", "02", "--gallery", str(gallery)]) == 0
    assert sorted(p.name for p in gallery.iterdir()) == ["01_train_imagenet.png", "02_eval_imagenet.png", "index.json"]
    assert (gallery / "02_eval_imagenet.png").read_bytes() == b"png"
    index = json.loads((gallery / "index.json").read_text())
    assert index["data"] == "embedded tdam-shapes" and index["figures"]["02_eval_imagenet"]["figure"] == "02_eval_imagenet_fig.png"
    fake_papermill.clear()
    assert R.main(["--only", "01", "02", "03", "--gallery", str(gallery)]) == 1    # 03 fails: left out, the rest kept
    assert [c[0] for c in fake_papermill] == ["03_complexity"]
    assert sorted(p.name for p in gallery.iterdir()) == ["01_train_imagenet.png", "02_eval_imagenet.png", "index.json"]
    assert R.main(["--profile", "paper", "--gallery", str(gallery)]) == 2
