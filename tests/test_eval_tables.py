"""Paper tables, side-by-side comparison, provenance, ablation index, notebook parameter validation."""
import json

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

import tdam
from tdam import paths
from tdam.evaluation.ablations import TABLE2_SETS, ablation_config, ablation_table, table2_entries
from tdam.evaluation.classification import EvalResult
from tdam.evaluation.params import AblationParams, ComplexityParams, EvalParams, ResolutionParams
from tdam.evaluation.reports import accuracy_table, legend_label, resolution_table
from tdam.evaluation.tables import beside_paper, model_key, paper_row, paper_table, provenance

NOTEBOOKS = ["02_eval_imagenet", "03_complexity", "04_ablations", "08_test_resolution"]


def test_paper_tables_and_rows():
    t1 = paper_table("table1")
    assert len(t1) == 32 and {"v1_top1", "paper_v1_top1"} & set(t1.columns) == {"v1_top1"}
    row = paper_row("table1", backbone="resnet50", attention="td", td_mode="joint", t=2, m=1, td_stages=(3, 4))
    assert row.method == "TDjoint(t=2;m=1)" and row.v1_top1 == 78.96
    assert paper_row("table1", backbone="resnet50", attention="", td_mode="", t=None) .method == "ResNet"
    assert paper_row("table1", backbone="resnet50", attention="td", td_mode="joint", t=5) is None
    with pytest.raises(ValueError, match="rows of table1 match"):
        paper_row("table1", backbone="resnet50", attention="td")
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


def test_accuracy_table_puts_paper_row_beside_each_metric():
    n = 10
    c = {k: np.tile(np.array([[True, True]] * 5 + [[False, True]] * 5), (1, 1)) for k in ("last", "unique_box")}
    res = EvalResult(topk=(1, 5), targets=np.zeros(n, dtype=np.int64), correct=c, step_correct=None, seconds=1.0)
    cfg = {"arch": "resnet18", "attention": "td", "t": 2, "m": 1, "td_mode": "joint"}
    tab = accuracy_table({"v1": res, "v2": res}, cfg)
    assert tab.metric.tolist() == ["last", "paper (unique-box)"]
    assert (tab.v1_top1 == 50.0).all() and (tab.paper_v1_top1 == 71.55).all() and (tab.paper_v2_top5 == 81.53).all()
    assert tab.diff_v2_top1.iloc[0] == pytest.approx(50.0 - 59.31)


def test_resolution_legend():
    t = resolution_table({"td": {64: 50.0, 32: 10.0, 128: 40.0}})
    assert t.resolution.tolist() == [32, 64, 128]
    assert legend_label("td", t) == "td (best 50.00 @ 64; 32: 10.00, 128: 40.00)"


def test_ablation_index_covers_table2_and_configs_build():
    entries = table2_entries()
    paper = paper_table("table2")
    assert [(e["set"], e["row"]) for e in entries] == list(zip(paper.set, paper.row))
    assert {e["set"] for e in entries} == set(TABLE2_SETS)
    for e in entries:
        cfg = ablation_config(e, profile="smoke")
        assert cfg.data_dir is None and cfg.img_size == 64
        with torch.device("meta"):
            model = tdam.create_model(cfg.backbone, num_classes=10, **cfg.model_kwargs())
        assert tdam.is_td_model(model) == (cfg.attention == "td"), e
    with pytest.raises(ValueError, match="unknown Table 2 set"):
        table2_entries(["nope"])
    row = {"set": "layers", "row": "SE", "params_M": 28.0, "gflops": 4.1, "v1_top1": 70.0, "v1_top5": 90.0}
    tab = ablation_table([row])
    assert tab.paper_v1_top1.iloc[0] == 76.77 and tab.diff_v1_top1.iloc[0] == pytest.approx(70.0 - 76.77)


def test_notebook_params_validate():
    assert EvalParams().torch_device.type in ("cpu", "cuda")
    for bad, match in (({"backbone": "vgg"}, "backbone"), ({"v2_variant": "b-33"}, "v2_variant"),
                       ({"amp": "int8"}, "amp"), ({"batch_size": 0}, "batch_size"), ({"device": "tpu"}, "device"),
                       ({"checkpoint": "/no/such.pth"}, "not found"), ({"data_dir": "/no/such/dir"}, "not found")):
        with pytest.raises(ValueError, match=match):
            EvalParams(**bad)
    with pytest.raises(ValueError, match="flops_backbones"):
        ComplexityParams(flops_backbones=["resnet9"])
    with pytest.raises(ValueError, match="t_values"):
        ComplexityParams(t_values=[0])
    with pytest.raises(ValueError, match="speed_methods"):
        ComplexityParams(speed_methods=["TDjoint(t=9)"])
    assert [s["method"] for s in ComplexityParams().speed_specs()] == ["ResNet", "SE", "TDjoint(t=2;m=1)"]
    with pytest.raises(ValueError, match="rows"):
        AblationParams(rows=["TDx"])
    assert [e["row"] for e in AblationParams().entries()] == ["ResNet", "TDj(m=1)"]
    with pytest.raises(ValueError, match="one per attention"):
        ResolutionParams(checkpoints=["a.pth"])
    assert ResolutionParams().resolve_resolutions(64) == [32, 40, 48, 56, 64, 80, 96, 112, 128]
    assert ResolutionParams().resolve_resolutions(224) == list(ResolutionParams.PAPER_RESOLUTIONS)


def test_provenance_is_json_ready(tmp_path):
    f = tmp_path / "ck.pth"
    f.write_bytes(b"abc")
    prov = provenance(checkpoint=f, data=tmp_path, device="cpu", extra=1)
    assert prov["checkpoint_sha256"] == "ba7816bf8f01" and prov["device"].startswith("cpu")
    assert prov["torch"] == torch.__version__ and prov["extra"] == 1
    json.dumps(prov)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_clean_and_parameterised(name):
    nb = nbformat.read(paths.repo_root() / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert not any("def " in c.source for c in code)
