"""TrainConfig validation, params/ files, CLI parsing: everything that must fail before any work starts."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import tdam.reference
from tdam.paths import params_dir
from tdam.train import TrainConfig, load_config
from tdam.train.cli import main, parse_overrides
from tdam.errors import EXIT_DATA

PAPER_TABLE1 = Path(tdam.reference.__file__).parent / tdam.reference.TABLES[1]


@pytest.mark.parametrize("key,value,needle", [
    ("amp", "fp8", "valid choices are ['auto', 'bf16', 'fp16', 'fp32']"),
    ("opt", "sgdd", "(a timm optimizer)='sgdd' is not valid; valid choices are ["),
    ("sched", "plateau", "valid choices are ['cosine'"),
    ("smoothing", 1.5, "expected a finite number in [0.0, 1.0]"),
    ("lr", float("nan"), "expected a finite number >= 0.0"),
    ("batch_size", 0, "expected an integer >= 1"),
    ("epochs", 2.5, "expected an integer"),
    ("device", "tpu", "valid choices are ['auto', 'cpu', 'cuda', 'cuda:N']"),
])
def test_invalid_values_name_the_choices(key, value, needle):
    with pytest.raises(ValueError, match="^" + key) as e:
        TrainConfig(**{"model": {"arch": "resnet18", "attention": "td"}, key: value})
    assert needle in str(e.value)


@pytest.mark.parametrize("model,needle", [
    ({"arch": "resnet19"}, "arch='resnet19' is not valid; valid choices are ['resnet18'"),
    ({"arch": "resnet18", "attention": "sk"}, "valid choices are [None, 'td'"),
    ({"arch": "resnet18", "attention": "td", "td_mode": "bilinear"}, "valid choices are ['top', 'joint', 'additive']"),
    ({"arch": "resnet18", "attention": "td", "m": 5}, "valid choices are [0, 1, 2]"),
    ({"arch": "resnet18", "attention": "td", "t": 0}, "must be an integer >= 1"),
    ({"arch": "resnet18", "attention": "se", "t": 5}, "TD options ['t'] given, but attention='se'"),
    ({"attention": "td"}, "'arch' is missing; valid choices are ['resnet18'"),
    ("resnet18", "expected a mapping of tdam.create_model options"),
])
def test_invalid_model_names_the_choices(model, needle):
    """The model description is validated by create_model itself (built on the meta device)."""
    with pytest.raises(ValueError, match="^model: ") as e:
        TrainConfig(model=model)
    assert needle in str(e.value)


def test_unknown_model_option_names_the_valid_options():
    with pytest.raises(ValueError, match=r"^model: resnet18: .*'foo'.*; valid model options are \['arch', "
                                         r"'attention', .*'drop_path_rate'"):
        TrainConfig(model={"arch": "resnet18", "foo": 1})


def test_m_checked_against_the_block_type():
    TrainConfig(model={"arch": "resnet50", "attention": "td", "m": 3})
    with pytest.raises(ValueError, match=r"m \(feedback distance of TDBasicBlock\)=3 is not valid; valid choices "
                                         r"are \[0, 1, 2\]"):
        TrainConfig(model={"arch": "resnet18", "attention": "td", "m": 3})
    with pytest.raises(ValueError, match=r"valid choices are \[1\]"):
        TrainConfig(model={"arch": "mobilenetv3_large_100", "attention": "td", "m": 2})


def test_mobilenetv3_default_td_placement_is_accepted():
    """MobileNetV3's own default placement (stages 4, 5, 6) is valid, given or left to the default."""
    explicit = load_config("mobilenetv3_large_100_td_joint_t2_m1", profile="smoke", model={"td_stages": [4, 5, 6]})
    assert explicit.model["td_stages"] == [4, 5, 6]
    assert explicit.model_tag() == "mobilenetv3_large_100_td_joint_t2_m1_L456"
    with pytest.raises(ValueError, match=r"td_stages=\(9,\) is not valid; use stage numbers in 1..7"):
        load_config("mobilenetv3_large_100_td_joint_t2_m1", model={"td_stages": [9]})


