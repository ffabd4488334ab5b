"""The facts behind every results row (tdam.evaluation.provenance) and the paper-setting decision that reads them:
the t evaluated, the whole validation split, 1000 classes, 224 px, real ImageNet."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tdam.evaluation.classification import EvalResult
from tdam.evaluation.figures import resolution_table
from tdam.evaluation.provenance import EvalFacts, eval_facts, with_provenance
from tdam.paths import repo_root
from tdam.reference import (PROVENANCE_COLUMNS, ablation_table, accuracy_table, full_split_images, paper_setting,
                            table3_beside_paper)

R50_TD = {"arch": "resnet50", "attention": "td", "t": 2, "m": 1, "td_mode": "joint", "num_classes": 1000}
PAPER = dict(num_classes=1000, img_size=224, imagenet=True)
FULL = {"v1": 50_000, "v2": 10_000}


def _facts(**changes) -> EvalFacts:
    base = EvalFacts(run="resnet50_td_joint_t2_m1-paper-0123abcd", epochs=110, train_on="last", profile="paper",
                     t_eval=2, images=dict(FULL), data="imagenet", data_tag="imagenet", img_size=224,
                     num_classes=1000, model_config=R50_TD)
    return base.replace(**changes)


def _result(n: int) -> EvalResult:
    """n images, the first half right (top-1 and top-5), the second half right only in top-5."""
    hit = np.zeros((n, 2), dtype=bool)
    hit[: n // 2, 0] = True
    hit[:, 1] = True
    return EvalResult(topk=(1, 5), targets=np.zeros(n, dtype=np.int64), correct={"last": hit}, step_correct=None,
                      seconds=1.0)


# ------------------------------------------------------------------ the decision


def test_full_split_sizes():
    assert full_split_images("v1") == 50_000 and full_split_images("v2") == 10_000
    assert full_split_images("v1", 200) == 10_000                         # Table 2's 200-class subset
    with pytest.raises(ValueError, match=r"unknown split 'v3'; valid: \['v1', 'v2'\]"):
        full_split_images("v3")


def test_paper_setting_when_every_fact_matches():
    s = paper_setting(R50_TD, **PAPER, t=2, images=FULL)
    assert s.matches and s.reason == "paper setting" and s.row["v1_top1"] == 78.96


def test_t_evaluated_is_compared_with_the_paper_rows_t_not_the_trained_one():
    s = paper_setting(R50_TD, **PAPER, t=1, images=FULL)      # a t=2 checkpoint run at t=1 (`-p t 1`)
    assert s.model_row["method"] == "TDjoint(t=2;m=1)" and s.row is None
    assert s.reason == "evaluated at t=1, the paper row's t is 2"
    assert paper_setting(R50_TD, **PAPER, t=3, images=FULL).reason == "evaluated at t=3, the paper row's t is 2"
    assert paper_setting({"arch": "resnet50"}, **PAPER, t=1, images=FULL).matches   # plain rows run one step
    assert paper_setting(R50_TD, **PAPER, t=None, images=FULL).reason == "steps t at evaluation not recorded"


def test_a_subset_of_the_validation_split_is_not_the_papers_setting():
    s = paper_setting(R50_TD, **PAPER, t=2, images={"v1": 128, "v2": 10_000})   # max_images=128
    assert s.row is None and s.reason == "128 ImageNet-V1 val images evaluated, not the whole split's 50,000"
    s = paper_setting(R50_TD, **PAPER, t=2, images={"v1": 50_000, "v2": 9_999})
    assert s.reason == "9,999 ImageNet-V2 images evaluated, not the whole split's 10,000"
    assert paper_setting(R50_TD, **PAPER, t=2, images={"v1": 50_000}).matches        # V2 not evaluated: V1 only
    assert paper_setting(R50_TD, **PAPER, t=2, images={"v1": 50_001}).row is None    # not ILSVRC-12 val either
    s = paper_setting(R50_TD, **PAPER, t=2, images={"v1": None})
    assert s.reason == "ImageNet-V1 val images evaluated not recorded"
    s = paper_setting(R50_TD, **PAPER, t=2, images={"train": 50_000})
    assert s.reason == "evaluated on the 'train' split, not a validation split"
    with pytest.raises(ValueError, match="images"):
        paper_setting(R50_TD, **PAPER, t=2, images={})


def test_every_failed_fact_is_in_the_one_line_reason():
    s = paper_setting(R50_TD, num_classes=12, img_size=64, imagenet=False, t=1, images={"v1": 24, "v2": 24})
    assert s.reason == ("embedded tdam-shapes data, not ImageNet; 12 classes, not ImageNet's 1000; evaluated at 64 "
                        "px, not the paper's 224 px; evaluated at t=1, the paper row's t is 2; 24 ImageNet-V1 val "
                        "images evaluated, not the whole split's 50,000; 24 ImageNet-V2 images evaluated, not the "
                        "whole split's 10,000")


def test_tables_2_and_3_read_the_same_facts():
    s = paper_setting({"arch": "resnet18"}, num_classes=200, img_size=224, imagenet=True, t=3,
                      images={"v1": 10_000}, table="table2", ablation=("steps_200cls", "TDt(t=3)"))
    assert s.matches and s.row["v1_top1"] == 75.34
    s = paper_setting({"arch": "resnet18"}, num_classes=200, img_size=224, imagenet=True, t=2,
                      images={"v1": 10_000}, table="table2", ablation=("steps_200cls", "TDt(t=3)"))
    assert s.reason == "evaluated at t=2, the paper row's t is 3"
    s = paper_setting({"arch": "resnet18"}, num_classes=200, img_size=224, imagenet=True, t=1,
                      images={"v1": 10_000}, table="table2", ablation=("steps_200cls", "ResNet"))
    assert s.matches
    td3 = {"arch": "resnet50", "attention": "td", "td_mode": "top", "m": 3}
    assert paper_setting(td3, **PAPER, t=2, images={"v1": 50_000}, table="table3").matches
    assert paper_setting(td3, **PAPER, t=1, images={"v1": 128}, table="table3").reason == (
        "evaluated at t=1, the paper row's t is 2; 128 ImageNet-V1 val images evaluated, not the whole split's 50,000")


# ------------------------------------------------------------------ the facts of a checkpoint


@pytest.fixture
def run_checkpoint(tmp_path):
    """A trainer-style checkpoint in a run folder: a TD-ResNet-50 (t=2) config, 3 of 5 epochs, train_on
    most_confident, profile smoke, on a data folder."""
    folder = tmp_path / "resnet50_td_joint_t2_m1-smoke-0123abcd"
    folder.mkdir()
    path = folder / "best.pth"
    config = {"train_on": "most_confident", "profile": "smoke", "epochs": 5, "dataset": "imagenet",
              "data_dir": "/data/ilsvrc12", "data_size": "default", "img_size": 224}
    torch.save({"model_config": R50_TD, "config": config, "epoch": 3}, path)
    return path


def test_eval_facts_read_the_checkpoint_not_the_parameters(run_checkpoint):
    f = eval_facts(run_checkpoint, t_eval=1, images={"v1": 128}, img_size=224, num_classes=1000,
                   data_dir="/data/ilsvrc12")
    assert f.columns() == {"run": "resnet50_td_joint_t2_m1-smoke-0123abcd", "epochs": 3, "train_on": "most_confident",
                           "profile": "smoke", "t_eval": 1, "data": "imagenet", "data_tag": "ilsvrc12",
                           "img_size": 224, "num_classes": 1000, "v1_images": 128}
    assert list(f.columns())[: len(PROVENANCE_COLUMNS)] == list(PROVENANCE_COLUMNS)
    assert f.model_config["t"] == 2                                     # the model as trained names its row
    assert f.paper_setting().reason == ("evaluated at t=1, the paper row's t is 2; 128 ImageNet-V1 val images "
                                        "evaluated, not the whole split's 50,000")
    embedded = eval_facts(run_checkpoint, t_eval=2, images={"v1": 24}, img_size=64, num_classes=12, data_dir=None)
    assert (embedded.data, embedded.data_tag) == ("embedded", "tdam-shapes/imagenet/default")


def test_an_external_checkpoint_is_named_by_file_and_digest(tmp_path):
    path = tmp_path / "authors_td_r50.pth"
    torch.save({"state_dict": {}, "epoch": 109, "arch": "resnet50"}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    f = eval_facts(path, t_eval=2, images={"v1": 50_000}, img_size=224, num_classes=1000, data_dir="/data/in1k",
                   model_config=R50_TD)
    assert f.run == f"authors_td_r50.pth@{digest}"
    assert f.epochs is None and f.train_on is None and f.profile is None    # nothing we can trust is recorded


def test_plain_models_record_no_train_on(run_checkpoint):
    f = eval_facts(run_checkpoint, t_eval=1, images={"v1": 50_000}, img_size=224, num_classes=1000,
                   data_dir="/d/in1k", model_config={"arch": "resnet50", "attention": None})
    assert f.train_on is None and f.paper_setting().matches


# ------------------------------------------------------------------ every table carries the facts


def test_accuracy_table_carries_the_facts_and_decides_from_them():
    results = {"v1": _result(50_000), "v2": _result(10_000)}
    tab = accuracy_table(results, _facts())
    assert (tab.comparison == "paper setting").all() and tab.paper_v1_top1.iloc[0] == 78.96
    assert tab.diff_v1_top1.iloc[0] == pytest.approx(50.0 - 78.96)
    assert tab.columns.tolist()[-len(PROVENANCE_COLUMNS) - 3:] == [*PROVENANCE_COLUMNS, "v1_images", "v2_images",
                                                                    "comparison"]
    assert tab.loc[0, ["run", "epochs", "t_eval", "v1_images", "v2_images"]].tolist() == [
        "resnet50_td_joint_t2_m1-paper-0123abcd", 110, 2, 50_000, 10_000]
    with pytest.raises(ValueError, match="the facts record images"):
        accuracy_table({"v1": _result(128)}, _facts())


@pytest.mark.parametrize("facts, results, reason", [
    (dict(t_eval=1), {"v1": 50_000, "v2": 10_000}, "evaluated at t=1, the paper row's t is 2"),
    (dict(images={"v1": 128, "v2": 128}), {"v1": 128, "v2": 128},
     "128 ImageNet-V1 val images evaluated, not the whole split's 50,000; "
     "128 ImageNet-V2 images evaluated, not the whole split's 10,000"),
])
def test_notebook_02_regression_t1_on_a_t2_checkpoint_or_max_images_is_never_the_papers_setting(
        run_checkpoint, facts, results, reason):
    """Notebook 02's path (eval_facts of the checkpoint, then accuracy_table): `-p t 1` on a t=2 checkpoint, or a
    `max_images` subset, gets no paper number and says why, though the model is the paper row's."""
    f = eval_facts(run_checkpoint, t_eval=facts.get("t_eval", 2), images=facts.get("images", FULL), img_size=224,
                   num_classes=1000, data_dir="/data/ilsvrc12")
    tab = accuracy_table({s: _result(n) for s, n in results.items()}, f)
    assert not [c for c in tab.columns if c.startswith(("paper_", "diff_"))]
    assert (tab.comparison == reason).all() and "paper setting" not in tab.comparison.tolist()
    whole = eval_facts(run_checkpoint, t_eval=2, images=FULL, img_size=224, num_classes=1000, data_dir="/d/in1k")
    assert (accuracy_table({s: _result(n) for s, n in FULL.items()}, whole).comparison == "paper setting").all()


