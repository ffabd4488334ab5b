"""Runs (tdam.runs, tdam.train.lineage): identity, the one lock, state from the files, the resume rule, listing and
pruning, and the cases of the runs issue: a 3-epoch request never meets a 5-epoch run, an extension is a new run
naming its parent, a prune leaves a training run alone, a resume never looks in an empty folder, an incomplete run
is completed without training, a damaged record or a wrong --root is reported, runs differing in train_on are told
apart by name, make reproduce leaves tracked files alone."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tdam.checkpoint import read_checkpoint
from tdam.errors import EXIT_CONFIG, ConfigError, ResumeMismatchError, RunLockedError
from tdam.paths import repo_root
from tdam.runs import RunLock, folder_name, lock_holder, read_record, run_identity, run_state
from tdam.runs.layout import LOCK_FILE
from tdam.runs.lock import INHERIT_ENV, inherit_env
from tdam.train import load_config, train
from tdam.train.cli import main, parse_overrides

ARGS = ["--config", "resnet18_td_joint_t2_m1", "--profile", "smoke", "--data_size", "tiny", "--img_size", "32",
        "--batch_size", "8", "--steps_per_epoch", "2", "--val_batches", "1", "--progress", "false"]


def _cfg(**kw):
    return load_config("resnet18_td_joint_t2_m1", profile="smoke", **{**parse_overrides(ARGS[4:]), **kw})


@pytest.fixture(scope="module")
def base_runs(tmp_path_factory, shapes_tiny):
    """A runs folder holding one finished 2-epoch run of :func:`_cfg` (trained once per module)."""
    root = tmp_path_factory.mktemp("runs_base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TDAM_RUNS", str(root))
        train(_cfg(epochs=2))
    return root


@pytest.fixture
def runs(base_runs, tmp_path, monkeypatch) -> Path:
    """A private copy of :func:`base_runs` as this test's ``TDAM_RUNS``."""
    root = tmp_path / "runs"
    shutil.copytree(base_runs, root)
    monkeypatch.setenv("TDAM_RUNS", str(root))
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != LOCK_FILE}


# ------------------------------------------------------------------------------------------------ identity
def test_identity_is_one_hash_of_the_request_and_the_parent():
    request = {"epochs": 3, "lr": 0.1}
    a = run_identity(request)
    assert len(a) == 8 and a == run_identity(dict(reversed(list(request.items()))))    # key order is not identity
    assert a != run_identity({**request, "epochs": 5})
    assert run_identity(request, {"identity": a, "epoch": 2}) != a
    assert run_identity(request, {"identity": a, "epoch": 2}) != run_identity(request, {"identity": a, "epoch": 1})
    assert folder_name(["resnet18_td", None, "smoke", "e3"], a) == f"resnet18_td-smoke-e3-{a}"
    assert folder_name(["a b/c"], a) == f"a_b_c-{a}"
    with pytest.raises(ValueError, match="8 hex digits"):
        folder_name(["x"], "nothex!!")


def test_epochs_and_train_on_show_in_the_name():
    three, five = _cfg(epochs=3), _cfg(epochs=5)
    assert three.run_name() != five.run_name() and "-e3-" in three.run_name() and "-e5-" in five.run_name()
    mc = _cfg(epochs=3, train_on="most_confident")
    assert mc.run_name().split("-")[:-1] == ["resnet18_td_joint_t2_m1", "most_confident", "smoke", "e3"]
    assert three.run_name().split("-")[:-1] == ["resnet18_td_joint_t2_m1", "smoke", "e3"]


def test_transfer_runs_use_the_same_hash():
    from tdam.transfer.run import load_transfer_config, transfer_key

    t = load_transfer_config("_recipe_wsdan", dataset="cub200", random_backbone=True,
                             model={"arch": "resnet18", "attention": "td"}, epochs=2, data_size="tiny")
    assert Path(t.train.output_dir).name == f"wsdan_cub200-e2-{run_identity(transfer_key(t))}"


