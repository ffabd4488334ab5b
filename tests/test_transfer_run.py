"""WS-DAN and ASL through the shared trainer (tdam.train.train): params files, resume with feature centers, metrics."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tdam.paths import params_dir
from tdam.transfer.run import TransferConfig, build_transfer_datasets, load_transfer_config, run_transfer
from tdam.transfer.tasks import WSDANTask
from helpers import TinyBackbone


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from tdam.data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", size="tiny")


def test_every_params_file_resolves_to_the_paper_recipe(td_checkpoint, tmp_path):
    files = sorted(p.stem for p in (params_dir() / "transfer").glob("[!_]*.yaml"))
    assert len(files) == 18
    for name in files:
        c = load_transfer_config(name, backbone_checkpoint=str(td_checkpoint), output_dir=str(tmp_path))
        t = c.train
        assert t.img_size == 448 and c.data_dir.startswith("/path/to/")
        if c.task == "wsdan":
            assert (t.batch_size, t.epochs, t.opt, t.lr, t.momentum, t.weight_decay) == (
                12, 160, "momentum", 1e-3, 0.9, 1e-5)
            assert (c.lr_decay_epochs, c.lr_decay_rate, c.num_attentions, c.beta) == (2, 0.9, 32, 0.05)
            assert c.dataset in ("cub200", "stanford_dogs") and t.smoothing == 0
        else:
            assert (t.batch_size, t.epochs, t.opt, t.lr, t.weight_decay, t.model_ema, t.model_ema_decay) == (
                64, 41, "adam", 1e-4, 1e-4, True, 0.9997)
            assert (c.onecycle_epochs, c.pct_start, c.gamma_neg, c.gamma_pos, c.clip) == (80, 0.2, 4, 0, 0.05)
            assert c.disable_torch_grad_focal_loss and c.dataset == "coco2014"
        # the backbone keys come from the checkpoint
        assert (t.model["arch"], t.model["attention"]) == ("resnet18", "td") and "num_classes" not in t.model


def test_config_errors_name_the_choices(tmp_path):
    with pytest.raises(ValueError, match="valid choices are \\['wsdan', 'asl'\\]"):
        TransferConfig(task="detect", random_backbone=True)
    with pytest.raises(ValueError, match="valid choices are \\['coco2014'\\]"):
        TransferConfig(task="asl", dataset="cub200", random_backbone=True)
    with pytest.raises(ValueError, match="backbone_checkpoint is required"):
        TransferConfig()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TransferConfig(backbone_checkpoint=str(tmp_path / "missing.pth"))


def _wsdan_cfg(shapes: Path, out: Path, **kw) -> TransferConfig:
    return load_transfer_config(
        "_recipe_wsdan", dataset="cub200", data_dir=str(shapes / "cub200" / "CUB_200_2011"), random_backbone=True,
        output_dir=str(out), img_size=32, batch_size=8, epochs=2, steps_per_epoch=2, workers=0, lr=1e-2,
        num_attentions=3, progress=False, device="cpu", **kw)


def _final_state(run_dir: Path) -> dict:
    from tdam.checkpoint import read_checkpoint

    return read_checkpoint(run_dir / "last.pth")["model"]


def test_wsdan_trains_through_the_trainer_and_resumes_exactly(shapes, tmp_path):
    from tdam.train import train

    tc = _wsdan_cfg(shapes, tmp_path / "full")
    datasets = build_transfer_datasets(tc)

    def task():
        return WSDANTask(lambda: TinyBackbone(), num_attentions=3)

    full = train(tc.train, task=task(), datasets=datasets)
    assert [r["epoch"] for r in full.history] == [1, 2]
    assert {"val_top1_raw", "val_top1_refined", "val_top1"} <= set(full.history[-1])
    ref = _final_state(full.run_dir)
    assert ref["feature_center"].abs().sum() > 0  # the centers are in the checkpoint

    cut_cfg = tc.train.replace(output_dir=str(tmp_path / "cut"))
    cut = train(cut_cfg, task=task(), datasets=datasets, stop_at_step=3)  # stops mid-epoch 2
    assert cut.interrupted
    resumed = train(cut_cfg.replace(resume=True), task=task(), datasets=datasets)
    assert not resumed.interrupted
    got = _final_state(resumed.run_dir)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], msg=k)
    assert resumed.history[-1]["val_top1_refined"] == full.history[-1]["val_top1_refined"]


def test_wsdan_run_transfer_with_a_tdam_backbone(shapes, tmp_path):
    tc = _wsdan_cfg(shapes, tmp_path / "r18", model={"arch": "resnet18", "attention": "td"})
    tc.train = tc.train.replace(epochs=1, steps_per_epoch=1, val_batches=1)
    result = run_transfer(tc)
    row = result.history[-1]
    assert 0 <= row["val_top1_refined"] <= 100 and row["val_top5_raw"] >= row["val_top1_raw"]
    from tdam.transfer.models import load_wsdan

    model = load_wsdan(result.checkpoint)
    assert model.num_attentions == 3 and model.backbone.td_steps == 2
    from tdam.transfer.report import TransferResult, results_table
    from tdam.transfer.run import build_transfer_datasets

    table = results_table([TransferResult(tc, result.run_dir, result.history, result.best)])
    val = build_transfer_datasets(tc)[1]
    assert table.loc[0, ["run", "epochs", "train_on", "t_eval", "val_images", "num_classes"]].tolist() == [
        result.run_dir.name, 1, "last", 2, min(len(val), tc.train.batch_size), len(val.classes)]  # val_batches=1


def test_asl_trains_through_the_trainer_with_ema_and_is_cached(shapes, tmp_path):
    from tdam.transfer.report import ensure_transfer_run, results_table
    from tdam.transfer.run import build_transfer_datasets

    kw = dict(data_dir=str(shapes / "coco2014"), random_backbone=True, model={"arch": "resnet18"},
              output_dir=str(tmp_path / "asl"), img_size=32, batch_size=8, epochs=1, steps_per_epoch=2, workers=0,
              progress=False, device="cpu", model_ema_decay=0.5)
    tc = load_transfer_config("_recipe_asl", **kw)
    result = ensure_transfer_run(tc)
    row = result.history[-1]
    assert 0 <= row["val_mAP"] <= 100 and 0 <= row["ema_val_mAP"] <= 100
    assert {"val_CF1", "val_OF1", "val_CP", "val_OR"} <= set(row)
    assert row["lr"] < 1e-4  # OneCycle warm-up: far from the peak after 2 of 800 updates
    last = result.run_dir / "last.pth"
    stamp = last.stat().st_mtime_ns
    again = ensure_transfer_run(load_transfer_config("_recipe_asl", **kw))  # finished: reused, not retrained
    assert again.history == result.history and last.stat().st_mtime_ns == stamp
    table = results_table([again])
    assert table.loc[0, "reported_mAP"] == max(row["val_mAP"], row["ema_val_mAP"])
    assert 0 < table.loc[0, "chance"] < 100
    val_images = len(build_transfer_datasets(tc)[1])          # val_batches unset: the whole split every epoch
    assert table.loc[0, ["run", "epochs", "t_eval", "data", "data_tag", "img_size", "val_images"]].tolist() == [
        result.run_dir.name, 1, 1, "coco2014", "coco2014", 32, val_images]
    assert "profile" in table and pd.isna(table.loc[0, "profile"])          # a fact no row has is still a column
    with pytest.raises(ValueError, match="different config.*gamma_neg"):
        ensure_transfer_run(load_transfer_config("_recipe_asl", gamma_neg=2, **kw))


def test_notebook_params_validate_and_build_the_embedded_runs():
    from tdam.transfer.notebook import TransferNotebookParams

    p = TransferNotebookParams(attentions=["td", "plain"], wsdan_datasets=["cub200", "stanford_dogs"])
    configs = p.embedded_configs({"td": None, None: None})
    assert [(c.task, c.dataset, c.train.model["attention"]) for c in configs] == [
        ("wsdan", "cub200", "td"), ("wsdan", "cub200", None), ("wsdan", "stanford_dogs", "td"),
        ("wsdan", "stanford_dogs", None), ("asl", "coco2014", "td"), ("asl", "coco2014", None)]
    wsdan, asl = configs[0], configs[-1]
    assert (wsdan.num_attentions, wsdan.train.lr, wsdan.train.img_size, wsdan.train.workers) == (8, 1e-3, 64, 0)
    assert (asl.onecycle_epochs, asl.train.lr, asl.train.model_ema_decay) == (2, 1e-3, 0.9)
    with pytest.raises(ValueError, match="valid choices are \\['cub200', 'stanford_dogs'\\]"):
        TransferNotebookParams(wsdan_datasets=["cars"])
    with pytest.raises(ValueError, match="attentions"):
        TransferNotebookParams(attentions=["ge"])
    assert TransferNotebookParams(attentions="plain").attentions == ["plain"]          # one name: a list of one
    assert TransferNotebookParams(attentions="[td, plain]").attentions == ["td", "plain"]   # papermill -p text
    with pytest.raises(ValueError, match="img_size"):
        TransferNotebookParams(img_size=0)
