"""Reruns are safe: reproducible training, notebook 01 reusing its run, caches keyed by their inputs, one lock per run,
and the `python -m tdam.cache` list / prune command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tdam.checkpoint import read_checkpoint, save_checkpoint
from tdam.paths import repo_root
from tdam.train import load_config
from tdam.train.cache import train_or_reuse

TINY = dict(data_size="tiny", img_size=32, batch_size=16, epochs=1, steps_per_epoch=2, val_batches=1,
            progress=False)


def _tiny(name: str | None = None, **kw):
    return load_config(None, profile="smoke", model={"arch": "resnet18", "attention": "td"}, name=name,
                       **{**TINY, **kw})


def _python(code: str, *args: str, **env: str) -> subprocess.Popen:
    """A separate Python process running ``code`` with this checkout's tdam and the test's runs / data folders."""
    full_env = {**os.environ, "PYTHONPATH": str(repo_root()), "OMP_WAIT_POLICY": "PASSIVE", **env}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(out)
    return outs


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


# ------------------------------------------------------------------------------------------ reproducible training
@pytest.mark.drill
def test_smoke_run_twice_in_separate_processes_with_workers_gives_identical_weights(shapes_tiny, tmp_path):
    """The default smoke run (tiny data, 2 x 3 updates), twice in separate processes with 2 data-loader workers
    each: bit-identical weights."""
    code = ("import sys; from tdam.train import load_config, train; "
            "cfg = load_config(None, profile='smoke', model={'arch': 'resnet18', 'attention': 'td'}, "
            "data_size='tiny', img_size=32, batch_size=16, epochs=2, steps_per_epoch=3, val_batches=1, workers=2, "
            "progress=False, name=sys.argv[-1]); print(train(cfg).last_checkpoint)")
    procs = [_python(code, run, TDAM_RUNS=str(tmp_path)) for run in ("first", "second")]
    first, second = (Path(out.strip().splitlines()[-1]) for out in _finish(procs))
    assert first != second
    _same_weights(first, second)


@pytest.mark.slow
def test_workers_do_not_change_the_weights(shapes_tiny):
    """Each sample's augmentation is seeded by (seed, epoch, index): 0 or 2 loader workers, same weights."""
    from tdam.train import train

    a, b = train(_tiny("w0", workers=0)), train(_tiny("w2", workers=2))
    _same_weights(a.last_checkpoint, b.last_checkpoint)


def test_deterministic_option_sets_and_restores_torch_flags():
    from tdam.train.state import deterministic_algorithms

    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
              os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.deterministic and os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG")) == before
    cfg = _tiny(deterministic=True)
    assert cfg.run_dir() == _tiny().run_dir()     # how it is computed, not what is learned: the same cached run
    with pytest.raises(ValueError, match="deterministic"):
        _tiny(deterministic="yes")


# ------------------------------------------------------------------------------------------ notebook 01 reuses
@pytest.mark.slow
def test_train_or_reuse_reuses_then_force_trains_a_new_folder(shapes_tiny, capsys):
    cfg = _tiny()
    first = train_or_reuse(cfg)
    last = first.last_checkpoint
    stamp = last.stat().st_mtime_ns
    again = train_or_reuse(cfg)
    assert "reusing the finished run" in capsys.readouterr().out
    assert again.run_dir == first.run_dir and last.stat().st_mtime_ns == stamp     # nothing retrained
    assert again.history == first.history and again.best == first.best and not again.interrupted
    assert again.num_classes == first.num_classes == 12
    forced = train_or_reuse(cfg, force=True)
    assert forced.run_dir != first.run_dir and forced.run_dir.name.startswith(first.run_dir.name + "-")
    assert last.stat().st_mtime_ns == stamp and (forced.run_dir / "best.pth").is_file()
    _same_weights(last, forced.last_checkpoint)                                     # and reproducible
    renamed = train_or_reuse(cfg.replace(name="renamed"))
    assert renamed.run_dir.name == "renamed" and last.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="force"):
        train_or_reuse(cfg, force="yes")


