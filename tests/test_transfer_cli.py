"""``python -m tdam.transfer``: the recipe of a params file without its data or backbone, the global-batch rule, the
three ways to name the backbone, the exit codes; as separate processes (drill tier) a tiny WS-DAN and ASL run
killed by SIGTERM and resumed bit-identically, and a 2-process gloo run whose global batch stays the file's."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tdam.checkpoint import read_checkpoint
from tdam.errors import EXIT_BUSY, EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK
from tdam.paths import repo_root, runs_dir
from tdam.runs import FINAL_OUTPUTS, IMAGENET_KIND, LAST_FILE, SUMMARY_FILE, write_record
from tdam.transfer.backbone import resolve_backbone
from tdam.transfer.cli import main
from tdam.transfer.run import load_transfer_config, per_process_batch

REPO = repo_root()
TD50 = "resnet50_td_joint_t2_m1"


@pytest.fixture
def backbone(td_checkpoint) -> Path:
    """The ImageNet backbone the transfer runs here start from (the shared TD-ResNet-18 checkpoint)."""
    return td_checkpoint


@pytest.fixture
def one_process(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)


def _error(capsys) -> str:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")][-1]


# ------------------------------------------------------------------------------------- dry run, print-config
def test_dry_run_prints_the_paper_recipe_with_global_batch_12_without_data_or_backbone(capsys, one_process):
    rc = main(["--config", "params/transfer/cub200_wsdan_resnet50_td.yaml", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == EXIT_OK, out
    assert "batch:       global 12 = 12 per process x 1 process x 1 accumulation step" in out
    assert "lr:          0.001 (given)" in out and "not rescaled" in out
    assert "assumed: CUB-200-2011's 5,994 training images; /path/to/CUB_200_2011 does not exist" in out
    assert f"backbone:    assumed: the backbone of params/imagenet/{TD50}.yaml" in out
    assert f"train it: python -m tdam.train --config {TD50} --data_dir <ImageNet root>" in out
    assert "model:       resnet50_td_joint_t2_m1" in out and "image size:  448 px" in out
    assert "updates:     499 per epoch, 79840 in total" in out          # 5994 // 12 = 499, x 160 epochs
    assert "<identity: decided by the backbone checkpoint" in out       # no folder name is made up
    assert "train transform:\n  Resize(size=(512, 512)" in out and "  RandomCrop(size=(448, 448)" in out


def test_dry_run_under_two_processes_derives_the_per_process_batch(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["--config", "coco2014_asl_resnet50_td", "--dry-run"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "batch:       global 64 = 32 per process x 2 processes x 1 accumulation step" in out
    assert "per process 32 = 64 / 2 processes / 1 accumulation step" in out
    assert "lr:          0.0001 (given)" in out and "OneCycle over 80 epochs (max lr 0.0001" in out
    assert "updates:     1293 per epoch" in out                             # ceil(82783 / 2) // 32


def test_print_config_shows_the_global_batch_and_the_backbone_as_named(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0"), monkeypatch.setenv("WORLD_SIZE", "4")
    assert main(["--config", "cub200_wsdan_resnet50_se", "--print-config"]) == EXIT_OK
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["batch_size"] == 12 and cfg["backbone_checkpoint"] == "resnet50_se"
    assert cfg["model"] == {"arch": "resnet50", "attention": "se"} and cfg["task"] == "wsdan"


def test_only_rank_0_prints(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["--config", "cub200_wsdan_resnet50_td", "--dry-run"]) == EXIT_OK
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------------------------- global batch
@pytest.mark.parametrize("global_batch, world, accum, per", [(12, 1, 1, 12), (12, 2, 1, 6), (12, 4, 1, 3),
                                                             (64, 8, 2, 4), (64, 1, 4, 16)])
def test_per_process_batch_is_the_global_batch_over_processes_and_accumulation(global_batch, world, accum, per):
    assert per_process_batch(global_batch, world, accum) == per
    assert per * world * accum == global_batch


def test_a_global_batch_that_does_not_divide_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"batch_size 12 .*GLOBAL.* 5 process\(es\).*batch_size 10 or 15, or run "
                                         r"on \[1, 2, 3, 4, 6, 12\] processes"):
        per_process_batch(12, 5)


def test_loaded_config_keeps_the_global_batch_and_the_fixed_lr_for_any_process_count(backbone):
    for world in (1, 2, 3, 4):
        t = load_transfer_config("cub200_wsdan_resnet50_td", backbone_checkpoint=str(backbone), world_size=world)
        assert t.train.batch_size == 12 // world and t.global_batch() == 12 and t.to_dict()["batch_size"] == 12
        assert t.train.resolved_lr(world) == 1e-3
    one, two = (load_transfer_config("cub200_wsdan_resnet50_td", backbone_checkpoint=str(backbone), world_size=w,
                                     batch_size=b) for w, b in ((1, 6), (2, 12)))
    assert one.train.batch_size == two.train.batch_size == 6
    assert one.train.run_dir() != two.train.run_dir()     # same per-process batch, other global batch: another run


# ------------------------------------------------------------------------------------------- the backbone
def _imagenet_run(name: str, backbone: Path, data_dir: str, finished: bool = True) -> Path:
    """A run folder as `python -m tdam.train --config <name> --data_dir <data_dir>` leaves it (record, last.pth,
    the final outputs), its checkpoint a copy of ``backbone``."""
    from tdam.train.config import load_config, semantic_config

    cfg = load_config(name, profile="paper", data_dir=data_dir)
    folder = runs_dir() / IMAGENET_KIND / cfg.run_name()
    folder.mkdir(parents=True)
    write_record(folder, identity=cfg.identity(), kind=IMAGENET_KIND, request=semantic_config(cfg))
    shutil.copy(backbone, folder / LAST_FILE)
    if finished:
        (folder / SUMMARY_FILE).write_text(json.dumps({"final": {"epoch": cfg.epochs},
                                                       "config": {"epochs": cfg.epochs}, "best": None}))
        for name in FINAL_OUTPUTS:
            (folder / name).touch(exist_ok=True)
    return folder


def test_backbone_named_by_its_params_file_is_the_finished_run_whatever_imagenet_copy(backbone):
    folder = _imagenet_run("resnet50_se", backbone, "/data/imagenet")
    try:
        b = resolve_backbone("resnet50_se")
        assert b.checkpoint == folder / LAST_FILE and folder.name in b.note
        assert resolve_backbone(folder.name).checkpoint == folder / LAST_FILE      # by its run folder name
        second = _imagenet_run("resnet50_se", backbone, "/other/imagenet")
        with pytest.raises(ValueError, match=r"2 finished runs of params/imagenet/resnet50_se.yaml.*name one"):
            resolve_backbone("resnet50_se")
        shutil.rmtree(second)
    finally:
        shutil.rmtree(folder)


def test_unfinished_or_missing_backbone_run_names_the_command_to_run(backbone, capsys, one_process):
    with pytest.raises(ValueError, match=r"no run of params/imagenet/resnet50_eca.yaml .*train it: python -m "
                                         r"tdam.train --config resnet50_eca --data_dir <ImageNet root>"):
        resolve_backbone("resnet50_eca")
    folder = _imagenet_run("resnet50_eca", backbone, "/data/imagenet", finished=False)
    try:
        with pytest.raises(ValueError, match=r"not finished; finish it: .* --resume true"):
            resolve_backbone("resnet50_eca")
        with pytest.raises(ValueError, match=r"not finished; finish it with python -m tdam.train"):
            resolve_backbone(folder.name)
        assert resolve_backbone("resnet50_eca", required=False).checkpoint is None
    finally:
        shutil.rmtree(folder)
    assert main(["--config", "cub200_wsdan_resnet50_td"]) == 2   # training needs it: exit 2, no run folder made
    assert f"train it: python -m tdam.train --config {TD50}" in _error(capsys)


def test_backbone_by_path_and_a_wrong_name_lists_the_forms(backbone):
    assert resolve_backbone(str(backbone)).checkpoint == backbone
    with pytest.raises(FileNotFoundError, match=r"not a checkpoint file .*a params/imagenet/ name \(.*resnet50_se"):
        resolve_backbone("resnet50_nope")


def test_every_params_file_names_its_backbone_by_a_params_file():
    for path in sorted((REPO / "params" / "transfer").glob("[!_]*.yaml")):
        spec = yaml.safe_load(path.read_text())["backbone_checkpoint"]
        assert (REPO / "params" / "imagenet" / f"{spec}.yaml").is_file(), path
        assert path.stem.endswith(spec.split("_")[1]), (path, spec)    # ..._resnet50_se.yaml -> resnet50_se


# ------------------------------------------------------------------------------------------------ exit codes
@pytest.mark.parametrize("args, message", [
    (["--resume", "true"], "--resume is not an option"),
    (["--bogus", "1"], "unknown config key(s) ['bogus']"),
    (["--data_dir"], "--data_dir needs a value"),
    (["--num_attentions", "0"], "num_attentions"),
])
def test_bad_arguments_are_exit_2_with_one_error_line(args, message, capsys, one_process):
    assert main(["--config", "cub200_wsdan_resnet50_td", *args]) == EXIT_CONFIG
    assert message in _error(capsys)


def test_a_run_folder_held_by_another_run_is_exit_6_at_once(backbone, tmp_path, capsys, one_process):
    from tdam.runs import RunLock

    out = tmp_path / "held"
    with RunLock(out):                                   # another run works in the folder: refused, not waited for
        assert main(_tiny("wsdan", backbone, out)) == EXIT_BUSY
    assert f"{out} is in use" in _error(capsys) and not (out / "last.pth").exists()


def test_help_lists_the_transfer_keys(capsys):
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m tdam.transfer") and "--backbone_checkpoint" in out
    assert "--dry-run" in out and "GLOBAL batch" in out
    assert main([]) == EXIT_CONFIG and "--config is required" in _error(capsys)


# ------------------------------------------------------------------------ drills: separate processes, torchrun
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}


def _tiny(task: str, backbone: Path, out: Path, batch: int = 8) -> list[str]:
    """A tiny run of the paper's recipe on the embedded data (64 px: the attention maps are 2 x 2)."""
    common = ["--data_size", "tiny", "--backbone_checkpoint", str(backbone), "--img_size", "64", "--batch_size",
              str(batch), "--epochs", "3", "--steps_per_epoch", "3", "--val_batches", "1", "--workers", "0",
              "--device", "cpu", "--log_interval", "1", "--output_dir", str(out)]
    if task == "wsdan":
        return ["--config", "_recipe_wsdan", "--dataset", "cub200", "--num_attentions", "3", *common]
    return ["--config", "_recipe_asl", "--onecycle_epochs", "4", "--model_ema_decay", "0.5", *common]