def _table2_row(**changes):
    row = {"set": "mode_and_distance", "row": "TDj(m=1)", "params_M": 27.6, "gflops": 4.6, "v1_top1": 70.0,
           "v1_top5": 90.0, "backbone": "resnet50",
           **_facts(images={"v1": 50_000}).columns()}
    return {**row, **changes}


def test_ablation_table_shows_each_rows_epochs_and_decides_from_its_facts():
    rows = [_table2_row(), _table2_row(row="ResNet", epochs=3, t_eval=1), _table2_row(v1_images=128),
            _table2_row(t_eval=1)]
    tab = ablation_table(rows)
    assert tab.epochs.tolist() == [110, 3, 110, 110]
    assert {*PROVENANCE_COLUMNS, "v1_images"} <= set(tab.columns)
    assert tab.comparison.tolist() == [
        "paper setting", "paper setting", "128 ImageNet-V1 val images evaluated, not the whole split's 50,000",
        "evaluated at t=1, the paper row's t is 2"]
    assert tab.loc[[2, 3], ["paper_v1_top1", "diff_v1_top1"]].isna().all().all()
    assert tab.loc[[2, 3], "paper_params_M"].notna().all()                  # sizes do not depend on the evaluation
    with pytest.raises(ValueError, match=r"missing \['t_eval', 'v1_images'\]"):
        ablation_table([{k: v for k, v in _table2_row().items() if k not in ("t_eval", "v1_images")}])