def test_notebook01_reads_force_and_name():
    import nbformat

    nb = nbformat.read(repo_root() / "notebooks" / "01_train_imagenet.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert 'force: "bool" = False' in code[0] and 'name: "Optional[str]" = None' in code[0]
    assert any("train_or_reuse(cfg, gpus=p.gpus, force=p.force)" in c for c in code)


# ------------------------------------------------------------------------------------------ keyed by the inputs
def _transfer_cfg(backbone: Path):
    from tdam.transfer.run import load_transfer_config

    return load_transfer_config("_recipe_wsdan", dataset="cub200", data_size="tiny", backbone_checkpoint=str(backbone),
                                name="cub_test", img_size=32, batch_size=8, epochs=1, steps_per_epoch=1,
                                val_batches=1, workers=0, lr=1e-2, num_attentions=2, progress=False, device="cpu")


@pytest.mark.slow
def test_changed_backbone_makes_a_new_transfer_entry_and_both_stay_valid(shapes_tiny, tmp_path):
    import tdam
    from tdam.cache import entries, prune
    from tdam.transfer import ensure_transfer_run

    backbone = tmp_path / "backbone.pth"

    def save_backbone(seed: int) -> None:
        torch.manual_seed(seed)
        model = tdam.create_model("resnet18", attention="td", num_classes=12)
        save_checkpoint({"model": model.state_dict(), "model_config": model.model_config}, backbone)

    save_backbone(0)
    first = ensure_transfer_run(_transfer_cfg(backbone))
    assert first.run_dir.name.startswith("cub_test-") and first.checkpoint.is_file()
    stamp = first.checkpoint.stat().st_mtime_ns
    original = backbone.read_bytes()
    save_backbone(1)                                   # the backbone was retrained: a new entry, never an error
    second = ensure_transfer_run(_transfer_cfg(backbone))
    assert second.run_dir != first.run_dir and second.run_dir.parent == first.run_dir.parent
    assert first.checkpoint.stat().st_mtime_ns == stamp
    state = {e.path: e.inputs for e in entries()}
    assert (state[first.run_dir], state[second.run_dir]) == ("changed", "ok")
    backbone.write_bytes(original)                     # back to the first backbone: its entry is reused as it is
    again = ensure_transfer_run(_transfer_cfg(backbone))
    assert again.run_dir == first.run_dir and first.checkpoint.stat().st_mtime_ns == stamp
    assert again.history == first.history
    would = [e.path for e in prune(unused=True, dry_run=True)[0]]
    assert second.run_dir in would and first.run_dir not in would and second.run_dir.is_dir()   # dry run
    assert second.run_dir in [e.path for e in prune(unused=True)[0]] and not second.run_dir.exists()
    assert first.run_dir.is_dir()


# ------------------------------------------------------------------------------------------ list / prune
def _fake_run(root: Path, kind: str, name: str, age_s: float) -> Path:
    d = root / kind / name
    d.mkdir(parents=True)
    (d / "last.pth").write_bytes(b"x" * 1024)
    (d / ".lock").touch()
    t = time.time() - age_s
    for f in (d / "last.pth", d / ".lock"):
        os.utime(f, (t, t))
    return d


def test_cache_command_lists_and_prunes_by_age(tmp_path, capsys):
    from tdam.cache import main, parse_age

    assert parse_age("7d") == 7 * 86400 and parse_age("90m") == 5400
    with pytest.raises(ValueError, match="e.g. 30m, 12h, 7d"):
        parse_age("7 days")
    old = _fake_run(tmp_path, "01_train_imagenet", "old", 10 * 86400)
    new = _fake_run(tmp_path, "07_transfer", "new", 60)
    (tmp_path / "data" / "shapes-tiny-s0").mkdir(parents=True)      # the dataset cache is not an entry
    assert main(["--root", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert old.name in out and new.name in out and "2 run(s)" in out and "shapes" not in out
    assert main(["--root", str(tmp_path), "prune", "--older-than", "7d", "--dry-run"]) == 0
    assert "would remove" in capsys.readouterr().out and old.is_dir()
    assert main(["--root", str(tmp_path), "prune", "--older-than", "7d"]) == 0
    assert not old.exists() and new.is_dir() and (tmp_path / "data" / "shapes-tiny-s0").is_dir()
    assert main(["--root", str(tmp_path), "prune"]) == 2             # nothing is removed by default
    assert "give --older-than AGE and/or --unused" in capsys.readouterr().err


def test_prune_skips_an_entry_in_use(tmp_path):
    import fcntl

    from tdam.cache import prune

    busy = _fake_run(tmp_path, "01_train_imagenet", "busy", 10 * 86400)
    with open(busy / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        removed, in_use = prune(older_than=86400, root=tmp_path)
        assert removed == [] and [e.path for e in in_use] == [busy] and busy.is_dir()


# ------------------------------------------------------------------------------------------ concurrent requests
@pytest.mark.drill
def test_two_processes_request_the_same_uncached_run_one_trains_the_other_reuses(shapes_tiny, tmp_path):
    code = ("import time; from tdam.train import ensure_checkpoint; t = time.time(); "
            "p = ensure_checkpoint('resnet18', 'td', 'smoke', data_size='tiny', img_size=32, batch_size=16, "
            "epochs=1, steps_per_epoch=2, val_batches=1, progress=False); print(p)")
    procs = [_python(code, TDAM_RUNS=str(tmp_path)) for _ in range(2)]
    paths = {Path(out.strip().splitlines()[-1]) for out in _finish(procs)}
    assert len(paths) == 1
    path = paths.pop()
    assert path.is_file()
    starts = [line for line in (path.parent / "train.log").read_text().splitlines() if " run " in line
              and "updates/epoch" in line]
    assert len(starts) == 1, starts                    # trained once; the other process waited, then reused it
    assert json.loads((path.parent / "summary.json").read_text())["final"]["epoch"] == 1