def _command(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tdam.transfer", *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=ENV)


@pytest.mark.drill
@pytest.mark.parametrize("task", ["wsdan", "asl"])
def test_a_killed_transfer_run_resumes_bit_identically_through_the_command(task, backbone, tmp_path):
    ref = _command(_tiny(task, backbone, tmp_path / "ref"))
    assert ref.returncode == EXIT_OK, ref.stderr[-3000:]
    run = tmp_path / "killed"
    log = run / "train.log"
    proc = subprocess.Popen([sys.executable, "-m", "tdam.transfer", *_tiny(task, backbone, run)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 300
    while not (log.is_file() and "epoch 2/3 update 1/" in log.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out waiting for the run"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "rerun the same command to resume" in err and "Traceback" not in err
    mid = read_checkpoint(run / "last.pth")
    steps = read_checkpoint(tmp_path / "ref" / "last.pth")["step"]      # 9 (WS-DAN), 6 (ASL: 2 updates per epoch)
    assert steps // 3 <= mid["step"] < steps                            # stopped in epoch 2 or 3
    again = _command(_tiny(task, backbone, run))                     # the same command continues it
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    assert "resumed at epoch" in log.read_text()
    a, b = read_checkpoint(tmp_path / "ref" / "last.pth"), read_checkpoint(run / "last.pth")
    assert a["step"] == b["step"] == steps and a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k            # bit-identical weights
    keys = [k for k in a["metrics"]["history"][-1] if k.startswith(("val_", "ema_val_", "train_loss"))]
    assert [[h[k] for k in keys] for h in a["metrics"]["history"]] == [[h[k] for k in keys]
                                                                       for h in b["metrics"]["history"]]
    done = _command(_tiny(task, backbone, run))                      # finished: reported, not trained
    assert done.returncode == EXIT_OK and "already holds this run, finished: nothing trained" in done.stdout
    metric = "top-1" if task == "wsdan" else "mAP"
    assert again.stdout.splitlines()[-1] == done.stdout.splitlines()[-1]
    assert done.stdout.splitlines()[-1].startswith(f"done: best val {metric} ")


@pytest.mark.drill
def test_two_gloo_processes_keep_the_global_batch_of_the_file(backbone, tmp_path):
    run = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "tdam.transfer", *_tiny("wsdan", backbone, run, batch=12)],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env=ENV)
    assert r.returncode == EXIT_OK, r.stderr[-3000:]
    out = r.stdout
    assert out.count("batch:       global 12 = 6 per process x 2 processes") == 1, out   # rank 0 alone prints
    assert out.count("global batch 12 |") == 1 and out.count("done: best val top-1") == 1, out
    ck = read_checkpoint(run / "last.pth")
    assert ck["config"]["batch_size"] == 6 and ck["world_size"] == 2 and ck["step"] == 9
    assert re.search(r"lr:\s+0\.001 \(given\)", out)