def test_meta_validation_is_fast():
    import time

    for model in ({"arch": "resnet101", "attention": "td"}, {"arch": "convnext_tiny", "attention": "td"}):
        TrainConfig(model=model)                         # warm-up (imports, timm registry)
        t0 = time.perf_counter()
        TrainConfig(model=model)
        assert time.perf_counter() - t0 < 2.0            # well under 0.5 s on a quiet machine


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['epoch'\]; valid keys are \[.*'epochs'"):
        load_config(None, epoch=3)
    with pytest.raises(ValueError, match=r"\['backbone', 't'\]; the model is described under `model:`"):
        load_config(None, backbone="resnet50", t=3)


def test_mixup_needs_even_batch():
    with pytest.raises(ValueError, match="must be even"):
        TrainConfig(mixup=0.5, batch_size=7)


def test_yaml_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("epochs: 7\nlr_base: 0.2\nmodel: {arch: resnet34, attention: td, t: 3, m: 1}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nepochs: 9\nweight_decay: 1e-3\nmodel: {m: 2}\n")
    cfg = load_config(tmp_path / "b.yaml", batch_size=64, lr=None, model={"td_mode": "top"})
    assert (cfg.epochs, cfg.lr_base, cfg.batch_size) == (9, 0.2, 64)
    assert cfg.weight_decay == 1e-3                  # YAML 1.1 reads '1e-3' as a string: coerced
    assert cfg.model == {"arch": "resnet34", "attention": "td", "t": 3, "m": 2, "td_mode": "top"}
    assert cfg.lr is None and cfg.resolved_lr(world_size=2) == pytest.approx(0.2 * 64 * 2 / 128)
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ValueError, match="circular"):
        load_config(tmp_path / "c.yaml")


def test_every_table1_row_has_a_params_file():
    import csv

    rows = list(csv.DictReader(PAPER_TABLE1.open()))
    assert len(rows) > 20
    files = {p.stem: load_config(p) for p in (params_dir() / "imagenet").glob("[!_]*.yaml")}
    for row in rows:
        attention = row["attention"] or None
        matches = [c for c in files.values() if c.model["arch"] == row["backbone"]
                   and c.model.get("attention") == attention
                   and (attention != "td" or (c.model["td_mode"] == row["td_mode"] and c.model["t"] == int(row["t"])
                                              and c.model["m"] == int(row["m"])
                                              and c.model.get("td_stages", [3, 4]) == [int(s) for s in
                                                                                       row["td_stages"].split("+")]))]
        assert len(matches) == 1, f"Table 1 row {row['backbone']} {row['method']}: {len(matches)} params files"
    assert {"mobilenetv3_large_100_plain", "mobilenetv3_large_100_td_joint_t2_m1"} <= set(files)