def test_ablation_row_records_the_facts_of_its_checkpoint(tmp_path, shapes_tiny):
    """A Table 2 row evaluated from a trainer checkpoint: the run folder, its epochs, t and the images come from
    what was evaluated; an untrained row records none of them."""
    from tdam import create_model
    from tdam.checkpoint import save_checkpoint
    from tdam.evaluation.ablations import ablation_row
    from tdam.evaluation.data import run_data_settings
    from tdam.train.config import TrainConfig

    cfg = TrainConfig(model={"arch": "resnet18", "attention": "td", "num_classes": 12}, img_size=64, data_size="tiny",
                      epochs=3, warmup_epochs=0, profile="smoke")
    torch.manual_seed(0)
    model = create_model("resnet18", attention="td", num_classes=12)
    ckpt = tmp_path / "resnet18_td_joint_t2_m1-smoke-c0ffee00" / "last.pth"
    save_checkpoint({"model": model.state_dict(), "model_config": model.model_config, "config": cfg.to_dict(),
                     "epoch": 2}, ckpt)
    entry = {"set": "mode_and_distance", "row": "TDj(m=1)", "params": tmp_path / "row.yaml"}
    data = run_data_settings(cfg.to_dict())
    row = ablation_row(entry, {"arch": "resnet18", "attention": "td"}, ckpt, data, device=torch.device("cpu"),
                       batch_size=12, max_images=12)
    assert {k: row[k] for k in (*PROVENANCE_COLUMNS, "v1_images", "status")} == {
        "run": "resnet18_td_joint_t2_m1-smoke-c0ffee00", "epochs": 2, "train_on": "last", "profile": "smoke",
        "t_eval": 2, "data": "embedded", "data_tag": "tdam-shapes/imagenet/tiny", "img_size": 64, "num_classes": 12,
        "v1_images": 12, "status": "ok"}
    untrained = ablation_row(entry, {"arch": "resnet18", "attention": "td"}, None, data, device=torch.device("cpu"))
    assert untrained["status"] == "not trained" and untrained["epochs"] is None and untrained["v1_images"] is None
    tab = ablation_table([row, untrained])
    assert tab.epochs.tolist()[0] == 2 and "paper setting" not in tab.comparison.tolist()
    assert tab.comparison.iloc[0].endswith("12 ImageNet-V1 val images evaluated, not the whole split's 50,000")