# ------------------------------------------------------------------------------------------------ the lock
def test_lock_is_handed_down_once_and_refused_otherwise(tmp_path):
    run = tmp_path / "run"
    with RunLock(run, wait=True, handoff=True):
        with RunLock(run):                               # the training a request starts, in-process
            with pytest.raises(RunLockedError, match="in use by this process"):
                RunLock(run).acquire()                   # a third taking is not the handed-down one
        holder = lock_holder(run)
        assert holder["pid"] == os.getpid()
    assert lock_holder(run) is None and (run / LOCK_FILE).read_text() == ""
    with RunLock(run):
        with pytest.raises(RunLockedError, match="in use by this process"):
            RunLock(run).acquire()                      # no hand-down: a second taking is refused


def _hold(run: Path, *until: str) -> subprocess.Popen:
    """Another process holding ``run``'s lock until the file ``until`` exists (then removing ``run`` if asked)."""
    code = ("import sys, time, shutil, pathlib; from tdam.runs import RunLock; "
            "run = pathlib.Path(sys.argv[1]); lock = RunLock(run).acquire(); print('held', flush=True)\n"
            "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.02)\n"
            "if len(sys.argv) > 3: shutil.rmtree(run)")
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    proc = subprocess.Popen([sys.executable, "-c", code, str(run), *until], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_another_process_is_refused_unless_it_inherits_the_lock(tmp_path, monkeypatch):
    run, go = tmp_path / "run", tmp_path / "go"
    proc = _hold(run, str(go))
    try:
        with pytest.raises(RunLockedError, match=rf"in use by another process: PID {proc.pid}"):
            RunLock(run).acquire()
        monkeypatch.setenv(INHERIT_ENV, f"{(run / LOCK_FILE).absolute()}:{proc.pid + 1}")   # not the holder's PID
        with pytest.raises(RunLockedError):
            RunLock(run).acquire()
        monkeypatch.setenv(INHERIT_ENV, f"{(run / LOCK_FILE).absolute()}:{proc.pid}")       # a torchrun job of it
        lock = RunLock(run).acquire()
        assert not lock.held
        lock.release()
    finally:
        go.touch()
        proc.wait(timeout=60)
    assert inherit_env(run) == {INHERIT_ENV: f"{(run / LOCK_FILE).absolute()}:{os.getpid()}"}


def test_a_waiter_whose_folder_was_pruned_starts_on_a_new_one(tmp_path):
    run, go = tmp_path / "run", tmp_path / "go"
    proc = _hold(run, str(go), "remove")                # the holder removes the folder, as prune does
    got: list[RunLock] = []
    waiter = threading.Thread(target=lambda: got.append(RunLock(run, wait=True).acquire()))
    waiter.start()
    time.sleep(0.3)
    assert not got                                      # waiting on the holder
    go.touch()
    waiter.join(timeout=60)
    proc.wait(timeout=60)
    assert got and (run / LOCK_FILE).is_file() and lock_holder(run)["pid"] == os.getpid()
    got[0].release()


# ------------------------------------------------------------------------------------------------ state
def test_state_from_the_files(runs, tmp_path):
    folder = next((runs / "01_train_imagenet").iterdir())
    state = run_state(folder)
    assert (state.state, state.epoch, state.epochs, state.missing) == ("finished", 2, 2, ())
    (folder / "curves.png").unlink()
    (folder / "best.safetensors").unlink()
    assert run_state(folder).missing == ("curves.png", "best.safetensors")
    (folder / "summary.json").unlink()                  # killed after its last save: read from last.pth
    assert run_state(folder).state == "incomplete"
    (folder / "last.pth").write_bytes(b"not a checkpoint")
    damaged = run_state(folder)
    assert damaged.state == "damaged" and "last.pth" in damaged.detail
    assert run_state(tmp_path).state == "empty"


def test_interrupted_state(tmp_path, shapes_tiny):
    res = train(_cfg(epochs=2, output_dir=str(tmp_path / "run")), stop_at_step=3)
    assert res.interrupted
    state = run_state(tmp_path / "run")
    assert state.state == "interrupted" and state.progress == "1/2"


# ------------------------------------------------------------------------------------------------ resume: one rule
def test_extension_is_a_new_run_naming_its_parent_and_the_parent_is_unchanged(runs, capsys):
    parent = next((runs / "01_train_imagenet").iterdir())
    before = _snapshot(parent)
    assert main([*ARGS, "--epochs", "3", "--resume", "true"]) == 0
    child = _cfg(epochs=3, resume=True)
    from tdam.train.lineage import resolve_run

    child_dir = resolve_run(child, create=False).run_dir()
    assert child_dir != parent and child_dir.name.startswith("resnet18_td_joint_t2_m1-smoke-e3-from2-")
    record = read_record(child_dir)
    assert record["parent"]["folder"] == parent.name and record["parent"]["epoch"] == 2
    assert record["parent"]["identity"] == read_record(parent)["identity"]
    assert record["identity"] == child_dir.name[-8:] != _cfg(epochs=3).identity()   # not the 3-epoch-from-scratch run
    assert read_checkpoint(child_dir / "last.pth")["epoch"] == 3
    assert _snapshot(parent) == before                  # never changes what an existing identity names
    assert "resumed at epoch 3" in (child_dir / "train.log").read_text()
    capsys.readouterr()
    assert main([*ARGS, "--epochs", "3", "--resume", "true"]) == 0      # the same command again: reported
    assert f"{child_dir} already holds this run, finished" in capsys.readouterr().out
    assert main([*ARGS, "--epochs", "2"]) == 0          # the 2-epoch request still meets the 2-epoch run
    assert f"{parent} already holds this run, finished" in capsys.readouterr().out


def test_a_shorter_request_never_reuses_a_longer_run(runs, capsys):
    from tdam.train.cache import train_or_reuse

    assert main([*ARGS, "--epochs", "3", "--resume", "true"]) == 0
    res = train_or_reuse(_cfg(epochs=2))                # notebook 01's call
    out = capsys.readouterr().out
    assert "reusing the finished run" in out and "-e2-" in str(res.run_dir) and "the same 2 epoch(s)" in out
    assert len(res.history) == 2 and res.best["epoch"] <= 2


def test_a_resume_that_would_train_nothing_or_change_the_model_is_refused(runs, capsys):
    parent = next((runs / "01_train_imagenet").iterdir())
    before = sorted(p.name for p in (runs / "01_train_imagenet").iterdir())
    assert main([*ARGS, "--epochs", "2", "--lr", "0.01", "--resume", "true"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{parent.name} already trained 2 epoch(s)" in err and "lr None -> 0.01" in err and "no checkpoint" not in err
    assert main([*ARGS, "--epochs", "3", "--model.t", "3", "--resume", "true"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "model.t 2 -> 3" in err and parent.name in err and "no checkpoint" not in err
    assert sorted(p.name for p in (runs / "01_train_imagenet").iterdir()) == before   # no empty folder left


def test_a_changed_lr_continues_an_interrupted_run_as_a_new_run(tmp_path, monkeypatch, shapes_tiny):
    monkeypatch.setenv("TDAM_RUNS", str(tmp_path))
    first = train(_cfg(epochs=2), stop_at_step=3)       # interrupted in epoch 2
    assert first.interrupted
    res = train(_cfg(epochs=2, lr=0.01, resume=True))
    assert not res.interrupted and res.run_dir != first.run_dir and "-e2-from1-" in res.run_dir.name
    assert len(res.history) == 2 and read_checkpoint(res.run_dir / "last.pth")["config"]["lr"] == 0.01
    history = [json.loads(ln) for ln in (res.run_dir / "config_history.jsonl").read_text().splitlines()]
    assert history[-1]["event"] == "resume" and history[-1]["changes"] == {"lr": [None, 0.01]}


def test_nothing_to_continue_and_two_equally_close_parents_are_named(runs, tmp_path, monkeypatch):
    from tdam.train.lineage import find_parent

    empty = tmp_path / "empty"
    monkeypatch.setenv("TDAM_RUNS", str(empty))
    with pytest.raises(ConfigError, match="no run to continue"):
        find_parent(_cfg(epochs=3, resume=True))
    monkeypatch.setenv("TDAM_RUNS", str(runs))
    parent = next((runs / "01_train_imagenet").iterdir())
    twins = []
    for lr in (0.2, 0.3):
        twin = parent.with_name(f"{parent.name}-lr{lr}")
        shutil.copytree(parent, twin)
        cfg = yaml.safe_load((twin / "config.yaml").read_text())
        (twin / "config.yaml").write_text(yaml.safe_dump({**cfg, "lr": lr}))
        twins.append(twin.name)
    assert find_parent(_cfg(epochs=3, resume=True)) == parent        # fewest schedule differences (epochs only)
    with pytest.raises(ConfigError, match=rf"3 runs are equally close.*{parent.name} .*{twins[0]}.*{twins[1]}"):
        find_parent(_cfg(epochs=3, lr=0.4, resume=True))
    with pytest.raises(ResumeMismatchError, match="img_size 32 -> 48"):
        find_parent(_cfg(epochs=3, img_size=48, resume=True))


def test_a_named_folder_without_a_run_is_not_searched(tmp_path, capsys, shapes_tiny):
    rc = main([*ARGS, "--epochs", "2", "--output_dir", str(tmp_path / "nothing"), "--resume", "true"])
    err = capsys.readouterr().err
    assert rc == EXIT_CONFIG and "holds no run to continue" in err and "--resume <path" in err


# ------------------------------------------------------------------------------------------------ complete
def test_a_run_trained_to_the_end_gets_its_missing_outputs_without_training(runs, capsys):
    from tdam.cache import main as cache_main

    folder = next((runs / "01_train_imagenet").iterdir())
    last = (folder / "last.pth").read_bytes()
    rows = (folder / "metrics.csv").read_text()
    for name in ("summary.json", "best.safetensors", "curves.png", "curves.pdf", "best.pth"):
        (folder / name).unlink()
    cache_main(["list"])
    assert " incomplete " in capsys.readouterr().out
    assert main([*ARGS, "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "was trained to the end but lacks" in out and "nothing trained" in out
    assert run_state(folder).state == "finished"
    assert (folder / "last.pth").read_bytes() == last and (folder / "metrics.csv").read_text() == rows
    assert "writing the outputs only" in (folder / "train.log").read_text()
    cache_main(["list"])
    assert " finished " in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ list / prune
def test_list_survives_a_damaged_record_and_refuses_a_missing_root(runs, tmp_path, capsys):
    from tdam.cache import main as cache_main

    folder = next((runs / "01_train_imagenet").iterdir())
    (folder / "inputs.json").write_text("{garbled")
    (folder / "run.json").write_text("[1, 2")
    assert cache_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "inputs unreadable" in out and "1 run(s)" in out and folder.name in out
    assert "smoke" in out and "last" in out and "2/2" in out           # profile, train_on, epochs trained/planned
    assert cache_main(["--root", str(tmp_path / "nonexistent"), "list"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("error: --root") and "no such folder" in err and "Traceback" not in err


def test_make_reproduce_leaves_the_tracked_gallery_alone():
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    out = subprocess.run([make, "-n", "reproduce", "gallery"], cwd=repo_root(), capture_output=True,
                         text=True).stdout.splitlines()
    reproduce, gallery = [ln for ln in out if "tdam.notebook.reproduce" in ln]
    assert "docs/gallery" not in reproduce and "--gallery docs/gallery" in gallery


@pytest.mark.drill
def test_prune_leaves_a_training_run_alone_and_it_finishes(tmp_path, shapes_tiny):
    env = {**os.environ, "PYTHONPATH": str(repo_root()), "TDAM_RUNS": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "tdam.train", *ARGS, "--epochs", "3", "--log_interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    end = time.monotonic() + 300
    while not list(tmp_path.glob("01_train_imagenet/*/train.log")):
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.05)
    run = next(tmp_path.glob("01_train_imagenet/*"))
    pruned = subprocess.run([sys.executable, "-m", "tdam.cache", "prune", "--older-than", "0s"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert pruned.returncode == 0 and f"kept {run}: in use by PID {proc.pid}" in pruned.stdout, pruned
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert run.is_dir() and run_state(run).state == "finished" and "done: best val top-1" in out


def test_the_readme_names_the_runs_its_commands_make():
    """The run folders the README shows are the ones its commands name (they change with any field of the config)."""
    from tdam.train import checkpoint_config

    readme = (repo_root() / "README.md").read_text()
    assert f"`{checkpoint_config('resnet18', 'td', None).run_name()}`, the demo's run" in readme
    cli = load_config("resnet18_td_joint_t2_m1", profile="smoke",
                      **parse_overrides("--epochs 2 --steps_per_epoch 6 --log_interval 2".split()))
    assert "--epochs 2 --steps_per_epoch 6 --log_interval 2`" in readme
    assert f"checkpoint runs/01_train_imagenet/{cli.run_name()}/best.pth" in readme
