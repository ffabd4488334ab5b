"""TrainConfig validation, params/ files, CLI parsing: everything that must fail before any work starts."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tdam.paths import params_dir
from tdam.train import TrainConfig, load_config
from tdam.train.cli import main, parse_overrides
from tdam.train.config import config_hash

PAPER_TABLE1 = Path("/work/shared/reference/paper_table1_imagenet.csv")


@pytest.mark.parametrize("key,value,needle", [
    ("backbone", "resnet19", "valid choices are ['resnet18'"),
    ("attention", "sk", "valid choices are [None, 'td'"),
    ("td_mode", "bilinear", "valid choices are ['top', 'joint', 'additive']"),
    ("m", 5, "valid choices are [0, 1, 2]"),
    ("t", 0, "expected an integer >= 1"),
    ("amp", "fp8", "valid choices are ['auto', 'bf16', 'fp16', 'fp32']"),
    ("opt", "sgdd", "not a timm optimizer"),
    ("sched", "plateau", "valid choices are ['cosine'"),
    ("smoothing", 1.5, "out of range"),
    ("batch_size", 0, "expected an integer >= 1"),
    ("epochs", 2.5, "expected an integer"),
])
def test_invalid_values_name_the_choices(key, value, needle):
    with pytest.raises(ValueError, match="^" + key) as e:
        TrainConfig(**{"attention": "td", key: value})
    assert needle in str(e.value)


def test_m_checked_against_the_block_type():
    TrainConfig(backbone="resnet50", attention="td", m=3)
    with pytest.raises(ValueError, match=r"m=3 is not a valid TD feedback distance for resnet18: valid choices are "
                                         r"\[0, 1, 2\]"):
        TrainConfig(backbone="resnet18", attention="td", m=3)
    with pytest.raises(ValueError, match=r"valid choices are \[1\]"):
        TrainConfig(backbone="mobilenetv3_large_100", attention="td", m=2)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['epoch'\]; valid keys are \[.*'epochs'"):
        load_config(None, epoch=3)


def test_mixup_needs_even_batch():
    with pytest.raises(ValueError, match="must be even"):
        TrainConfig(mixup=0.5, batch_size=7)


def test_yaml_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("epochs: 7\nlr_base: 0.2\nmodel_options: {x: 1, y: 2}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nepochs: 9\nweight_decay: 1e-3\nmodel_options: {y: 3}\n")
    cfg = load_config(tmp_path / "b.yaml", batch_size=64, lr=None)
    assert (cfg.epochs, cfg.lr_base, cfg.batch_size) == (9, 0.2, 64)
    assert cfg.weight_decay == 1e-3                  # YAML 1.1 reads '1e-3' as a string: coerced
    assert cfg.model_options == {"x": 1, "y": 3}
    assert cfg.lr is None and cfg.resolved_lr(world_size=2) == pytest.approx(0.2 * 64 * 2 / 128)
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ValueError, match="circular"):
        load_config(tmp_path / "c.yaml")


def test_every_table1_row_has_a_params_file():
    import csv

    rows = list(csv.DictReader(PAPER_TABLE1.open())) if PAPER_TABLE1.exists() else []
    files = {p.stem: load_config(p) for p in (params_dir() / "imagenet").glob("[!_]*.yaml")}
    for row in rows:
        attention = row["attention"] or None
        matches = [c for c in files.values() if c.backbone == row["backbone"] and c.attention == attention
                   and (attention != "td" or (c.td_mode == row["td_mode"] and c.t == int(row["t"])
                                              and c.m == int(row["m"])
                                              and (c.td_stages or [3, 4]) == [int(s) for s in
                                                                               row["td_stages"].split("+")]))]
        assert len(matches) == 1, f"Table 1 row {row['backbone']} {row['method']}: {len(matches)} params files"
    assert {"mobilenetv3_large_100_plain", "mobilenetv3_large_100_td_joint_t2"} <= set(files)


def test_paper_recipes():
    r18, r50 = load_config("resnet18_td_joint_t2_m1"), load_config("resnet50_td_joint_t2_m1")
    assert (r18.opt, r18.momentum, r18.weight_decay, r18.warmup_epochs, r18.smoothing) == ("sgd", 0.9, 1e-4, 5, 0.1)
    assert (r18.epochs, r18.mixup, r18.cutmix) == (110, 0.0, 0.0)
    assert (r50.epochs, r50.mixup, r50.cutmix) == (160, 0.5, 0.5)
    assert r50.resolved_lr(world_size=4) == pytest.approx(0.4)           # public command: 4 GPUs x 128, lr 0.4
    cnx = load_config("convnext_tiny_td_joint_t2_m1")
    assert (cnx.opt, cnx.weight_decay, cnx.epochs, cnx.warmup_epochs, cnx.accum_steps) == ("adamw", 0.05, 300, 20, 8)
    assert (cnx.mixup, cnx.cutmix, cnx.reprob, cnx.drop_path_rate, cnx.model_ema_decay) == (0.8, 1.0, 0.25, 0.1,
                                                                                          0.9999)
    assert cnx.auto_augment == "rand-m9-mstd0.5-inc1"
    assert cnx.resolved_lr(world_size=4) == pytest.approx(4e-3 * 122 * 8 * 4 / 4096)
    readme = load_config(params_dir() / "imagenet" / "readme" / "resnet50_td_joint_t2_m1.yaml")
    assert (readme.epochs, readme.mixup, readme.cutmix, readme.reprob, readme.remode) == (150, 0.7, 1.0, 0.5, "pixel")
    r101_l4 = load_config("resnet101_td_joint_t2_m1_L4")
    assert r101_l4.td_stages == [4] and r101_l4.model_tag() == "resnet101_td_joint_t2_m1_L4"


def test_smoke_profile_overlays_any_model():
    cfg = load_config("resnet50_td_joint_t2_m1", profile="smoke")
    assert cfg.data_dir is None and cfg.mixup == 0 and cfg.img_size == 64 and cfg.profile == "smoke"
    assert cfg.backbone == "resnet50" and cfg.epochs < 10


def test_run_name_is_stable_and_semantic():
    a = load_config(None, profile="smoke", backbone="resnet18", attention="td")
    b = load_config(None, profile="smoke", backbone="resnet18", attention="td", workers=3, progress=False)
    c = load_config(None, profile="smoke", backbone="resnet18", attention="td", seed=1)
    assert a.run_name() == b.run_name() != c.run_name()
    assert a.run_name().startswith("resnet18_td_joint_t2_m1-smoke-") and config_hash(a) in a.run_name()


def test_parse_overrides():
    assert parse_overrides(["--epochs", "3", "--td_stages=[4]", "--compile", "--lr", "1e-3", "--attention", "plain",
                            "--data-dir", "/x"]) == {"epochs": 3, "td_stages": [4], "compile": True, "lr": "1e-3",
                                                     "attention": "plain", "data_dir": "/x"}
    assert load_config(None, **parse_overrides(["--lr", "1e-3", "--attention", "plain"])).lr == 1e-3
    with pytest.raises(ValueError, match="unexpected argument"):
        parse_overrides(["epochs", "3"])


def test_m5_fails_before_data_loading(tmp_path, monkeypatch, capsys):
    """`m: 5` in a params file: the CLI exits with code 2 naming the valid choices; no dataset is touched."""
    import tdam.train.data as data

    def no_data(*a, **k):
        raise AssertionError("data loading started before the config was validated")

    monkeypatch.setattr(data, "build_datasets", no_data)
    monkeypatch.setattr(data, "data_root", no_data)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": str(params_dir() / "imagenet" / "resnet50_td_joint_t2_m1.yaml"),
                                   "m": 5, "data_dir": str(tmp_path / "does-not-exist")}))
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "m=5 is not a valid TD feedback distance for resnet50: valid choices are [0, 1, 2, 3]" in err
    assert "does-not-exist" not in err


def test_print_config(capsys):
    assert main(["--config", "resnet18_se", "--profile", "smoke", "--epochs", "2", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["attention"] == "se" and printed["epochs"] == 2 and printed["profile"] == "smoke"


def test_missing_data_dir_fails_with_layout(tmp_path, capsys):
    rc = main(["--profile", "smoke", "--data_dir", str(tmp_path / "nope"), "--name", "x"])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and "train" in err


def test_notebook01_defaults_are_the_ensure_checkpoint_run():
    """Notebook 01 as stored trains exactly the run that `ensure_checkpoint()` (notebooks 02-09) reuses."""
    import nbformat

    from tdam.paths import repo_root
    from tdam.train import checkpoint_config

    nb = nbformat.read(repo_root() / "notebooks" / "01_train_imagenet.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    ns: dict = {}
    exec(code[0] + "\n" + code[1], ns)                    # the parameters and the validation cells
    assert ns["cfg"].run_dir() == checkpoint_config().run_dir()
    assert ns["cfg"].to_dict() == checkpoint_config().to_dict()