def test_paper_recipes():
    r18, r50 = load_config("resnet18_td_joint_t2_m1"), load_config("resnet50_td_joint_t2_m1")
    assert (r18.opt, r18.momentum, r18.weight_decay, r18.warmup_epochs, r18.smoothing) == ("sgd", 0.9, 1e-4, 5, 0.1)
    assert (r18.epochs, r18.mixup, r18.cutmix) == (110, 0.0, 0.0)
    assert (r50.epochs, r50.mixup, r50.cutmix) == (160, 0.5, 0.5)
    assert r50.resolved_lr(world_size=4) == pytest.approx(0.4)           # public command: 4 GPUs x 128, lr 0.4
    cnx = load_config("convnext_tiny_td_joint_t2_m1")
    assert (cnx.opt, cnx.weight_decay, cnx.epochs, cnx.warmup_epochs, cnx.accum_steps) == ("adamw", 0.05, 300, 20, 8)
    assert (cnx.mixup, cnx.cutmix, cnx.reprob, cnx.model["drop_path_rate"], cnx.model_ema_decay) == (
        0.8, 1.0, 0.25, 0.1, 0.9999)
    assert cnx.model == {"arch": "convnext_tiny", "attention": "td", "td_mode": "joint", "t": 2, "m": 1,
                         "drop_path_rate": 0.1, "ls_init_value": 1e-6}
    assert cnx.auto_augment == "rand-m9-mstd0.5-inc1"
    # the official lr, not scaled by the batch (ConvNeXt main.py), with ConvNeXt's warm-up-then-cosine
    assert cnx.resolved_lr(world_size=4) == cnx.resolved_lr(world_size=1) == 4e-3
    assert (cnx.warmup_prefix, cnx.warmup_lr, cnx.min_lr, cnx.lr_step, cnx.cooldown_epochs) == (True, 0.0, 1e-6,
                                                                                              "update", 0)
    # the authors' script's defaults where the paper is silent (timm_td_train.py)
    for cfg in (r18, r50, load_config("mobilenetv3_large_100_td_joint_t2_m1")):
        assert (cfg.lr_step, cfg.warmup_lr, cfg.min_lr, cfg.cooldown_epochs, cfg.color_jitter,
                cfg.train_interpolation, cfg.interpolation, cfg.cudnn_benchmark) == (
            "epoch", 1e-4, 1e-6, 10, 0.4, "random", "bilinear", True)
    # the public README's --epochs 150 / 100, plus the script's 10 cool-down epochs
    readme = load_config(params_dir() / "imagenet" / "readme" / "resnet50_td_joint_t2_m1.yaml")
    assert (readme.epochs, readme.mixup, readme.cutmix, readme.reprob, readme.remode) == (160, 0.7, 1.0, 0.5, "pixel")
    assert load_config(params_dir() / "imagenet" / "readme" / "resnet34_td_joint_t2_m1.yaml").epochs == 110
    r101_l4 = load_config("resnet101_td_joint_t2_m1_L4")
    assert r101_l4.model["td_stages"] == [4] and r101_l4.model_tag() == "resnet101_td_joint_t2_m1_L4"


def test_smoke_profile_overlays_any_model():
    cfg = load_config("resnet50_td_joint_t2_m1", profile="smoke")
    assert cfg.data_dir is None and cfg.mixup == 0 and cfg.img_size == 64 and cfg.profile == "smoke"
    assert cfg.model["arch"] == "resnet50" and cfg.epochs < 10
    assert cfg.model["drop_path_rate"] == 0.0 and cfg.model["attention"] == "td"     # merged key by key


def test_run_name_is_stable_and_semantic():
    r18 = {"arch": "resnet18", "attention": "td"}
    a = load_config(None, profile="smoke", model=r18)
    b = load_config(None, profile="smoke", model=r18, workers=3, progress=False)
    c = load_config(None, profile="smoke", model=r18, seed=1)
    d = load_config(None, profile="smoke", model={**r18, "t": 3})
    assert a.run_name() == b.run_name() != c.run_name()
    assert d.run_name().startswith("resnet18_td_joint_t3_m1-smoke-") and d.run_name() != a.run_name()
    plain = load_config(None, profile="smoke", model={"arch": "resnet18", "attention": "plain"})
    assert plain.model["attention"] is None and plain.model_tag() == "resnet18_plain"
    assert a.run_name() == f"resnet18_td_joint_t2_m1-smoke-e{a.epochs}-{a.identity()}"
    mc = load_config(None, profile="smoke", model=r18, train_on="most_confident")    # what tells runs apart shows
    assert mc.run_name().startswith("resnet18_td_joint_t2_m1-most_confident-smoke-e3-")


