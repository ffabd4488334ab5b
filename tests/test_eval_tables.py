"""Paper tables, side-by-side comparison, provenance, ablation index, notebook parameter validation."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import tdam
from tdam import paths
import tdam.notebook as nb
from tdam.evaluation.ablations import TABLE2_SETS, table2_entries
from tdam.evaluation.classification import EvalResult
from tdam.evaluation.figures import legend_label, resolution_table
from tdam.evaluation.provenance import EvalFacts
from tdam.notebook import provenance
from tdam.reference import (ablation_table, accuracy_table, beside_paper, model_key, paper_resolutions, paper_setting,
                            paper_table, table1_specs)



def test_paper_tables_and_rows():
    t1 = paper_table("table1")
    assert len(t1) == 32 and {"v1_top1", "paper_v1_top1"} & set(t1.columns) == {"v1_top1"}
    r50 = t1[t1.backbone == "resnet50"]
    row = r50[(r50.attention == "td") & (r50.td_mode == "joint") & (r50.t == 2) & (r50.m == 1)
              & (r50.td_stages == "3+4")]
    assert len(row) == 1 and row.method.iloc[0] == "TDjoint(t=2;m=1)" and row.v1_top1.iloc[0] == 78.96
    assert r50[(r50.attention == "") & (r50.td_mode == "") & r50.t.isna()].method.tolist() == ["ResNet"]
    assert paper_table(1).attention.isna().any()  # as transcribed: empty cells NaN
    with pytest.raises(ValueError, match="unknown paper table"):
        paper_table("table9")


def test_model_key_and_beside_paper():
    key = model_key({"arch": "resnet18", "attention": "td", "num_classes": 12, "t": 2, "m": 2, "td_mode": "top"})
    assert key == {"backbone": "resnet18", "attention": "td", "td_mode": "top", "t": 2, "m": 2, "td_stages": "3+4"}
    assert model_key({"arch": "resnet18", "attention": None})["attention"] == ""
    ours = pd.DataFrame([{**key, "v1_top1": 70.0}, {**model_key({"arch": "resnet18"}), "v1_top1": 69.0},
                         {**model_key({"arch": "resnet18", "attention": "td", "t": 7}), "v1_top1": 1.0}])
    out = beside_paper(ours, paper_table("table1"), on=list(key), columns=["v1_top1"])
    assert out.columns[-3:].tolist() == ["v1_top1", "paper_v1_top1", "diff_v1_top1"]
    assert out.paper_v1_top1.iloc[0] == 71.59 and out.diff_v1_top1.iloc[0] == pytest.approx(70.0 - 71.59)
    assert out.paper_v1_top1.iloc[1] == 70.51
    assert np.isnan(out.paper_v1_top1.iloc[2]) and np.isnan(out.diff_v1_top1.iloc[2])  # no such paper row


def _result(n=10):
    c = {k: np.array([[True, True]] * (n // 2) + [[False, True]] * (n - n // 2)) for k in ("last", "unique_box")}
    return EvalResult(topk=(1, 5), targets=np.zeros(n, dtype=np.int64), correct=c, step_correct=None, seconds=1.0)


def _facts(cfg, *, num_classes, img_size, imagenet, t=2, images=None):
    return EvalFacts(run="r", epochs=1, train_on="last", profile=None, t_eval=t,
                     images=images or {"v1": 50_000, "v2": 10_000}, data="imagenet" if imagenet else "embedded",
                     data_tag="x", img_size=img_size, num_classes=num_classes, model_config=cfg)


FULL = {"v1": _result(50_000), "v2": _result(10_000)}
PROV = ["run", "epochs", "train_on", "profile", "t_eval", "data", "data_tag", "img_size", "num_classes",
        "v1_images", "v2_images"]


def test_accuracy_table_puts_paper_row_beside_each_metric_in_the_papers_setting():
    cfg = {"arch": "resnet18", "attention": "td", "t": 2, "m": 1, "td_mode": "joint"}
    tab = accuracy_table(FULL, _facts(cfg, num_classes=1000, img_size=224, imagenet=True))
    assert tab.metric.tolist() == ["last", "paper (unique-box)"]
    assert (tab.v1_top1 == 50.0).all() and (tab.paper_v1_top1 == 71.55).all() and (tab.paper_v2_top5 == 81.53).all()
    assert tab.diff_v2_top1.iloc[0] == pytest.approx(50.0 - 59.31)
    assert tab.columns.tolist() == ["metric", "v1_top1", "paper_v1_top1", "diff_v1_top1",
                                    "v1_top5", "paper_v1_top5", "diff_v1_top5", "v2_top1", "paper_v2_top1",
                                    "diff_v2_top1", "v2_top5", "paper_v2_top5", "diff_v2_top5", *PROV, "comparison"]
    assert (tab.comparison == "paper setting").all()


@pytest.mark.parametrize("cfg, setting, reason", [
    ({"arch": "resnet18", "attention": "td"}, dict(num_classes=12, img_size=64, imagenet=False),
     "embedded tdam-shapes data, not ImageNet; 12 classes, not ImageNet's 1000; "
     "evaluated at 64 px, not the paper's 224 px"),
    ({"arch": "resnet18", "attention": "td"}, dict(num_classes=3, img_size=224, imagenet=True),
     "3 classes, not ImageNet's 1000"),
    ({"arch": "resnet18", "attention": "td"}, dict(num_classes=1000, img_size=160, imagenet=True),
     "evaluated at 160 px, not the paper's 224 px"),
    ({"arch": "resnet18", "attention": "td", "m": 3}, dict(num_classes=1000, img_size=224, imagenet=True),
     "resnet18 TD-joint t2 m3 is not a row of Table 1"),
    ({"arch": "resnet50", "attention": "td", "td_mode": "top", "m": 2}, dict(num_classes=1000, img_size=224,
                                                                             imagenet=True),
     "resnet50 TD-top t2 m2 is not a row of Table 1"),       # a ResNet-18/34 row, not a ResNet-50 one
])
def test_accuracy_table_outside_the_papers_setting_shows_no_paper_number(cfg, setting, reason):
    tab = accuracy_table(FULL, _facts(cfg, **setting))
    assert not [c for c in tab.columns if c.startswith(("paper_", "diff_"))]
    assert tab.columns.tolist() == ["metric", "v1_top1", "v1_top5", "v2_top1", "v2_top5", *PROV, "comparison"]
    assert (tab.comparison == reason).all() and (tab.v1_top1 == 50.0).all()


def test_paper_setting_rule():
    base = dict(num_classes=1000, img_size=224, imagenet=True, t=2, images={"v1": 50_000})
    s = paper_setting({"arch": "resnet101", "attention": "td", "td_stages": [4]}, **base)
    assert s.matches and s.reason == "paper setting" and s.row["method"] == "TDjoint(t=2;m=1;L4)"
    assert paper_setting({"arch": "resnet101", "attention": "td"}, **base).row["method"] == "TDjoint(t=2;m=1)"
    plain = {**base, "t": 1}                                        # a model without TD runs one step
    assert paper_setting({"arch": "resnet50", "attention": "se"}, **plain).row["v1_top1"] == 78.03
    assert paper_setting({"arch": "resnet50", "attention": None}, **plain).row["method"] == "ResNet"
    # the row's model but not its data: the model row is known, the setting does not match
    s = paper_setting({"arch": "resnet50"}, **{**plain, "num_classes": 12})
    assert s.model_row["method"] == "ResNet" and s.row is None and s.reason == "12 classes, not ImageNet's 1000"
    # options that change the model away from every paper row
    for off, text in (({"td_order": "spatial"}, "td_order='spatial'"), ({"td_pool": "max"}, "td_pool='max'"),
                      ({"td_blocks": {3: [0, 1]}}, "td_blocks={3: [0, 1]}")):
        s = paper_setting({"arch": "resnet50", "attention": "td", **off}, **base)
        assert s.row is None and s.reason == f"resnet50 TD-joint t2 m1 ({text}) is not a row of Table 1"
    assert paper_setting({"arch": "resnet50", "attention": "se", "attn_stages": [3, 4]}, **plain).row is None
    # ResNet-101's default layer3 subset written out is still the paper's model
    assert paper_setting({"arch": "resnet101", "attention": "td", "td_blocks": {"3": [0, 1, 2, 8, 13, 18, 22]}},
                         **base).matches
    # Table 3: ResNet-50 models only
    s = paper_setting({"arch": "resnet50", "attention": "td", "td_mode": "top", "m": 3}, table="table3", **base)
    assert s.row == {"backbone": "resnet50", "column": "tdtop_t2_m3"}
    s = paper_setting({"arch": "resnet18"}, table="table3", **plain)
    assert s.row is None and s.reason == ("resnet18 plain is not a model of Table 3 (resnet50 plain, resnet50 TD-top "
                                          "t2 m3, resnet50 TD-joint t2 m1)")
    # Table 2: named rows, the 200-class subset
    subset = {**base, "num_classes": 200, "t": 3, "images": {"v1": 10_000}}
    s = paper_setting({"arch": "resnet18"}, table="table2", ablation=("steps_200cls", "TDt(t=3)"), **subset)
    assert s.matches and s.row["v1_top1"] == 75.34
    s = paper_setting({"arch": "resnet18"}, table="table2", ablation=("steps_200cls", "TDt(t=3)"),
                      **{**subset, "num_classes": 1000})
    assert s.reason == "1000 classes, not the paper's 200-class ImageNet subset"
    assert paper_setting({"arch": "resnet50"}, **{**plain, "num_classes": None}).reason == "class count not recorded"
    with pytest.raises(ValueError, match="unknown paper table 'table4'; valid"):
        paper_setting({"arch": "resnet50"}, table="table4", **base)
    with pytest.raises(ValueError, match="ablation"):
        paper_setting({"arch": "resnet50"}, table="table2", **base)


def test_model_key_takes_create_models_defaults():
    assert model_key({"arch": "resnet50", "attention": "td", "t": None, "m": 0, "td_mode": "top"}) == {
        "backbone": "resnet50", "attention": "td", "td_mode": "top", "t": 2, "m": 0, "td_stages": "3+4"}
    assert model_key({"arch": "mobilenetv3_large_100", "attention": "td"})["td_stages"] == "4+5+6"
    assert model_key({"arch": "resnet101", "attention": "td", "td_stages": [4]})["td_stages"] == "4"


def test_resolution_legend():
    t = resolution_table({"td": {64: 50.0, 32: 10.0, 128: 40.0}},
                         {"td": _facts({"arch": "resnet18"}, num_classes=12, img_size=64, imagenet=False)})
    assert t.resolution.tolist() == [32, 64, 128]
    assert legend_label("td", t) == "td (best 50.00 @ 64; 32: 10.00, 128: 40.00)"


def test_ablation_index_covers_table2_and_configs_build():
    entries = table2_entries()
    paper = paper_table("table2")
    assert [(e["set"], e["row"]) for e in entries] == list(zip(paper.set, paper.row))
    assert {e["set"] for e in entries} == set(TABLE2_SETS)
    for e in entries:
        cfg = nb.ablation_config(e, profile="smoke")
        assert cfg.data_dir is None and cfg.img_size == 64
        kw = dict(cfg.model)
        with torch.device("meta"):
            model = tdam.create_model(**{**kw, "num_classes": 10})
        assert tdam.is_td_model(model) == (kw.get("attention") == "td"), e
    with pytest.raises(ValueError, match="unknown Table 2 set"):
        table2_entries(["nope"])
    row = {"set": "layers", "row": "SE", "params_M": 28.0, "gflops": 4.1, "v1_top1": 70.0, "v1_top5": 90.0,
           "backbone": "resnet50", "data": "imagenet", "img_size": 224, "num_classes": 1000, "t_eval": 1,
           "v1_images": 50_000}
    tab = ablation_table([row])
    assert tab.paper_v1_top1.iloc[0] == 76.77 and tab.diff_v1_top1.iloc[0] == pytest.approx(70.0 - 76.77)
    with pytest.raises(ValueError, match=r"need \['backbone', 'data', 'img_size', 't_eval', 'v1_images'\]"
                                         r".*missing \['data', 'img_size'\]"):
        ablation_table([{k: v for k, v in row.items() if k not in ("data", "img_size")}])


def test_notebook_params_validate(tmp_path):
    assert nb.parameters("02_eval_imagenet").torch_device.type in ("cpu", "cuda")
    for bad, match in (({"backbone": "vgg"}, "backbone"), ({"v2_variant": "b-33"}, "v2_variant"),
                       ({"amp": "int8"}, "amp"), ({"batch_size": 0}, "batch_size"), ({"device": "tpu"}, "device"),
                       ({"checkpoint": "/no/such.pth"}, "no such file"),
                       ({"data_dir": "/no/such/dir"}, "no such directory")):
        with pytest.raises(ValueError, match=match):
            nb.parameters("02_eval_imagenet", **bad)
    with pytest.raises(ValueError, match="flops_backbones"):
        nb.parameters("03_complexity", flops_backbones=["resnet9"])
    with pytest.raises(ValueError, match="t_values"):
        nb.parameters("03_complexity", t_values=[0])
    with pytest.raises(ValueError, match="speed_methods"):
        nb.parameters("03_complexity", speed_methods=["TDjoint(t=9)"])
    p = nb.parameters("03_complexity")
    assert [s["method"] for s in table1_specs(p.speed_backbones, p.speed_methods)] == [
        "ResNet", "SE", "TDjoint(t=2;m=1)"]
    with pytest.raises(ValueError, match="rows"):
        nb.parameters("04_ablations", rows=["TDx"])
    p = nb.parameters("04_ablations")
    assert [e["row"] for e in table2_entries(p.sets, p.rows)] == ["ResNet", "TDj(m=1)"]
    ckpt = tmp_path / "a.pth"
    ckpt.write_bytes(b"")
    assert nb.parameters("08_test_resolution", checkpoint=str(ckpt)).checkpoint == str(ckpt)
    with pytest.raises(ValueError, match="m=2 selects the cached run"):
        nb.parameters("08_test_resolution", checkpoint=str(ckpt), m=2)
    assert paper_resolutions(64) == [32, 40, 48, 56, 64, 80, 96, 112, 128]
    assert paper_resolutions(224) == [112, 140, 168, 196, 224, 280, 336, 392, 448]
    names = {n for names in nb.NOTEBOOKS.values() for n in names}
    assert names == set(nb.VALIDATORS), "every validator is used and every notebook name has one"
    for name, names in nb.NOTEBOOKS.items():
        assert list(nb.notebook_defaults(name)) == list(names), f"{name}: parameters cell and NOTEBOOKS differ"


@pytest.mark.slow
def test_evaluation_never_imports_the_trainer():
    """Evaluation, metrics, CAM and reference code run without the trainer: importing all of it loads no tdam.train
    module, and none of their files names tdam.train (only tdam.notebook calls the trainer)."""
    import ast
    import subprocess
    import sys

    code = ("import sys, tdam.cam, tdam.metrics, tdam.reference, tdam.evaluation.ablations, "
            "tdam.evaluation.attention_shift, tdam.evaluation.cost, tdam.evaluation.figures, "
            "tdam.evaluation.localization, tdam.evaluation.selectivity; "
            "print(sorted(m for m in sys.modules if m.startswith('tdam.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    root = paths.repo_root() / "tdam"
    files = [root / "cam.py", *(root / "metrics").glob("*.py"), *(root / "evaluation").glob("*.py"),
             *(root / "reference").glob("*.py")]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n == "tdam.train" or n.startswith("tdam.train.") for n in names), f


def test_provenance_is_json_ready(tmp_path):
    f = tmp_path / "ck.pth"
    f.write_bytes(b"abc")
    prov = provenance(checkpoint=f, data=tmp_path, device="cpu", extra=1)
    assert prov["checkpoint_sha256"] == "ba7816bf8f01" and prov["device"].startswith("cpu")
    assert prov["torch"] == torch.__version__ and prov["extra"] == 1
    json.dumps(prov)


def test_ablation_table_compares_only_in_the_papers_setting():
    base = {"set": "layers", "row": "SE", "params_M": 28.0, "gflops": 4.1, "v1_top1": 70.0, "v1_top5": 90.0,
            "t_eval": 1, "v1_images": 50_000}
    rows = [{**base, "backbone": "resnet50", "data": "imagenet", "img_size": 224, "num_classes": 1000},  # the paper's
            {**base, "backbone": "resnet50", "data": "embedded", "img_size": 64, "num_classes": 12},    # sizes only
            {**base, "backbone": "resnet18", "data": "embedded", "img_size": 64, "num_classes": 12},    # nothing
            {**base, "backbone": "resnet50", "data": "imagenet", "img_size": 224},                      # sizes only
            {**base, "row": "SE extra", "backbone": "resnet50", "data": "imagenet", "img_size": 224,
             "num_classes": 1000}]                                                                      # nothing
    tab = ablation_table(rows)
    acc, size = ["paper_v1_top1", "diff_v1_top1", "paper_v1_top5", "diff_v1_top5"], ["paper_params_M", "diff_gflops"]
    assert tab.loc[0, acc + size].notna().all() and tab.loc[0, "comparison"] == "paper setting"
    assert tab.loc[1, acc].isna().all() and tab.loc[1, size].notna().all()
    assert tab.loc[1, "comparison"] == ("embedded tdam-shapes data, not ImageNet; 12 classes, not ImageNet's 1000; "
                                        "evaluated at 64 px, not the paper's 224 px")
    assert tab.loc[2, acc + size].isna().all()
    assert tab.loc[2, "comparison"].startswith("resnet18, the paper's row is resnet50; embedded tdam-shapes data")
    assert tab.loc[3, acc].isna().all() and tab.loc[3, size].notna().all()
    assert tab.loc[3, "comparison"] == "class count not recorded"
    assert tab.loc[4, acc + size].isna().all() and tab.loc[4, "comparison"] == "not a paper row"
    assert (tab.v1_top1 == 70.0).all()                                  # our numbers always shown
