"""Cached runs: train a configuration once, reuse it afterwards, resume it when it was interrupted.

:func:`ensure_run` is the one cache-or-train mechanism, used by :func:`ensure_checkpoint` (the ImageNet models of
notebooks 02-09), by :func:`train_or_reuse` (notebook 01) and by ``tdam.transfer.ensure_transfer_run`` (notebook
07). Under the run's lock (:mod:`tdam.runs.lock`, waiting for its holder) it reuses a finished run, completes or
resumes an unfinished one (``last.pth``), or trains from scratch. Two processes (kernels, ``make`` targets) asking
for the same run wait on that lock: the first trains, the others then find the finished run and reuse it. The trainer
takes the same lock, re-entrantly, and ``prune`` never removes a run while it is held.

Every cached run is named by its identity (:mod:`tdam.runs.identity`): the hash of everything that changes its
weights, epochs included, so notebook 01 with its default parameters and ``ensure_checkpoint()`` with its defaults
name the same run (whichever runs first trains it, the other reuses it), and a 3-epoch request never meets a 5-epoch
run. The ImageNet run folder is ``runs/01_train_imagenet/<model tag>-<profile>-e<epochs>-<hash>``; a transfer run's
identity adds its own settings and the digest of its backbone checkpoint (``key``), so a changed input makes a new
entry next to the old one, never an error. A folder named explicitly (``name`` / ``output_dir``) that holds a run of
another identity is an error, never silently reused. Runs are listed and pruned with ``python -m tdam.cache``.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from tdam.checkpoint import read_checkpoint
from tdam.models import model_spec
from tdam.runs import (BEST_FILE, ENV_FILE, INPUTS_FILE, LAST_FILE, RunLock, file_digest, plain_json, read_record,
                       run_identity, run_state, write_json_atomic, write_record)
from tdam.train.config import TrainConfig, load_config, semantic_config

__all__ = ["ensure_checkpoint", "checkpoint_config", "find_checkpoint", "ensure_run", "train_or_reuse", "run_result",
           "new_run_folder"]


def _identity(cfg: TrainConfig, key: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(identity, request) of the run of ``cfg`` (``key``: a transfer run's request, which includes cfg's own)."""
    request = plain_json(key) if key is not None else semantic_config(cfg)
    return run_identity(request), request


def _check_same(run_dir: Path, want: Mapping[str, Any], have: Mapping[str, Any]) -> None:
    """A folder holding a run of another config (an explicit ``name``/``output_dir`` reused, a file replaced) is an
    error naming the differing keys, never silently reused."""
    want, have = plain_json(want), plain_json(have)
    if want != have:
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise ValueError(f"{run_dir} holds a run of a different config (differs in {diff}); remove {run_dir} "
                         f"or set another `name`")


def find_checkpoint(cfg: TrainConfig, *, key: Mapping[str, Any] | None = None) -> Path | None:
    """``best.pth`` (else ``last.pth``) of the finished run of ``cfg`` (``key``: see :func:`ensure_run`), or None
    when it is not finished (interrupted, or trained to the end with outputs missing: :func:`ensure_run` completes
    it). The folder's record and its checkpoint's config must be the request's: a difference raises ValueError
    naming the differing keys (a run is never silently reused)."""
    run_dir = cfg.run_dir()
    last = run_dir / LAST_FILE
    if not last.is_file():
        return None
    try:
        record = read_record(run_dir)
    except ValueError as e:
        raise ValueError(f"{e}; remove {run_dir} or set another `name`") from None
    if record is not None:
        _check_same(run_dir, _identity(cfg, key)[1], record["request"])
    if run_state(run_dir).state != "finished":
        return None
    _check_same(run_dir, semantic_config(cfg), semantic_config(read_checkpoint(last).get("config", {})))
    best = run_dir / BEST_FILE
    return best if best.is_file() else last


def ensure_run(cfg: TrainConfig, *, key: Mapping[str, Any] | None = None,
               train_fn: Callable[[TrainConfig], Any] | None = None,
               inputs: Mapping[str, str | Path] | None = None, wait: bool = True) -> Path:
    """The checkpoint of the finished run of ``cfg``: reused when finished, completed or resumed when not, else
    trained.

    ``key``: the run's request when it is more than ``cfg``'s semantic config (the transfer runs: their WS-DAN / ASL
    settings and the backbone checkpoint's digest); its hash is the run's identity, recorded in ``run.json``.
    ``inputs``: upstream files by role (e.g. ``{'backbone_checkpoint': path}``), recorded with their digests in
    ``inputs.json`` so ``python -m tdam.cache`` can tell when they changed. ``train_fn(cfg)``: trains ``cfg`` and
    returns its ``RunResult`` (default ``tdam.train.train``). Everything from the look-up to the end of the training
    happens under the run's lock; ``wait=False`` (a command line) refuses at once when another process holds it
    (:class:`~tdam.errors.RunLockedError`) instead of waiting for it. Raises KeyboardInterrupt when the training was interrupted (call again to
    resume)."""
    if train_fn is None:
        from tdam.train.trainer import train as train_fn   # the trainer loads torch: only when a run is trained

    run_dir = cfg.run_dir()
    identity, request = _identity(cfg, key)
    with RunLock(run_dir, wait=wait, handoff=True):     # the training it starts works under this hold
        if (found := find_checkpoint(cfg, key=key)) is not None:
            return found
        if read_record(run_dir) is None:
            write_record(run_dir, identity=identity, kind=run_dir.parent.name, request=request)
        if inputs:
            write_json_atomic(run_dir / INPUTS_FILE, {role: {"path": str(Path(p).resolve()), "sha256": file_digest(p)}
                                                      for role, p in inputs.items()})
        result = train_fn(cfg.replace(resume="auto"))     # continue (or complete) an unfinished run of this config
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
    ck = read_checkpoint(run_dir / LAST_FILE)
    env = json.loads((run_dir / ENV_FILE).read_text()) if (run_dir / ENV_FILE).is_file() else {}
    num_classes = env.get("num_classes") or (ck.get("model_config") or {}).get("num_classes")
    return RunResult(run_dir=run_dir, history=list(ck["metrics"]["history"]), best=ck["metrics"]["best"],
                     num_classes=int(num_classes), interrupted=run_state(run_dir).state != "finished", env=env)


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
    print(f"reusing the finished run {cfg.run_dir()} (the same {cfg.epochs} epoch(s) and every other value that "
          f"changes the weights): nothing trained; force=True or a new `name` trains into a new folder", flush=True)
    return run_result(cfg.run_dir())