def test_table3_carries_each_models_facts():
    ours = pd.DataFrame({"stage": [4], "block": [2], "metric": ["rho_mean"], "plain": [1.0], "td": [1.2]})
    plain = _facts(model_config={"arch": "resnet50"}, t_eval=1, run="plain-run", images={"v1": 128})
    td = _facts(model_config=R50_TD, run="td-run", images={"v1": 128})
    out = table3_beside_paper(ours, {"plain": plain, "td": td})
    assert out.run.iloc[0] == "plain: plain-run; td: td-run" and out.t_eval.iloc[0] == "plain: 1; td: 2"
    assert out.v1_images.iloc[0] == 128 and out.img_size.iloc[0] == 224         # shared: written once
    assert out.comparison.iloc[0] == ("plain: 128 ImageNet-V1 val images evaluated, not the whole split's 50,000; "
                                      "td: 128 ImageNet-V1 val images evaluated, not the whole split's 50,000")
    assert not [c for c in out.columns if c.startswith("paper_")]
    full = table3_beside_paper(ours, {"plain": plain.replace(images={"v1": 50_000}),
                                      "td": td.replace(images={"v1": 50_000})})
    assert full.paper_original.iloc[0] == 1.1 and full.comparison.iloc[0] == "plain: paper setting; td: paper setting"
    with pytest.raises(ValueError, match="EvalFacts"):
        table3_beside_paper(ours, {"plain": "original"})


