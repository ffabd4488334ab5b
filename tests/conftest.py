"""Shared test set-up.

- Matplotlib renders off-screen (``MPLBACKEND=Agg``) in tests and in the notebook kernels nbval starts.
- ``OMP_WAIT_POLICY=PASSIVE`` (see below).
- ``@pytest.mark.slow`` tests are skipped unless selected with ``-m slow`` (``make test-slow``) or another ``-m``
  expression, so ``make test`` stays within the CI budget.
- Unit tests write training runs to a per-session temporary ``TDAM_RUNS`` (never the user's ``runs/``); the embedded
  datasets stay cached in the repository's ``runs/data`` (``TDAM_DATA``), so they are generated once per machine.
  Notebooks (collected by nbval from ``notebooks/``) are not affected: they use the repository's ``runs/``.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# OpenMP threads sleep instead of spinning while they wait: on a machine whose cores are shared (CI runners, several
# test processes, the notebook kernels nbval starts) spinning threads can make torch's CPU kernels ~10x slower.
# Must be set before torch (libgomp) is loaded; inherited by subprocesses and notebook kernels.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="slow: run with `make test-slow` (pytest -m slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def _session_runs(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("tdam_runs")


@pytest.fixture(autouse=True)
def _isolated_runs(_session_runs, monkeypatch: pytest.MonkeyPatch) -> None:
    from tdam.paths import data_cache_dir

    monkeypatch.setenv("TDAM_DATA", str(data_cache_dir()))   # resolved before TDAM_RUNS moves: keep the cache
    monkeypatch.setenv("TDAM_RUNS", str(_session_runs))


@pytest.fixture(scope="session")
def shapes_tiny():
    """Root of the tiny embedded dataset (generated once, cached)."""
    from tdam.data import make_shapes_dataset

    return make_shapes_dataset(size="tiny")
