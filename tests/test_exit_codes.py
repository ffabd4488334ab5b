"""The process contract of tdam's commands (tdam.errors): one exit code per kind of failure, one ``error:`` line that
names the file and record, no traceback on the terminal for any documented failure, the traceback of a bug written
to a file the message names (exit 70), and the README's table of every code.

The training cases run the CLI in this process on the tiny embedded data converted to shards and parquet, each with
one defect (the failures a job script met): a truncated tar shard, a sample without ``.cls``, a label 999 in a
12-class set, an empty or cut-short ``_info.json``, a missing shard, a string label column, a garbage parquet file,
one training shard for two loader workers, a bare ``--data_dir``, a file where the run's ``tb/`` folder goes.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

pytest.importorskip("webdataset")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import tdam.data.convert  # noqa: E402
from tdam import errors  # noqa: E402
from tdam.data import (BadImageError, BadRecordError, DatasetLayoutError, build_dataset, make_shapes_dataset,  # noqa
                       shapes_root)
from tdam.data.convert import main as convert_main  # noqa: E402
from tdam.errors import (EXIT_BUSY, EXIT_CONFIG, EXIT_DATA, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_IO,  # noqa: E402
                         EXIT_NONFINITE, ConfigError, MissingDependencyError, NonFiniteLossError, RunLockedError,
                         RunWriteError, exit_code, one_line, run_command)
from tdam.train.cli import main as train_main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", "resnet18_td_joint_t2_m1", "--profile", "smoke", "--data_size", "tiny", "--epochs", "2",
        "--steps_per_epoch", "3", "--batch_size", "8", "--img_size", "32"]


def _error_line(err: str) -> str:
    """The one ``error:`` line of ``err``; nothing that looks like a traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and 'File "' not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------------------ the mapping
@pytest.mark.parametrize("exc,code", [
    (NonFiniteLossError("loss nan"), EXIT_NONFINITE),
    (ConfigError("bad"), EXIT_CONFIG), (ValueError("lr=-1"), EXIT_CONFIG), (FileNotFoundError("x"), EXIT_CONFIG),
    (MissingDependencyError("pip install 'tdam[shards]'"), EXIT_CONFIG),
    (DatasetLayoutError("layout"), EXIT_DATA), (BadImageError("/a.png"), EXIT_DATA), (BadRecordError("f row 3"),
                                                                                       EXIT_DATA),
    (RunWriteError("/r/x", OSError(errno.ENOSPC, "No space left on device")), EXIT_IO),
    (OSError(errno.EROFS, "Read-only file system", "/r"), EXIT_IO),
    (FileExistsError(errno.EEXIST, "File exists", "/r/tb"), EXIT_IO),
    (KeyboardInterrupt(), EXIT_INTERRUPTED), (RunLockedError("held by PID 1"), EXIT_BUSY),
])
def test_each_named_failure_has_its_code(exc, code):
    assert exit_code(exc) == code


@pytest.mark.parametrize("exc", [KeyError("cls"), RuntimeError("index 999 is out of bounds"), TypeError("bool"),
                                 IndexError("x"), ImportError("no module")])
def test_anything_else_is_a_bug_with_no_code_of_its_own(exc):
    with pytest.raises(TypeError, match="no exit code"):
        exit_code(exc)


def test_exit_one_is_only_the_non_finite_loss():
    others = [c for c in errors.EXIT_CODES if c != EXIT_NONFINITE]
    assert 1 not in others and EXIT_INTERNAL == 70
    assert len(set(errors.EXIT_CODES)) == len(errors.EXIT_CODES) == 8


def test_internal_error_is_one_line_and_the_traceback_goes_to_a_named_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(errors.tempfile, "gettempdir", lambda: str(tmp_path))

    def body(argv):
        return {}["missing key"]

    assert run_command(body, [], prog="python -m tdam.train") == EXIT_INTERNAL
    line = _error_line(capsys.readouterr().err)
    path = Path(re.search(r"the traceback is in (\S+):", line)[1])
    assert "internal error (a bug in tdam): KeyError" in line and "please report it" in line
    assert path.parent == tmp_path and path.name.startswith("tdam-tdam-train-")
    text = path.read_text()
    assert "Traceback (most recent call last)" in text and "in body" in text and "KeyError: 'missing key'" in text

    log = tmp_path / "run" / "train.log"        # the run's log when its folder exists: appended there
    log.parent.mkdir()
    log.write_text("2026-01-01 epoch 1/2\n")
    assert run_command(body, [], prog="p", log_path_fn=lambda: log) == EXIT_INTERNAL
    assert f"the traceback is in {log}:" in capsys.readouterr().err
    assert log.read_text().startswith("2026-01-01 epoch 1/2\n") and "KeyError" in log.read_text()