def test_resolution_and_localization_rows_carry_the_facts():
    f = _facts(data="embedded", data_tag="tdam-shapes/imagenet/default", img_size=64, images={"v1": 120})
    tab = resolution_table({"td": {32: 10.0, 64: 50.0}}, {"td": f})
    assert tab.img_size.tolist() == [32, 64] and (tab.run == f.run).all() and (tab.v1_images == 120).all()
    with pytest.raises(ValueError, match=r"no facts for models \['td'\]"):
        resolution_table({"td": {32: 10.0}}, {})
    loc = with_provenance(pd.DataFrame({"protocol": ["last"], "top1_loc": [1.0], "comparison": ["x"]}), f)
    assert loc.columns.tolist() == ["protocol", "top1_loc", *PROVENANCE_COLUMNS, "v1_images", "comparison"]


# ------------------------------------------------------------------ notebook 02 end to end


@pytest.mark.slow
def test_notebook_02_with_t1_and_max_images_writes_no_paper_setting(tmp_path, shapes_tiny):
    """Papermill: notebook 02 on a t=2 checkpoint with `-p t 1 -p max_images 24` writes a results table whose rows
    record t_eval=1 and 24 images, and whose comparison names both reasons (and never 'paper setting')."""
    from tdam import create_model
    from tdam.checkpoint import save_checkpoint
    from tdam.train.config import TrainConfig

    cfg = TrainConfig(model={"arch": "resnet18", "attention": "td", "num_classes": 12}, img_size=64, data_size="tiny",
                      epochs=2, warmup_epochs=0, profile="smoke")
    torch.manual_seed(0)
    model = create_model("resnet18", attention="td", num_classes=12)
    folder = tmp_path / "resnet18_td_joint_t2_m1-smoke-feedbeef"
    save_checkpoint({"model": model.state_dict(), "model_config": model.model_config, "config": cfg.to_dict(),
                     "epoch": 1}, folder / "last.pth")
    runs = tmp_path / "runs"
    env = {**os.environ, "TDAM_RUNS": str(runs)}             # the tiny embedded data stays where TDAM_DATA says
    subprocess.run([sys.executable, "-m", "papermill", "-k", "python3", "--log-level", "WARNING",
                    str(repo_root() / "notebooks" / "02_eval_imagenet.ipynb"),
                    str(tmp_path / "out.ipynb"), "-p", "checkpoint", str(folder / "last.pth"), "-p", "t", "1",
                    "-p", "max_images", "24", "-p", "batch_size", "24", "-p", "device", "cpu"],
                   check=True, env=env, cwd=tmp_path)
    tab = pd.read_csv(runs / "02_eval_imagenet" / "results.csv")
    assert (tab.run == folder.name).all() and (tab.epochs == 1).all() and (tab.t_eval == 1).all()
    assert (tab.v1_images == 24).all() and (tab.train_on == "last").all()
    assert not tab.comparison.str.contains("paper setting").any()
    assert tab.comparison.str.contains("evaluated at t=1, the paper row's t is 2").all()
    assert tab.comparison.str.contains("24 ImageNet-V1 val images evaluated, not the whole split's 50,000").all()
