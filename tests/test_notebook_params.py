"""Notebook parameters as papermill passes them: one vocabulary (``tdam.notebook.NOTEBOOKS``, read from each
notebook's parameters cell), an unknown or misspelt name stops the notebook in the cell after its parameters with
the valid names, and lists given as text (``-p rows '[a, b]'``) or YAML (``-y``) arrive as lists."""
from __future__ import annotations

import json

import pytest

import tdam.notebook as nb
from tdam.paths import repo_root

NOTEBOOKS = sorted(nb.NOTEBOOKS)
SHARED = {"checkpoint", "baseline_checkpoint", "backbone", "attention", "t", "m", "data_dir", "profile", "device",
          "dry_run"}


def _code(notebook: dict) -> list[str]:
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def _prepared(name: str, tmp_path, args: list[str]) -> list[str]:
    """The notebook's code cells after ``papermill --prepare-only <args>``: parameters, injected, the rest."""
    from click.testing import CliRunner
    from papermill.cli import papermill

    out = tmp_path / f"{name}.ipynb"
    res = CliRunner().invoke(papermill, [str(repo_root() / "notebooks" / f"{name}.ipynb"), str(out),
                                         "--prepare-only", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return _code(json.loads(out.read_text()))


def _validate(cells: list[str]) -> dict:
    """Run the parameters cell, papermill's injected cell and the validation cell, as the kernel would."""
    namespace: dict = {}
    for source in cells[:3]:
        exec(compile(source, "<cell>", "exec"), namespace)
    return namespace


def test_one_vocabulary():
    """The names of the same things are the same everywhere: no notebook has a second spelling of a checkpoint,
    backbone or profile, and every notebook evaluating a trained model takes `t`."""
    every = {n for names in nb.NOTEBOOKS.values() for n in names}
    assert not every & {"td_checkpoint", "checkpoints", "backbone_checkpoint", "imagenet_arch", "imagenet_profile",
                        "backbone_override", "scaling_backbone", "dtype"}
    for name in ("02_eval_imagenet", "05_attention_shift", "06_weak_localization", "08_test_resolution",
                 "09_feature_selectivity"):
        assert {"checkpoint", "backbone", "attention", "t", "m", "profile", "data_dir", "device"} <= set(
            nb.NOTEBOOKS[name]), name
    assert {"backbone", "attention", "t", "m", "profile", "data_dir", "dry_run"} <= set(nb.NOTEBOOKS["01_train_imagenet"])
    for name in ("04_ablations", "07_transfer"):                   # the other notebooks that train
        assert {"backbone", "profile", "data_dir", "device", "dry_run"} <= set(nb.NOTEBOOKS[name]), name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_unknown_parameter_stops_in_the_validation_cell(name, tmp_path):
    cells = _prepared(name, tmp_path, ["-p", "bakcbone", "resnet50"])
    with pytest.raises(nb.UnknownParameterError) as e:
        _validate(cells)
    msg = str(e.value)
    assert "'bakcbone' (did you mean 'backbone'?)" in msg or "'bakcbone'" in msg
    assert all(n in msg for n in nb.NOTEBOOKS[name]), msg          # the valid names, all of them


def test_a_parameter_stop_shows_its_message_alone(capsys):
    """In a kernel the error's traceback is its one-line message (IPython's ``_render_traceback_``), and a notebook's
    call writes it to stderr at once (shown first by ``papermill --log-output``); a bad value stops the same way."""
    with pytest.raises(nb.UnknownParameterError) as unknown:
        nb.parameters("05_attention_shift", {"tt": 3})
    with pytest.raises(nb.ParameterError) as bad:
        nb.parameters("05_attention_shift", {"batch_size": 0})
    for e in (unknown, bad):
        assert isinstance(e.value, ValueError) and e.value.__cause__ is None
        assert e.value._render_traceback_() == [f"{type(e.value).__name__}: {e.value}"]
    assert "batch_size" in str(bad.value)
    assert capsys.readouterr().err.splitlines() == [f"UnknownParameterError: {unknown.value}",
                                                    f"ParameterError: {bad.value}"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_unknown_parameter_fails_the_papermill_run(name, tmp_path):
    """A real kernel: papermill exits with the error of the cell after the parameters, never just a warning."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out = tmp_path / "out.ipynb"
    with pytest.raises(PapermillExecutionError) as e:
        papermill.execute_notebook(str(repo_root() / "notebooks" / f"{name}.ipynb"), str(out), kernel_name="python3",
                                   parameters={"tt": 3}, progress_bar=False)
    assert e.value.ename == "UnknownParameterError" and "has no parameter 'tt'" in e.value.evalue
    assert e.value.traceback == [f"UnknownParameterError: {e.value.evalue}"]   # the message alone, no frames
    code = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]
    failed = [i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert failed == [2], f"{name}: failed in code cell {failed}, expected the one after the injected parameters"
    assert all(c.get("execution_count") is None for c in code[3:])


@pytest.mark.parametrize("args", [["-p", "rows", "[ResNet, TDj(m1)]"], ["-p", "rows", '["ResNet", "TDj(m1)"]'],
                                  ["-y", "rows: [ResNet, TDj(m1)]"]], ids=["p-yaml", "p-json", "y"])
def test_list_parameters_from_the_command_line(args, tmp_path):
    ns = _validate(_prepared("04_ablations", tmp_path, [*args, "-p", "sets", "[mode_and_distance]"]))
    assert ns["p"].rows == ["ResNet", "TDj(m1)"] and ns["p"].sets == ["mode_and_distance"]


def test_list_parameters_text_and_errors():
    assert nb.parameters("08_test_resolution", resolutions="[32, 64]").resolutions == [32, 64]
    with pytest.raises(ValueError, match="expected a non-empty list, e.g. -p t_values"):
        nb.parameters("03_complexity", t_values="3")                  # a number is not a list
    with pytest.raises(ValueError, match="not a YAML/JSON list"):
        nb.parameters("04_ablations", rows="[ResNet")
    with pytest.raises(ValueError, match="resolutions"):
        nb.parameters("08_test_resolution", resolutions="[32, x]")


def test_profile_and_dry_run_vocabulary():
    p = nb.parameters("01_train_imagenet", backbone="resnet50", dry_run=True)
    assert p.profile is None and p.dry_run is True      # None: decided by the data (smoke here, paper on data_dir)
    with pytest.raises(ValueError, match="dry_run"):
        nb.parameters("01_train_imagenet", dry_run="yes")