def test_documented_failure_prints_its_message_and_usage_errors_pass_through(capsys):
    def body(argv):
        raise BadRecordError("/d/train-0.tar:k1.cls: label 999 is outside the 12 classes (0..11)")

    assert run_command(body, [], prog="p") == EXIT_DATA
    assert _error_line(capsys.readouterr().err) == ("error: /d/train-0.tar:k1.cls: label 999 is outside the 12 "
                                                    "classes (0..11)")
    with pytest.raises(SystemExit):
        run_command(lambda argv: sys.exit(2), [], prog="p")


class _Raises(Dataset):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i):
        raise self.exc


@pytest.mark.parametrize("exc,expected", [
    (BadRecordError("/d/train-0.tar:k1: no .cls label"), "/d/train-0.tar:k1: no .cls label"),
    (ValueError("/d: 1 training shard(s)\ncannot feed 2"), "/d: 1 training shard(s)\ncannot feed 2"),
    (KeyError("cls"), "cls"),
])
def test_error_raised_in_a_loader_worker_is_unwrapped_to_its_own_message(exc, expected):
    with pytest.raises(type(exc)) as caught:
        next(iter(DataLoader(_Raises(exc), batch_size=2, num_workers=1)))
    assert "DataLoader worker process 0" in str(caught.value)          # what torch re-raises
    assert one_line(caught.value) == expected


# ---------------------------------------------------------------------------------------- training: bad data
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("exits") / "shapes", size="tiny", formats=("wds", "parquet"))


def _copy(converted, kind: str, dst: Path) -> Path:
    shutil.copytree(shapes_root(converted, kind), dst)
    return dst


def _train_shards(root: Path) -> list[Path]:
    return [root / f for f in json.loads((root / "_info.json").read_text())["splits"]["train"]["filenames"]]


def _rewrite_members(root: Path, change) -> None:
    """Rewrite every training shard, each member's bytes through ``change(name, data)`` (None drops the member)."""
    for shard in _train_shards(root):
        with tarfile.open(shard) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(shard, "w") as tar:
            for m, data in members:
                if (data := change(m.name, data)) is not None:
                    m.size = len(data)
                    tar.addfile(m, io.BytesIO(data))


