"""Shared test set-up.

- Matplotlib renders off-screen (``MPLBACKEND=Agg``) in tests and in the notebook kernels nbval starts.
- ``make test`` runs in parallel (pytest-xdist): the notebooks in order in one worker, the tests in the others.
- Tiers: ``make test`` runs every correctness test and the notebooks. Tests marked ``drill`` (resilience drills:
  signals, kills, several processes) run with ``make test-drills``, tests marked ``slow`` (long end-to-end runs) with
  ``make test-slow``; both are skipped, with the command to run them, unless selected with ``-m``. ``.ci/run`` runs all
  three tiers.
- Unit tests write training runs to a per-session temporary ``TDAM_RUNS`` (never the user's ``runs/``); the embedded
  datasets stay cached in the repository's ``runs/data`` (``TDAM_DATA``), so they are generated once per machine.
  Notebooks (collected by nbval from ``notebooks/``) are not affected: they use the repository's ``runs/``.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

TIERS = {"slow": "make test-slow", "drill": "make test-drills"}


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under pytest-xdist (``make test``: ``-n auto``), the notebooks' cells are one unit of work, run in order in one
    worker (01 trains the run that 02-09 reuse), and every test is a unit of its own for the other workers."""
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "notebooks" if ".ipynb::" in nodeid else nodeid

    return NotebooksTogether(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # notebooks first: the longest unit of work starts first
    items[:] = [i for i in items if i.path.suffix == ".ipynb"] + [i for i in items if i.path.suffix != ".ipynb"]
    if config.getoption("-m"):
        return
    for item in items:
        for tier, command in TIERS.items():
            if tier in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"{tier} tier: run with `{command}` (pytest -m {tier})"))
                break


@pytest.fixture(scope="session")
def _session_runs(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("tdam_runs")


@pytest.fixture(autouse=True)
def _isolated_runs(_session_runs, monkeypatch: pytest.MonkeyPatch) -> None:
    from tdam.paths import data_cache_dir

    monkeypatch.setenv("TDAM_DATA", str(data_cache_dir()))   # resolved before TDAM_RUNS moves: keep the cache
    monkeypatch.setenv("TDAM_RUNS", str(_session_runs))


@pytest.fixture
def one_thread():
    """One torch thread for the test: faster than two on a shared 2-core machine for tiny inputs."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def td_checkpoint(tmp_path_factory):
    """A checkpoint of a randomly initialised TD-ResNet-18 (1000 classes) with its ``model_config``: an ImageNet
    backbone stand-in."""
    import tdam
    from tdam.checkpoint import save_checkpoint

    model = tdam.create_model("resnet18", attention="td")
    path = tmp_path_factory.mktemp("td_checkpoint") / "imagenet.pth"
    save_checkpoint({"model": model.state_dict(), "model_config": model.model_config}, path)
    return path


@pytest.fixture(scope="session")
def shapes_tiny():
    """Root of the tiny embedded dataset (generated once, cached)."""
    from tdam.data import make_shapes_dataset

    return make_shapes_dataset(size="tiny")


@pytest.fixture(scope="session")
def fresh_shapes_tiny(tmp_path_factory):
    """The tiny embedded dataset generated anew in this session's temporary folder: the data tests check what the
    generator writes now, not a cached copy."""
    from tdam.data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.getbasetemp() / "shapes-tiny-s0", seed=0, size="tiny")