def test_parse_overrides():
    assert parse_overrides(["--epochs", "3", "--model.td_stages=[4]", "--compile", "--lr", "1e-3",
                            "--model.attention", "plain", "--data-dir", "/x"]) == {
        "epochs": 3, "model": {"td_stages": [4], "attention": "plain"}, "compile": True, "lr": "1e-3",
        "data_dir": "/x"}
    assert parse_overrides(["--model", "{arch: resnet50, attention: td}", "--model.t", "3"]) == {
        "model": {"arch": "resnet50", "attention": "td", "t": 3}}
    cfg = load_config(None, **parse_overrides(["--lr", "1e-3", "--model.attention", "plain"]))
    assert cfg.lr == 1e-3 and cfg.model == {"arch": "resnet18", "attention": None}
    with pytest.raises(ValueError, match="dotted overrides"):
        parse_overrides(["--model.td.x", "3"])
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
                                   "model": {"m": 5}, "data_dir": str(tmp_path / "does-not-exist")}))
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "model: m (feedback distance of TDBottleneck)=5 is not valid; valid choices are [0, 1, 2, 3]" in err
    assert "does-not-exist" not in err


def test_print_config(capsys):
    assert main(["--config", "resnet18_se", "--profile", "smoke", "--epochs", "2", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"] == {"arch": "resnet18", "attention": "se", "drop_path_rate": 0.0}
    assert printed["epochs"] == 2 and printed["profile"] == "smoke"


def test_missing_data_dir_fails_with_layout(tmp_path, capsys):
    rc = main(["--profile", "smoke", "--data_dir", str(tmp_path / "nope"), "--name", "x"])
    assert rc == EXIT_DATA                                  # bad data has its own exit code (not 2, configuration)
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


def _params_cases():
    """(file, CLI arguments) for every params file the trainer reads; recipes need the model they are shared by."""
    cases = []
    for p in sorted(params_dir().rglob("*.yaml")):
        rel = p.relative_to(params_dir())
        if rel.parts[0] == "transfer" or p.name == "_table2.yaml":
            continue                                     # checked below: transfer configs and the Table 2 index
        if rel.parts[0] == "profiles":
            args = ["--profile", p.stem]
        elif p.name.startswith("_recipe_"):
            arch = "convnext_tiny" if "convnext" in p.name else "resnet18"
            args = ["--config", str(p), "--model.arch", arch]
        else:
            args = ["--config", str(p)]
        cases.append(pytest.param(args, id=str(rel)))
    return cases


@pytest.mark.parametrize("args", _params_cases())
def test_print_config_model_is_what_create_model_receives(args, capsys, monkeypatch):
    """Every params file: ``--print-config`` shows the `model:` mapping, and the trainer passes exactly that mapping
    to tdam.create_model (plus the data's class count unless the mapping names one)."""
    import tdam
    from tdam.train.trainer import build_model

    assert main([*args, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    model = printed["model"]
    assert isinstance(model, dict) and model["arch"] in tdam.models.ARCHS
    overrides = parse_overrides(args[2:]) if args[0] == "--config" else {}
    cfg = load_config(args[1] if args[0] == "--config" else None,
                      profile=args[1] if args[0] == "--profile" else None, **overrides)
    assert cfg.model == model
    received = []
    monkeypatch.setattr(tdam, "create_model", lambda **kw: received.append(kw) or "model")
    assert build_model(cfg, 7) == "model"
    assert received == [{"num_classes": 7, **model}]
    assert "backbone" not in printed and "model_options" not in printed   # one spelling of the model


def test_transfer_params_take_the_model_of_their_backbone_checkpoint(tmp_path):
    from tdam.checkpoint import save_checkpoint
    from tdam.transfer import load_transfer_config

    ckpt = tmp_path / "backbone.pth"
    mc = {"arch": "resnet50", "attention": "td", "num_classes": 1000, "t": 2, "m": 1, "td_mode": "joint"}
    save_checkpoint({"model": {}, "model_config": mc}, ckpt)
    files = sorted((params_dir() / "transfer").glob("[!_]*.yaml"))
    assert len(files) == 18
    for p in files:
        tcfg = load_transfer_config(p, backbone_checkpoint=str(ckpt), output_dir=str(tmp_path / p.stem))
        assert tcfg.train.model == {k: v for k, v in mc.items() if k != "num_classes"}
        assert tcfg.train.model_tag() == "resnet50_td_joint_t2_m1"


def test_table2_index_names_existing_files():
    rows = yaml.safe_load((params_dir() / "ablations" / "_table2.yaml").read_text())["rows"]
    assert len(rows) == 30 and all((params_dir() / "ablations" / r["params"]).is_file() for r in rows)


def test_params_headers_name_existing_paths():
    """Every repository path a params file mentions (tdam/..., notebooks/..., params/...) exists."""
    import re

    from tdam.paths import repo_root

    for p in params_dir().rglob("*"):
        if p.is_file():
            for path in re.findall(r"\b((?:tdam|notebooks|params)/[\w./-]+\.(?:csv|py|ipynb|yaml))", p.read_text()):
                if "<" not in path:
                    assert (repo_root() / path).exists(), f"{p.name} names {path}, which does not exist"


def test_cli_trains_mobilenetv3_with_its_default_placement(tmp_path, shapes_tiny):
    """MobileNetV3 with TD in its default stages 4, 5, 6 (given explicitly too) trains from the CLI."""
    run = tmp_path / "mbv3"
    rc = main(["--config", "mobilenetv3_large_100_td_joint_t2_m1", "--profile", "smoke", "--epochs", "1",
               "--data_size", "tiny", "--img_size", "32", "--batch_size", "8", "--steps_per_epoch", "2",
               "--val_batches", "1", "--model.td_stages", "[4, 5, 6]", "--output_dir", str(run)])
    assert rc == 0
    from tdam.checkpoint import read_checkpoint

    ck = read_checkpoint(run / "last.pth")
    assert ck["model_config"]["arch"] == "mobilenetv3_large_100" and ck["model_config"]["td_stages"] == [4, 5, 6]
    assert ck["config"]["model"]["td_stages"] == [4, 5, 6] and ck["epoch"] == 1


def test_warmup_must_be_shorter_than_the_run(capsys):
    with pytest.raises(ValueError, match=r"^warmup_epochs=3 is not shorter than the run \(epochs=3\)"):
        TrainConfig(epochs=3, warmup_epochs=3)
    with pytest.raises(ValueError, match=r"^warmup_epochs=5 is not shorter than the run \(epochs=2\)"):
        load_config("resnet50_td_joint_t2_m1", epochs=2)
    assert TrainConfig(epochs=3, warmup_epochs=2.5).warmup_epochs == 2.5
    assert TrainConfig(epochs=1, sched="none").epochs == 1          # no schedule: no warm-up to check
    smoke = load_config(None, profile="smoke")
    assert smoke.warmup_epochs < smoke.epochs
    # the check is on the final config: a longer schedule (e.g. a resume with --epochs 10) makes it valid
    assert load_config(None, profile="smoke", epochs=1, warmup_epochs=0.5).epochs == 1
    assert main(["--profile", "smoke", "--epochs", "1", "--warmup_epochs", "1", "--print-config"]) == 2
    assert "error: warmup_epochs=1 is not shorter than the run (epochs=1)" in capsys.readouterr().err


def test_gpu_settings_are_recorded_but_not_part_of_the_runs_identity():
    """cudnn_benchmark and tf32 change which kernels run, not the recipe (like deterministic): the same run folder;
    the recipe's new fields (colour jitter, interpolation, schedule shape) name another run."""
    cfg = load_config("resnet50_td_joint_t2_m1")
    assert cfg.identity() == cfg.replace(cudnn_benchmark=False, tf32=False, deterministic=True).identity()
    for change in ({"color_jitter": None}, {"train_interpolation": "bilinear"}, {"lr_step": "update"},
                   {"cooldown_epochs": 0}, {"warmup_prefix": True}):
        assert cfg.identity() != cfg.replace(**change).identity(), change
