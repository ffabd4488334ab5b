"""Cached runs: train a configuration once, reuse it afterwards, resume it when it was interrupted.

:func:`ensure_run` is the one cache-or-train mechanism, used by :func:`ensure_checkpoint` (the ImageNet models of
notebooks 02-09), by :func:`train_or_reuse` (notebook 01) and by ``tdam.transfer.ensure_transfer_run`` (notebook
07). Under an exclusive file lock on the run folder (``<run>/.lock``) it reuses a finished run, resumes an
interrupted one (``last.pth``) or trains from scratch. Two processes (kernels, ``make`` targets) asking for the same
run wait on that lock: the first trains, the others then find the finished run and reuse it. The lock is a different
file from the trainer's own run-folder guard, which ``train`` takes without waiting, so the two never deadlock.

Every cached run is keyed by everything it depends on: the folder name carries a hash of it. The ImageNet run folder
is ``runs/01_train_imagenet/<model tag>-<profile>-<hash>``, the hash covering every config value that changes what is
learned, so notebook 01 with its default parameters and ``ensure_checkpoint()`` with its defaults name the same run:
whichever runs first trains it, the other reuses it. The transfer runs add the digest of their backbone checkpoint
(``tdam.transfer.run``), so a changed input makes a new entry next to the old one, never an error. A folder named
explicitly (``name`` / ``output_dir``) that holds a run of a DIFFERENT configuration is an error, never silently
reused. Old entries are listed and pruned with ``python -m tdam.cache``. Nothing binary is committed.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from tdam.checkpoint import read_checkpoint
from tdam.models import model_spec
from tdam.train.config import TrainConfig, load_config, semantic_config

__all__ = ["ensure_checkpoint", "checkpoint_config", "find_checkpoint", "ensure_run", "train_or_reuse", "run_result",
           "new_run_folder", "RUN_KEY_FILE", "INPUTS_FILE", "LOCK_FILE"]

RUN_KEY_FILE = "run_key.json"   # a run's extra identity (ensure_run's ``key``), written before it trains
INPUTS_FILE = "inputs.json"     # the upstream files a run was built from (path + SHA-256 prefix), for `tdam.cache`
LOCK_FILE = ".lock"             # ensure_run's lock; its mtime is the run's last use (`tdam.cache list`)


def _plain_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _check_same(run_dir: Path, want: Mapping[str, Any], have: Mapping[str, Any]) -> None:
    want, have = _plain_json(want), _plain_json(have)
    if want != have:
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise ValueError(f"{run_dir} holds a run of a different config (differs in {diff}); remove {run_dir} "
                         f"or set another `name`")


def find_checkpoint(cfg: TrainConfig, *, key: Mapping[str, Any] | None = None) -> Path | None:
    """``best.pth`` (else ``last.pth``) of the finished run of ``cfg``, or None when it was not trained to the end.

    The config stored in ``last.pth`` must match ``cfg`` in every value that changes what is learned, and ``key``
    (extra identity, e.g. a transfer run's own settings) the folder's ``run_key.json`` when there is one; a
    difference raises ValueError naming the differing keys (a run is never silently reused)."""
    run_dir = cfg.run_dir()
    last = run_dir / "last.pth"
    if not last.is_file():
        return None
    ck = read_checkpoint(last)
    _check_same(run_dir, semantic_config(cfg, with_epochs=False),   # the length: extended by resuming (below)
                semantic_config(ck.get("config", {}), with_epochs=False))
    if key is not None and (stored := run_dir / RUN_KEY_FILE).is_file():
        _check_same(run_dir, key, json.loads(stored.read_text()))
    if int(ck.get("epoch", 0)) < cfg.epochs:
        return None
    best = run_dir / "best.pth"
    return best if best.is_file() else last


@contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive lock on ``<run_dir>/.lock`` (waits for the holder); opening it marks the run as used now."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_run(cfg: TrainConfig, *, key: Mapping[str, Any] | None = None,
               train_fn: Callable[[TrainConfig], Any] | None = None,
               inputs: Mapping[str, str | Path] | None = None) -> Path:
    """The checkpoint of the finished run of ``cfg``: reused when present, resumed when interrupted, else trained.

    ``key``: what identifies the run beyond ``cfg``'s own semantic config (the transfer runs: their WS-DAN / ASL
    settings and the backbone checkpoint's digest), kept in ``run_key.json``. ``inputs``: upstream files by role
    (e.g. ``{'backbone_checkpoint': path}``), recorded with their digests in ``inputs.json`` so ``python -m
    tdam.cache`` can tell when they changed. ``train_fn(cfg)``: trains ``cfg`` and returns its ``RunResult``
    (default ``tdam.train.train``). Everything from the look-up to the end of the training happens under the run's
    lock. Raises KeyboardInterrupt when the training was interrupted (call again to resume)."""
    if train_fn is None:
        from tdam.train.trainer import train as train_fn

    run_dir = cfg.run_dir()
    with _run_lock(run_dir):
        if (found := find_checkpoint(cfg, key=key)) is not None:
            return found
        if key is not None:
            (run_dir / RUN_KEY_FILE).write_text(json.dumps(_plain_json(key), indent=1, sort_keys=True))
        if inputs:
            from tdam.notebook.outputs import file_digest

            record = {role: {"path": str(Path(p).resolve()), "sha256": file_digest(p)} for role, p in inputs.items()}
            (run_dir / INPUTS_FILE).write_text(json.dumps(record, indent=1, sort_keys=True))
        result = train_fn(cfg.replace(resume="auto"))     # continue an interrupted run of this config
        if result.interrupted:
            raise KeyboardInterrupt(f"training of {run_dir} was interrupted; call again to resume it")
        return result.checkpoint


def checkpoint_config(backbone: str = "resnet18", attention: str | None = "td", profile: str | None = None,
                      *, config: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The run :func:`ensure_checkpoint` trains or reuses for these arguments (notebook 01 trains the same).

    ``profile=None`` is automatic (:func:`tdam.train.recipe.resolve_profile`): ``smoke`` on the embedded data,
    ``paper`` (no overlay) when ``data_dir`` is given; a named profile is always applied. ``config``: a params file
    (name under params/imagenet/ or path); when None and ``data_dir`` is given, the model's own params file
    (:func:`tdam.train.recipe.recipe_for`), so real data gets the paper's recipe; when None on the embedded data,
    the TrainConfig defaults. ``overrides`` that are not :class:`TrainConfig` fields (``t``, ``m``, ``td_mode``,
    ``td_stages``, ...) go into the model description. Example: ``checkpoint_config('resnet50', 'td', None,
    data_dir='/data/imagenet')`` is Table 1's TD-ResNet-50 recipe (160 epochs at 224 px), run folder
    ``resnet50_td_joint_t2_m1-paper-<hash>``."""
    from tdam.train.recipe import recipe_for, resolve_profile

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_keys = {k: overrides.pop(k) for k in list(overrides) if k not in fields}
    model = {**model_spec(backbone, **model_keys), "attention": attention}   # attention=None: the plain backbone
    data_dir = overrides.get("data_dir")
    profile = resolve_profile(profile, data_dir)
    if config is None and data_dir is not None:
        config = recipe_for(model)
    return load_config(config, profile=profile, model=model, **overrides)


def ensure_checkpoint(backbone: str = "resnet18", attention: str | None = "td", profile: str | None = None,
                      *, config: str | Path | None = None, **overrides: Any) -> Path:
    """Path to the best (else last) checkpoint of the run :func:`checkpoint_config` describes for these arguments,
    under ``runs/01_train_imagenet/``; trains it first (same engine as notebook 01) when it does not exist yet.
    ``attention=None`` (or 'plain') is the plain backbone; ``profile=None``: ``smoke`` on the embedded data, the
    paper's recipe with a ``data_dir``. The defaults are notebook 01's default run.
    Example: ``ensure_checkpoint('resnet50', 'se')``, ``ensure_checkpoint('resnet18', 'td', t=3, epochs=1)``."""
    return ensure_run(checkpoint_config(backbone, attention, profile, config=config, **overrides))


def new_run_folder(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` in a NEW folder next to its usual one, ``<run name>-<YYYYmmdd-HHMMSS>`` (claimed atomically, so two
    forced runs never share one): a retraining that leaves the finished run, and what reuses it, untouched."""
    base = cfg.run_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        folder = base.with_name(f"{base.name}-{stamp}" + (f"-{i}" if i else ""))
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        return cfg.replace(name=folder.name, output_dir=str(folder), resume=False)
    raise RuntimeError(f"no free run folder next to {base}")


def run_result(run_dir: str | Path):
    """The :class:`~tdam.train.trainer.RunResult` of the run in ``run_dir``, read back from its files (history and
    best epoch from ``last.pth``, the environment from ``env.json``): what a reused run shows."""
    from tdam.train.trainer import RunResult

    run_dir = Path(run_dir)
    ck = read_checkpoint(run_dir / "last.pth")
    env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").is_file() else {}
    num_classes = env.get("num_classes") or (ck.get("model_config") or {}).get("num_classes")
    summary = run_dir / "summary.json"
    return RunResult(run_dir=run_dir, history=list(ck["metrics"]["history"]), best=ck["metrics"]["best"],
                     num_classes=int(num_classes), interrupted=int(ck.get("epoch", 0)) < int(ck["config"]["epochs"])
                     or not summary.is_file(), env=env)


def train_or_reuse(cfg: TrainConfig, *, gpus: int = 0, force: bool = False):
    """Notebook 01: the :class:`~tdam.train.trainer.RunResult` of ``cfg``, reusing its finished run when there is
    one (nothing is trained; a line says so), continuing it when it was interrupted, else training it
    (``tdam.train.run_training`` on ``gpus``), all through :func:`ensure_run`. ``force=True`` trains again into a
    NEW folder (:func:`new_run_folder`), so the finished run that notebooks 02-09 reuse never changes."""
    from tdam.train.launch import run_training
    from tdam.validation import check_bool

    check_bool("force", force)
    if force:
        cfg = new_run_folder(cfg)
    trained = []

    def train_fn(c: TrainConfig):
        trained.append(run_training(c, gpus=gpus))
        return trained[-1]

    ensure_run(cfg, train_fn=train_fn)
    if trained:
        return trained[0]
    print(f"reusing the finished run {cfg.run_dir()} (same parameters): nothing trained; force=True or a new "
          f"`name` trains into a new folder", flush=True)
    return run_result(cfg.run_dir())
