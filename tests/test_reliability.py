"""Bad inputs and faults: each ends in a named error with the file, value or path, its own exit code, and nothing
left behind (no run folder, no partial files). Cases of the reliability review, in its order; the checkpoint-format
cases (unsafe pickles, safetensors dtypes, damaged tensor data, the writer's own ENOSPC) are in test_checkpoint.py.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

import tdam.train.trainer
from tdam.checkpoint import read_checkpoint
from tdam.data import DatasetLayoutError, build_dataset
from tdam.data.errors import BadImageError
from tdam.train import load_config, train
from tdam.train.cli import main, parse_overrides
from tdam.train.config import ConfigError, load_yaml_with_base
from tdam.errors import (EXIT_BUSY, EXIT_CONFIG, EXIT_DATA, EXIT_INTERRUPTED, EXIT_IO, ClassCountError,
                               ResumeMismatchError, RunLockedError, RunWriteError, writing)
from tdam.runs import RunLock
from tdam.runs.layout import LOCK_FILE

SMALL = ["--profile", "smoke", "--data_size", "tiny", "--img_size", "32", "--batch_size", "8", "--epochs", "1",
         "--steps_per_epoch", "2", "--val_batches", "1", "--log_interval", "1"]


def _cfg(run: Path, **kw):
    return load_config(None, profile="smoke", **{**parse_overrides(SMALL[2:]), "output_dir": str(run), **kw})


def _cli(capsys, *args: str) -> tuple[int, str]:
    rc = main([*SMALL, *args])
    return rc, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------------- config parsing
def test_yaml_syntax_error_names_file_line_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlr: 0.1: 3\nmomentum: 0.9\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:2:8: YAML syntax error: mapping values are not allowed"):
        load_yaml_with_base(bad)
    run = tmp_path / "run"
    rc, err = _cli(capsys, "--config", str(bad), "--output_dir", str(run))
    assert rc == EXIT_CONFIG and f"{bad}:2:8:" in _one_error_line(err) and not run.exists()


def test_cli_value_syntax_error_names_the_flag(tmp_path, capsys):
    rc, err = _cli(capsys, "--model", "{arch: resnet18", "--output_dir", str(tmp_path / "run"))
    assert rc == EXIT_CONFIG and "--model:1:" in _one_error_line(err) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("base", ["5", "[a.yaml, 3]", "{x: 1}"])
def test_base_must_be_a_path_or_list_of_paths(tmp_path, base):
    f = tmp_path / "c.yaml"
    f.write_text(f"base: {base}\nepochs: 2\n")
    with pytest.raises(ConfigError, match=r"base=.*expected a file path or a list of file paths") as e:
        load_yaml_with_base(f)
    assert str(f) in str(e.value)


def test_duplicate_key_names_both_lines(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("epochs: 2\nlr: 0.1\nepochs: 5\n")
    with pytest.raises(ConfigError, match=rf"^{f}:3: duplicate key 'epochs' \(first given on line 1\)"):
        load_yaml_with_base(f)
    g = tmp_path / "dup_model.yaml"
    g.write_text("model:\n  arch: resnet18\n  t: 2\n  t: 3\n")
    with pytest.raises(ConfigError, match=r":4: duplicate key 't' \(first given on line 3\)"):
        load_yaml_with_base(g)


def test_unknown_model_options_are_named(tmp_path, capsys):
    f = tmp_path / "opts.yaml"
    f.write_text("model_options: {foo: 1}\n")
    rc, err = _cli(capsys, "--config", str(f), "--output_dir", str(tmp_path / "run"))
    line = _one_error_line(err)
    assert rc == EXIT_CONFIG and "unknown config key(s) ['model_options']" in line and "model:" in line
    rc, err = _cli(capsys, "--model.foo", "1", "--output_dir", str(tmp_path / "run"))
    assert rc == EXIT_CONFIG and "foo" in err and "valid model options are" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("flag,value", [("--lr", ".nan"), ("--lr", ".inf"), ("--lr", "nan"), ("--warmup_lr", "-.inf"),
                                        ("--min_lr", ".nan"), ("--momentum", ".nan")])
def test_non_finite_numbers_refused_up_front(tmp_path, capsys, flag, value):
    rc, err = _cli(capsys, flag, value, "--output_dir", str(tmp_path / "run"))
    line = _one_error_line(err)
    assert rc == EXIT_CONFIG and flag[2:] in line and "expected a finite number" in line
    assert not (tmp_path / "run").exists()


def test_every_float_field_refuses_nan_and_inf():
    from dataclasses import fields

    from tdam.train import TrainConfig

    names = [f.name for f in fields(TrainConfig) if "float" in str(f.type)]
    assert {"lr", "warmup_lr", "min_lr", "crop_pct", "scale"} <= set(names)
    for name in names:
        for bad in (float("nan"), float("inf"), float("-inf")):
            value = [0.5, bad] if name == "scale" else bad
            with pytest.raises(ValueError, match=f"^{name}="):
                TrainConfig(**{name: value})


def test_option_that_does_not_apply_to_the_model_is_refused(tmp_path, capsys):
    rc, err = _cli(capsys, "--model.attention", "se", "--model.t", "5", "--output_dir", str(tmp_path / "run"))
    assert rc == EXIT_CONFIG and "TD options ['t'] given, but attention='se'" in _one_error_line(err)
    assert not (tmp_path / "run").exists()


def test_mobilenetv3_default_placement_accepted():
    cfg = load_config(None, model={"arch": "mobilenetv3_large_100", "attention": "td", "td_stages": [4, 5, 6]})
    assert cfg.model["td_stages"] == [4, 5, 6]


def test_class_count_checked_before_the_first_update(tmp_path, capsys, shapes_tiny):
    run = tmp_path / "run"
    with pytest.raises(ClassCountError, match=r"model.num_classes=5 but the imagenet data at .* has 12 classes") as e:
        train(_cfg(run, model={"num_classes": 5}))
    assert str(shapes_tiny) in str(e.value)
    assert not run.exists()                                  # refused before the run folder was made
    rc, err = _cli(capsys, "--model.num_classes", "5", "--output_dir", str(run))
    assert rc == EXIT_CONFIG and "num_classes=5" in _one_error_line(err) and not run.exists()


# ---------------------------------------------------------------------------------------------- data
def _image_folder(root: Path, *, flat_val: bool = False, corrupt: bool = False) -> Path:
    for split in ("train", "val"):
        for c in ("a", "b"):
            d = root / split if (flat_val and split == "val") else root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(8 if split == "train" else 2):
                Image.new("RGB", (40, 40), (60 * i % 255, 0, 0)).save(d / f"{c}_{i}.png")
    if corrupt:
        (root / "train" / "a" / "a_3.png").write_bytes(b"not a png")
    return root


def test_flat_val_folder_says_images_are_directly_inside(tmp_path):
    root = _image_folder(tmp_path / "inet", flat_val=True)
    with pytest.raises(DatasetLayoutError, match=r"'val/' holds 4 images directly \(e.g. a_0.png\)") as e:
        build_dataset("imagenet", root, "val")
    assert str(root / "val") in str(e.value)


def _coco(root: Path, images: list, anns: list) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    js = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(js))
    return root / "annotations" / "instances_val2014.json"


def test_coco_annotation_without_bbox_names_file_and_record(tmp_path):
    img = {"id": 7, "file_name": "x.jpg", "width": 8, "height": 6}
    ann_file = _coco(tmp_path / "c1", [img], [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1]},
                                               {"id": 42, "image_id": 7, "category_id": 1}])
    with pytest.raises(DatasetLayoutError, match=r"annotations\[1\] \(id 42\) has no 'bbox' field") as e:
        build_dataset("coco2014", tmp_path / "c1", "val")
    assert str(ann_file) in str(e.value)


def test_coco_image_without_file_name_names_file_and_record(tmp_path):
    ann_file = _coco(tmp_path / "c2", [{"id": 7, "width": 8, "height": 6}],
                     [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(DatasetLayoutError, match=r"images\[0\] \(id 7\) has no 'file_name' field") as e:
        build_dataset("coco2014", tmp_path / "c2", "val")
    assert str(ann_file) in str(e.value)


def test_cub_non_numeric_box_names_file_and_line(tmp_path, shapes_tiny):
    root = tmp_path / "cub"
    shutil.copytree(shapes_tiny / "cub200", root)
    cub = root / "CUB_200_2011" if (root / "CUB_200_2011").is_dir() else root
    boxes = cub / "bounding_boxes.txt"
    lines = boxes.read_text().splitlines()
    lines[2] = lines[2].split()[0] + " 1.0 abc 3.0 4.0"
    boxes.write_text("\n".join(lines) + "\n")
    ds = build_dataset("cub200", root, "train")
    with pytest.raises(DatasetLayoutError, match=r"line 3 \(.*abc.*\) is not '<id> 4 numbers'") as e:
        ds.boxes(0)
    assert str(boxes) in str(e.value)


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_a_named_data_error_pointing_to_skip(tmp_path, capsys, workers):
    root = _image_folder(tmp_path / "inet", corrupt=True)
    run = tmp_path / "run"
    rc, err = _cli(capsys, "--data_dir", str(root), "--batch_size", "16", "--workers", str(workers),
                   "--output_dir", str(run))
    line = _one_error_line(err)
    assert rc == EXIT_DATA
    assert f"cannot read image file {root / 'train' / 'a' / 'a_3.png'}" in line and "skip_bad_images: true" in line
    assert not (run / "last.pth").exists() and not list(run.glob("*.tmp"))


def test_bad_image_error_from_a_worker_keeps_the_file_name():
    msg = ("Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
           "  File \"x.py\", line 1\ntdam.data.errors.BadImageError: cannot read image file /d/x.png: "
           "UnidentifiedImageError: cannot identify image file '/d/x.png'\n")
    e = BadImageError(msg)
    assert e.path == "/d/x.png" and str(e).startswith("cannot read image file /d/x.png: Unidentified")


# ---------------------------------------------------------------------------------------------- faults: run folder
def test_stale_temporary_files_removed_at_start(tmp_path, shapes_tiny):
    run = tmp_path / "run"
    run.mkdir()
    stale = run / f".last.pth.{2**22 + 7}.0123abcd.tmp"
    stale.write_bytes(b"x" * 1000)
    train(_cfg(run))
    assert not stale.exists() and (run / "last.pth").is_file()


def test_start_of_run_calls_the_temp_clean_up(tmp_path, shapes_tiny, monkeypatch):
    seen = []
    monkeypatch.setattr(tdam.train.trainer, "remove_stale_temps", lambda d: seen.append(Path(d)) or [])
    run = tmp_path / "run"
    train(_cfg(run), stop_at_step=1)
    assert seen == [run]


@pytest.mark.parametrize("err_no,why", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EROFS, "Read-only file system")])
def test_full_or_read_only_folder_is_one_line_naming_the_path(tmp_path, capsys, shapes_tiny, monkeypatch, err_no,
                                                               why):
    import tdam.train.trainer as trainer

    real = trainer._Run.write_config

    def failing_write(self):                                   # as a full disk's write(): no file name in it
        real(self)
        with writing(self.run_dir / "metrics.csv"):
            raise OSError(err_no, os.strerror(err_no))

    monkeypatch.setattr(trainer._Run, "write_config", failing_write)
    run = tmp_path / "run"
    rc, err = _cli(capsys, "--output_dir", str(run))
    assert rc == EXIT_IO and _one_error_line(err) == f"error: cannot write {run / 'metrics.csv'}: {why}"
    assert not run.exists()                                  # the refused start removed the folder it made


def test_read_only_output_folder(tmp_path, capsys, shapes_tiny, monkeypatch):
    real_mkdir = Path.mkdir

    def ro_mkdir(self, *a, **k):
        if "ro" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", ro_mkdir)
    run = tmp_path / "ro" / "run"
    rc, err = _cli(capsys, "--output_dir", str(run))
    line = _one_error_line(err)
    assert rc == EXIT_IO and line.startswith(f"error: cannot write {run / LOCK_FILE}") and "Read-only" in line
    with pytest.raises(RunWriteError):
        train(_cfg(run))


def test_second_live_run_refused_naming_pid_and_host(tmp_path, capsys, shapes_tiny):
    run = tmp_path / "run"
    with RunLock(run):                                         # a live run holds the folder (here: this process)
        with pytest.raises(RunLockedError, match=rf"PID {os.getpid()} on host {socket.gethostname()}") as e:
            train(_cfg(run))
        assert e.value.pid == os.getpid()
        rc, err = _cli(capsys, "--output_dir", str(run))
        assert rc == EXIT_BUSY and f"PID {os.getpid()}" in _one_error_line(err)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]      # nothing written by the refused runs


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, shapes_tiny):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": "old-host", "started": "then"}))
    res = train(_cfg(run))
    assert not res.interrupted
    assert f"took over the stale run lock {run / LOCK_FILE} of PID {int(dead.stdout)} on host old-host" in \
        (run / "train.log").read_text()
    assert (run / LOCK_FILE).read_text() == ""               # released cleanly: no holder record left


@pytest.mark.drill
def test_two_processes_on_one_run_folder_exactly_one_trains(tmp_path, shapes_tiny):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "tdam.train", *SMALL, "--epochs", "3", "--steps_per_epoch", "4",
            "--output_dir", str(run)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, EXIT_BUSY], outs
    loser = outs[[p.returncode for p in procs].index(EXIT_BUSY)][1]
    assert "is in use by another process: PID" in loser and socket.gethostname() in loser
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 3                                # one run's three epochs, not interleaved rows
    assert len((run / "config_history.jsonl").read_text().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- faults: resume
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shapes_tiny):
    run = tmp_path_factory.mktemp("trained") / "run"
    train(_cfg(run))
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_resume_with_another_backbone_is_refused(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ResumeMismatchError, match=r"model.arch 'resnet18' -> 'resnet34'") as e:
        train(_cfg(run, resume=True, model={"arch": "resnet34"}))
    assert str(run / "last.pth") in str(e.value)
    rc, err = _cli(capsys, "--output_dir", str(run), "--resume", "true", "--model.arch", "resnet34",
                   "--img_size", "48")
    line = _one_error_line(err)
    assert rc == EXIT_CONFIG and "model.arch 'resnet18' -> 'resnet34'" in line and "img_size 32 -> 48" in line
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before                                   # nothing written or overwritten


def test_resume_into_a_named_folder_with_a_new_schedule_is_refused(trained_run, tmp_path, capsys):
    """A named folder holds one run: continuing it with more epochs or another lr would change what its name points
    at; the refusal says how to continue it as a new run."""
    run = _copy(trained_run, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ResumeMismatchError, match=r"epochs 1 -> 2, lr None -> 0.05.*continues as a new run"):
        train(_cfg(run, resume=True, epochs=2, lr=0.05))
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_fresh_start_over_an_existing_run_is_refused(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    rc, err = _cli(capsys, "--output_dir", str(run), "--seed", "7")      # another run into the finished one's folder
    line = _one_error_line(err)
    assert rc == EXIT_CONFIG and f"{run} already holds a run" in line and "--resume true" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    rc, _ = _cli(capsys, "--output_dir", str(run))                      # the same run again: reported, not retrained
    assert rc == 0 and {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_run_name_depends_on_everything_that_changes_the_weights():
    a = load_config(None, profile="smoke")
    assert a.run_name() != load_config(None, profile="smoke", epochs=50).run_name()      # epochs included
    assert "-e3-" in a.run_name() and "-e50-" in load_config(None, profile="smoke", epochs=50).run_name()
    assert a.run_name() != load_config(None, profile="smoke", lr=0.3, warmup_epochs=1).run_name()
    assert a.run_name() != load_config(None, profile="smoke", seed=3).run_name()
    assert a.run_name() != load_config(None, profile="smoke", model={"arch": "resnet34"}).run_name()
    assert a.run_name() == load_config(None, profile="smoke", workers=0, log_interval=7).run_name()   # not weights


@pytest.mark.drill
def test_sigterm_exit_code_is_interrupted(tmp_path, shapes_tiny):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tdam.train", *SMALL, "--epochs", "50", "--steps_per_epoch", "4",
                             "--output_dir", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run / "train.log"
    end = time.monotonic() + 300
    while not (log.is_file() and "update 1/4" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.05)
    proc.terminate()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED and "pre-empted: resume with --resume true" in out
    assert not (run / LOCK_FILE).read_text()                 # the lock was released


@pytest.mark.slow
def test_a_longer_request_is_a_new_run_and_an_extension_follows_the_new_schedule(tmp_path, shapes_tiny, monkeypatch):
    """ensure_checkpoint: a finished 1-epoch run does not satisfy a 2-epoch request, which trains its own run; an
    extension (resume true) is a third run, named after its parent, whose lr in the epoch it adds (3 of 3) is that of
    a run planned for 3 epochs (not the finished one's cosine, which ended at 0)."""
    from tdam.paths import data_cache_dir
    from tdam.train import ensure_checkpoint

    monkeypatch.setenv("TDAM_DATA", str(data_cache_dir()))      # keep the generated datasets where they are
    monkeypatch.setenv("TDAM_RUNS", str(tmp_path / "runs"))
    kw = dict(data_size="tiny", img_size=32, batch_size=8, steps_per_epoch=2, val_batches=1, progress=False)
    one = ensure_checkpoint("resnet18", "plain", "smoke", epochs=1, **kw)
    two = ensure_checkpoint("resnet18", "plain", "smoke", epochs=2, **kw)
    assert one.parent != two.parent and read_checkpoint(one.parent / "last.pth")["epoch"] == 1
    assert "resumed" not in (two.parent / "train.log").read_text()              # trained from scratch
    three = train(load_config(None, profile="smoke", model={"arch": "resnet18", "attention": "plain"}, epochs=3,
                              resume=True, **kw))
    assert "-e3-from2-" in three.run_dir.name
    assert json.loads((three.run_dir / "run.json").read_text())["parent"]["folder"] == two.parent.name
    assert read_checkpoint(two.parent / "last.pth")["epoch"] == 2                # the parent is left as it was
    planned = ensure_checkpoint("resnet18", "plain", "smoke", epochs=3, **kw)
    lr, want = (read_checkpoint(c / "last.pth")["metrics"]["history"][2]["lr"] for c in (three.run_dir,
                                                                                        planned.parent))
    assert lr > 0 and lr == pytest.approx(want)


def test_resume_check_treats_a_written_out_td_default_as_the_same_model():
    """Notebook 01's run (model {arch, attention}) extended from the CLI with its params file, which writes t, m and
    td_mode out at their defaults: one model, so only the schedule changes; another t is still refused."""
    from tdam.train.config import config_changes

    stored = load_config(None, profile="smoke", model={"arch": "resnet18", "attention": "td"}).to_dict()
    same = load_config("resnet18_td_joint_t2_m1", profile="smoke")
    assert same.run_name() == load_config(None, profile="smoke", model={"arch": "resnet18", "attention": "td"}
                                          ).run_name()
    extended = load_config("resnet18_td_joint_t2_m1", profile="smoke", epochs=5)
    assert config_changes(stored, extended) == ({}, {"epochs": (3, 5)})
    other_t = load_config("resnet18_td_joint_t2_m1", profile="smoke", model={"t": 3})
    assert config_changes(stored, other_t)[0] == {"model.t": (2, 3)}
