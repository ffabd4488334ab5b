"""Repository paths that do not depend on the working directory.

nbval starts notebook kernels in ``notebooks/``, papermill in the caller's folder; every notebook resolves
``params/``, ``figures/``, ``runs/`` and the embedded data cache through these helpers instead.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "params_dir", "figures_dir", "runs_dir", "data_cache_dir"]


def repo_root() -> Path:
    """The repository checkout (the folder holding ``pyproject.toml`` above this package), or ``$TDAM_ROOT``."""
    env = os.environ.get("TDAM_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd().resolve()


def params_dir() -> Path:
    return repo_root() / "params"


def figures_dir() -> Path:
    d = repo_root() / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def runs_dir() -> Path:
    d = Path(os.environ.get("TDAM_RUNS", repo_root() / "runs"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def data_cache_dir() -> Path:
    """Where generated embedded datasets are cached (``$TDAM_DATA`` or ``runs/data``)."""
    d = Path(os.environ.get("TDAM_DATA", runs_dir() / "data"))
    d.mkdir(parents=True, exist_ok=True)
    return d