def _truncated(root):
    for shard in _train_shards(root):
        data = shard.read_bytes()
        shard.write_bytes(data[:len(data) // 2 + 7])
    return rf"{root}/imagenet1k-train-\d+\.tar: damaged tar shard: unexpected end of data"


def _no_cls(root):
    _rewrite_members(root, lambda name, data: None if name.endswith(".cls") else data)
    return rf"{root}/imagenet1k-train-\d+\.tar:n\d+_\d+: sample without a \.cls label \(it holds \['jpg', 'json'\]\)"


def _label_999(root):
    _rewrite_members(root, lambda name, data: b"999" if name.endswith(".cls") else data)
    return (rf"{root}/imagenet1k-train-\d+\.tar:n\d+_\d+\.cls: label 999 is outside the 12 classes \(0\.\.11\) of "
            rf"{root}/_info\.json")


def _edit_info(root, edit):
    info = json.loads((root / "_info.json").read_text())
    edit(info["splits"]["train"])
    (root / "_info.json").write_text(json.dumps(info))


def _no_train_shards(root):
    _edit_info(root, lambda s: s.update(filenames=[], shard_lengths=[], num_samples=0))
    return rf"split 'train' lists no shards \(\"filenames\"\) in: {root}/_info\.json"


def _cut_info(root):
    text = (root / "_info.json").read_text()
    (root / "_info.json").write_text(text[:len(text) // 2])
    return rf"cannot parse the shard table \(line \d+ column \d+: .*\): {root}/_info\.json"


def _missing_shard(root):
    _train_shards(root)[0].unlink()
    return rf"shard listed in _info\.json for split 'train' is missing: {root}/imagenet1k-train-0000\.tar"


def _parquet_file(root) -> tuple[Path, "pa.Table"]:
    f = sorted((root / "data").glob("train-*.parquet"))[0]
    return f, pq.read_table(f)


def _parquet_999(root):
    f, t = _parquet_file(root)
    labels = t.column("label").to_pylist()
    labels[3] = 999
    pq.write_table(t.set_column(t.column_names.index("label"), "label", pa.array(labels, pa.int64())), f)
    return rf"{f} row 3: label 999 is outside the 12 classes \(0\.\.11\)"


def _parquet_string_label(root):
    f, t = _parquet_file(root)
    text = pa.array([f"n{x:08d}" for x in t.column("label").to_pylist()])
    pq.write_table(t.set_column(t.column_names.index("label"), "label", text), f)
    return rf"{f}: column 'label' holds string values \(row 0: 'n\d+'\), not integer class indices"


def _parquet_garbage(root):
    f, _ = _parquet_file(root)
    f.write_bytes(b"not parquet" * 20)
    return rf"{f}: not a readable parquet file \(.*\)"


@pytest.mark.parametrize("kind,defect,workers", [
    ("imagenet_wds", _truncated, 0), ("imagenet_wds", _truncated, 2), ("imagenet_wds", _no_cls, 0),
    ("imagenet_wds", _no_cls, 2), ("imagenet_wds", _label_999, 0), ("imagenet_wds", _no_train_shards, 0),
    ("imagenet_wds", _cut_info, 0), ("imagenet_wds", _missing_shard, 0),
    ("imagenet_parquet", _parquet_999, 0), ("imagenet_parquet", _parquet_string_label, 0),
    ("imagenet_parquet", _parquet_garbage, 0),
], ids=lambda v: getattr(v, "__name__", str(v)).strip("_"))
def test_bad_shard_or_parquet_is_exit_3_naming_file_and_record(converted, tmp_path, capsys, kind, defect, workers):
    root = _copy(converted, kind, tmp_path / kind)
    expected = defect(root)
    run = tmp_path / "run"
    rc = train_main([*TINY, "--dataset", kind, "--data_dir", str(root), "--workers", str(workers),
                     "--output_dir", str(run)])
    line = _error_line(capsys.readouterr().err)
    assert rc == EXIT_DATA and re.match(rf"error: (imagenet_wds: )?{expected}", line), line
    assert not run.exists()                                          # a failed start leaves no run folder


def test_parquet_labels_are_checked_at_open_before_any_image_is_read(converted, tmp_path):
    root = _copy(converted, "imagenet_parquet", tmp_path / "p")
    expected = _parquet_999(root)
    with pytest.raises(BadRecordError, match=expected):
        build_dataset("imagenet_parquet", root, "train")


@pytest.mark.parametrize("label,bad", [(11, False), (12, True), (-1, True)])
def test_label_range_is_zero_to_class_count_minus_one(converted, tmp_path, label, bad):
    wds = _copy(converted, "imagenet_wds", tmp_path / "w")
    _rewrite_members(wds, lambda name, data: str(label).encode() if name.endswith(".cls") else data)
    parquet = _copy(converted, "imagenet_parquet", tmp_path / "p")
    f, t = _parquet_file(parquet)
    pq.write_table(t.set_column(t.column_names.index("label"), "label", pa.array([label] * t.num_rows, pa.int64())),
                   f)
    if not bad:
        assert {y for _, y in build_dataset("imagenet_wds", wds, "train", training=False)} == {label}
        assert build_dataset("imagenet_parquet", parquet, "train").samples[0][1] == label
        return
    with pytest.raises(BadRecordError, match=rf"label {label} is outside the 12 classes"):
        next(iter(build_dataset("imagenet_wds", wds, "train", training=False)))
    with pytest.raises(BadRecordError, match=rf"{f} row 0: label {label} is outside the 12 classes"):
        build_dataset("imagenet_parquet", parquet, "train")


def test_one_shard_for_two_workers_is_refused_before_training(converted, tmp_path, capsys):
    root = _copy(converted, "imagenet_wds", tmp_path / "w")
    _edit_info(root, lambda s: s.update(filenames=s["filenames"][:1], shard_lengths=s["shard_lengths"][:1],
                                        num_samples=s["shard_lengths"][0]))
    run = tmp_path / "run"
    rc = train_main([*TINY, "--dataset", "imagenet_wds", "--data_dir", str(root), "--workers", "2",
                     "--output_dir", str(run)])
    line = _error_line(capsys.readouterr().err)
    assert rc == EXIT_CONFIG and not run.exists()
    assert line == (f"error: {root}: 1 training shard(s) cannot feed 1 rank(s) x 2 loader worker(s): each needs a "
                    f"shard of its own; write more shards (python -m tdam.data.convert --shard-size) or use fewer "
                    f"workers (--workers)")


# --------------------------------------------------------------------------------------- training: arguments
def test_bare_data_dir_is_a_configuration_error_naming_the_flag(capsys):
    rc = train_main([*TINY, "--data_dir", "--workers", "0"])
    line = _error_line(capsys.readouterr().err)
    assert rc == EXIT_CONFIG and line.startswith("error: --data_dir needs a value") and "unset shell variable" in line
    rc = train_main([*TINY, "--data_dir"])                           # last on the line too
    assert rc == EXIT_CONFIG and "--data_dir needs a value" in _error_line(capsys.readouterr().err)


def test_a_file_where_the_run_folder_needs_a_folder_is_exit_4(tmp_path, capsys):
    out = tmp_path / "D"
    out.mkdir()
    (out / "tb").write_text("a file, not TensorBoard's folder")
    rc = train_main([*TINY, "--output_dir", str(out)])
    line = _error_line(capsys.readouterr().err)
    assert rc == EXIT_IO
    assert line == f"error: cannot write {out / 'tb'}: File exists (a file stands where a folder is needed)"


# ------------------------------------------------------------------------------------------------ converter
@pytest.fixture(scope="module")
def folder(converted):
    return shapes_root(converted, "imagenet")


def _convert(capsys, *args: str) -> tuple[int, str, str]:
    rc = convert_main([*map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_converter_refusal_is_one_line_naming_the_missing_formats(folder, tmp_path, capsys):
    rc, _, _ = _convert(capsys, folder, tmp_path, "--formats", "wds", "--splits", "val")
    assert rc == 0
    rc, _, err = _convert(capsys, folder, tmp_path, "--splits", "val")        # both formats asked, wds exists
    line = _error_line(err)
    assert rc == EXIT_CONFIG
    assert line.startswith(f"error: {tmp_path / 'imagenet_wds'} exists (written by an earlier conversion): write "
                           f"only the missing with --formats parquet")
    rc, _, err = _convert(capsys, folder, tmp_path, "--formats", "wds", "--splits", "val")
    assert rc == EXIT_CONFIG and "nothing to convert" in _error_line(err)


def test_converter_source_and_argument_errors(tmp_path, capsys):
    rc, _, err = _convert(capsys, tmp_path / "nowhere", tmp_path / "out")
    assert rc == EXIT_DATA and str(tmp_path / "nowhere") in _error_line(err)
    with pytest.raises(SystemExit) as e:                                      # argparse: usage + exit 2
        convert_main([str(tmp_path), str(tmp_path / "out"), "--formats", "zip"])
    assert e.value.code == EXIT_CONFIG and "Traceback" not in capsys.readouterr().err


def test_disk_full_is_exit_4_the_partial_output_removed_and_the_rerun_hint_right(folder, tmp_path, capsys,
                                                                                 monkeypatch):
    real = tdam.data.convert._write_parquet

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tdam.data.convert, "_write_parquet", full)
    rc, _, err = _convert(capsys, folder, tmp_path, "--splits", "val")
    assert rc == EXIT_IO
    assert _error_line(err) == f"error: cannot write {tmp_path / 'imagenet_parquet'}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagenet_wds"]     # wds done, no parquet temp left
    monkeypatch.setattr(tdam.data.convert, "_write_parquet", real)
    rc, _, err = _convert(capsys, folder, tmp_path, "--splits", "val")        # the same command again
    assert rc == EXIT_CONFIG and "write only the missing with --formats parquet" in _error_line(err)
    rc, out, _ = _convert(capsys, folder, tmp_path, "--splits", "val", "--formats", "parquet")
    assert rc == 0 and (tmp_path / "imagenet_parquet" / "data").is_dir()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_converter_removes_temporaries_of_dead_conversions(folder, tmp_path, capsys, caplog):
    stale = tmp_path / f".imagenet_wds.tmp-{_dead_pid()}-0123abcd"
    live = tmp_path / f".imagenet_wds.tmp-{os.getppid()}-4567cdef"           # a live process's: kept
    for d in (stale, live):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "imagenet1k-train-0000.tar").write_bytes(b"x" * 100)
    rc, out, err = _convert(capsys, folder, tmp_path, "--formats", "wds", "--splits", "val")
    assert rc == 0 and not stale.exists() and live.is_dir() and (tmp_path / "imagenet_wds" / "_info.json").is_file()
    assert f"removed 1 temporary folder(s) left by a killed conversion: {stale}" in caplog.text   # stderr's too


@pytest.mark.drill
def test_kill_9_of_the_converter_then_a_rerun_leaves_only_the_output(folder, tmp_path):
    slow = ("import sys, time, tdam.data.convert as c\n"
            "write = c._write_wds\n"
            "def slow(*a, **k):\n"
            "    print('writing', flush=True); time.sleep(120)\n"
            "c._write_wds = slow\n"
            "sys.exit(c.main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-c", slow, folder, str(tmp_path), "--formats", "wds", "--splits", "val"],
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "writing"
    assert [d.name for d in tmp_path.iterdir()] == [f".imagenet_wds.tmp-{p.pid}-" + d.name.rsplit("-", 1)[1]
                                                    for d in tmp_path.iterdir()]
    p.kill()
    p.wait()
    r = subprocess.run([sys.executable, "-m", "tdam.data.convert", folder, str(tmp_path), "--formats", "wds",
                        "--splits", "val"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert sorted(d.name for d in tmp_path.iterdir()) == ["imagenet_wds"]


# ------------------------------------------------------------------------------------ entry points, torchrun
def _python(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.mark.drill
def test_entry_points_print_no_traceback_for_documented_failures(tmp_path):
    r = _python("-m", "tdam.train", *TINY, "--data_dir")
    assert r.returncode == EXIT_CONFIG and "--data_dir needs a value" in _error_line(r.stderr)
    r = _python("-m", "tdam.data.convert", str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert r.returncode == EXIT_DATA and str(tmp_path / "nowhere") in _error_line(r.stderr)
    r = _python("-m", "tdam.train", *TINY, "--lr", "-1")
    assert r.returncode == EXIT_CONFIG and "lr" in _error_line(r.stderr)


@pytest.mark.drill
def test_torchrun_two_processes_print_the_recipe_once():
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "tdam.train", *TINY, "--dry-run"], capture_output=True, text=True, timeout=600,
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert [ln.split(":")[0] for ln in lines if ln.startswith("model:")] == ["model"], r.stdout
    assert sum(ln.startswith("run folder:") for ln in lines) == 1 and re.search(r"device: +cpu x 2", r.stdout), \
        r.stdout


@pytest.mark.drill
def test_torchrun_two_gloo_processes_train_and_rank_0_alone_reports(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "tdam.train", *TINY, "--workers", "0", "--val_batches", "1", "--output_dir", str(run)],
                       capture_output=True, text=True, timeout=600, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert out.count("device:      cpu x 2") == 1 and out.count("epoch 1/2 train_loss") == 1, out
    assert out.count("epoch 2/2 train_loss") == 1 and out.count("done: best val top-1") == 1, out
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------------ the README
def test_readme_exit_code_table_covers_every_code_and_command():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("**Exit codes**"):]
    section = section[:section.index("\n\n", section.index("|"))]
    rows = {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (.*) \|$", section, flags=re.M)}
    assert sorted(rows) == sorted(errors.EXIT_CODES)
    for command in ("python -m tdam.train", "python -m tdam.data.convert", "python -m tdam.cache",
                    "python -m tdam.transfer"):
        assert f"`{command}`" in section


def test_an_empty_data_dir_is_refused_not_read_as_the_embedded_data(capsys):
    """``--data_dir "$IMAGENET"`` with the variable unset but quoted: an empty path is a configuration error (exit 2),
    never a silent run on the embedded data."""
    from tdam.train.cli import main

    assert main(["--config", "resnet18_td_joint_t2_m1", "--profile", "smoke", "--data_dir", "", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data_dir was given an empty value") and "Traceback" not in err
    from tdam.train import load_config

    with pytest.raises(ValueError, match="data_dir is empty"):   # from a params file or Python: the same refusal
        load_config(None, profile="smoke", data_dir=" ")
