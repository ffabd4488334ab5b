"""Which recipe a request gets (real data: the params file's, as in the paper; embedded data: smoke), and the
resolved recipe in words (``describe_recipe``, the CLI's ``--dry-run``)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tdam.paths import params_dir, repo_root
from tdam.train import TrainConfig, checkpoint_config, describe_recipe, load_config, recipe_for, resolve_profile
from tdam.train.config import load_yaml_with_base
from tdam.train.recipe import train_images, updates_per_epoch


def _count_train_images(imagenet: Path) -> int:
    """Reference count: image files in the class folders of train/."""
    exts = {".jpeg", ".jpg", ".png"}
    return sum(1 for p in (imagenet / "train").glob("*/*") if p.suffix.lower() in exts)


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory):
    """An ImageNet-layout folder (train/<wnid>/, val/<wnid>/) at a temporary path, written by the repo's generator."""
    from tdam.data import make_shapes_dataset, shapes_root

    root = make_shapes_dataset(tmp_path_factory.mktemp("recipe") / "shapes", size="tiny")
    return Path(shapes_root(root, "imagenet"))


def test_resolve_profile():
    assert resolve_profile(None, None) == "smoke"                        # embedded data: the CPU-minute overlay
    assert resolve_profile(None, "/data/imagenet") == "paper"            # real data: the params file's recipe
    assert resolve_profile("smoke", "/data/imagenet") == "smoke"         # a named profile is honoured
    assert resolve_profile("readme", None) == "readme"
    with pytest.raises(ValueError, match="data_dir='': expected a dataset root"):
        resolve_profile(None, "")
    with pytest.raises(ValueError, match=r"profile='': expected a profile name"):
        resolve_profile("", None)


def test_paper_profile_is_an_empty_overlay():
    assert load_yaml_with_base(params_dir() / "profiles" / "paper.yaml") == {}
    plain, paper = load_config("resnet50_td_joint_t2_m1"), load_config("resnet50_td_joint_t2_m1", profile="paper")
    assert paper.profile == "paper" and paper.to_dict() == {**plain.to_dict(), "profile": "paper"}
    assert "-paper-" in paper.run_name()


def test_recipe_for_picks_the_model_file_else_the_arch_recipe():
    assert recipe_for({"arch": "resnet50", "attention": "td"}) == "resnet50_td_joint_t2_m1"
    assert recipe_for({"arch": "resnet18", "attention": "td", "td_mode": "top", "m": 2}) == "resnet18_td_top_t2_m2"
    assert recipe_for({"arch": "resnet34", "attention": "se"}) == "resnet34_se"
    assert recipe_for({"arch": "resnet50", "attention": None}) == "resnet50_plain"
    assert recipe_for({"arch": "resnet50", "attention": "plain"}) == "resnet50_plain"
    assert recipe_for({"arch": "resnet18", "attention": "td", "t": 3}) == "resnet18_plain"   # no t=3 file
    with pytest.raises(ValueError, match=r"no params file for the model .*vit_tiny.*available: \[.*'resnet50_plain'"):
        recipe_for({"arch": "vit_tiny", "attention": "td"})


def test_embedded_default_run_is_unchanged():
    """profile=None on the embedded data is the smoke run the notebooks always trained (same folder name)."""
    r18 = {"arch": "resnet18", "attention": "td"}
    smoke = load_config(None, profile="smoke", model=r18)
    assert checkpoint_config().run_dir() == checkpoint_config("resnet18", "td", "smoke").run_dir() == smoke.run_dir()
    assert checkpoint_config("resnet18", "td").to_dict() == smoke.to_dict()
    assert checkpoint_config("resnet18", "td").run_name().startswith("resnet18_td_joint_t2_m1-smoke-")


def test_real_data_gets_the_params_file_recipe(imagenet_folder):
    file = load_yaml_with_base(params_dir() / "imagenet" / "resnet50_td_joint_t2_m1.yaml")
    cfg = checkpoint_config("resnet50", "td", None, data_dir=str(imagenet_folder))
    assert cfg.profile == "paper" and cfg.data_dir == str(imagenet_folder)
    assert (cfg.epochs, cfg.img_size, cfg.mixup, cfg.cutmix) == (file["epochs"], file["img_size"], file["mixup"],
                                                                 file["cutmix"])
    assert (cfg.epochs, cfg.img_size) == (160, 224)
    assert cfg.run_name().startswith("resnet50_td_joint_t2_m1-paper-")
    # a model without its own file: the architecture's recipe, the model overlaid
    t3 = checkpoint_config("resnet18", "td", None, data_dir=str(imagenet_folder), t=3)
    assert t3.model == {"arch": "resnet18", "attention": "td", "t": 3} and t3.epochs == 110
    # a named profile is honoured on real data: smoke is a quick run of it
    quick = checkpoint_config("resnet50", "td", "smoke", data_dir=str(imagenet_folder))
    assert quick.profile == "smoke" and quick.data_dir == str(imagenet_folder) and quick.epochs == 3


def test_train_images_counts_without_generating(imagenet_folder, shapes_tiny):
    cfg = checkpoint_config("resnet50", "td", None, data_dir=str(imagenet_folder))
    assert train_images(cfg) == _count_train_images(imagenet_folder) > 0
    embedded = checkpoint_config("resnet18", "td", data_size="tiny")
    assert train_images(embedded) == _count_train_images(Path(shapes_tiny) / "imagenet")
    from tdam.data import DatasetLayoutError

    with pytest.raises(DatasetLayoutError, match="train/"):
        train_images(cfg.replace(data_dir=str(imagenet_folder / "nope")))


def test_updates_per_epoch_rule():
    cfg = TrainConfig(batch_size=16, accum_steps=2, steps_per_epoch=None)
    assert updates_per_epoch(cfg, 1000) == (1000 // 32, 1000 // 32)
    assert updates_per_epoch(cfg, 1000, world_size=3) == (334 // 16 // 2,) * 2       # ceil(1000 / 3) per process
    assert updates_per_epoch(cfg.replace(steps_per_epoch=5), 1000) == (5, 31)


def test_describe_recipe_states_the_resolved_recipe(imagenet_folder):
    cfg = checkpoint_config("resnet50", "td", None, data_dir=str(imagenet_folder), batch_size=16)
    n = _count_train_images(imagenet_folder)
    per_epoch = n // 16
    text = describe_recipe(cfg)
    lines = dict(line.split(":", 1) for line in text.splitlines())
    lines = {k: v.strip() for k, v in lines.items()}
    assert lines["model"].startswith("resnet50_td_joint_t2_m1")
    assert lines["data"] == f"imagenet at {imagenet_folder}; {n} training images"
    assert lines["profile"] == "paper" and lines["epochs"] == "160" and lines["image size"] == "224 px"
    assert lines["batch"] == "global 16 = 16 per process x 1 process x 1 accumulation step"
    assert lines["lr"].startswith(f"{0.1 * 16 / 128:.4g} (lr_base 0.1 x global batch 16 / 128)")
    assert lines["updates"] == f"{per_epoch} per epoch, {per_epoch * 160} in total"
    assert lines["warm-up"] == ("5 epochs from lr 0.0001, then cosine over 150 epochs (warm-up inside) to 1e-06, "
                                "stepped per epoch; then 10 epochs at 1e-06")
    assert lines["device"] == "cpu" and lines["run folder"] == str(cfg.run_dir())
    capped = describe_recipe(checkpoint_config("resnet18", "td"))           # smoke: 25 of 2400 // 32 = 75
    assert "updates:     25 (capped by steps_per_epoch 25; a whole pass is 75) per epoch, 75 in total" in capped
    assert "data:        embedded tdam-shapes (default, imagenet layout); 2400 training images" in capped
    assert "lr:          0.025 (lr_base 0.1 x global batch 32 / 128)" in capped
    with pytest.raises(ValueError, match="gpus"):
        describe_recipe(cfg, gpus=-1)


@pytest.mark.slow
def test_cli_dry_run_prints_the_recipe_and_trains_nothing(imagenet_folder, tmp_path):
    cfg = checkpoint_config("resnet50", "td", None, data_dir=str(imagenet_folder), config="resnet50_td_joint_t2_m1")
    env = {**os.environ, "PYTHONPATH": str(repo_root()), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-m", "tdam.train", "--config", "resnet50_td_joint_t2_m1", "--data_dir",
                           str(imagenet_folder), "--dry-run"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "epochs:      160" in done.stdout and "image size:  224 px" in done.stdout
    # real data without a profile: the file's recipe, named 'paper' as notebook 01 names it -- the same run folder,
    # so a run trained from the command line is the cached run the notebooks evaluate
    run_dir = load_config("resnet50_td_joint_t2_m1", profile="paper", data_dir=str(imagenet_folder)).run_dir()
    assert "-paper-" in run_dir.name and run_dir == cfg.run_dir()
    assert f"run folder:  {run_dir}" in done.stdout and "profile:     paper" in done.stdout
    assert not run_dir.exists()


def test_dry_run_builds_no_data(imagenet_folder, monkeypatch, capsys):
    import tdam.train.data as data
    import tdam.train.trainer as trainer
    from tdam.train.cli import main

    def forbidden(*a, **k):
        raise AssertionError("--dry-run built the data or started training")

    for module, name in ((data, "build_datasets"), (data, "build_loaders"), (trainer, "train")):
        monkeypatch.setattr(module, name, forbidden)
    assert main(["--config", "resnet18_td_joint_t2_m1", "--data_dir", str(imagenet_folder), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model:       resnet18_td_joint_t2_m1") and "epochs:      110" in out


def test_describe_recipe_says_when_the_data_is_too_small(imagenet_folder):
    cfg = checkpoint_config("resnet50", "td", None, data_dir=str(imagenet_folder))      # batch 128 > tiny train split
    assert _count_train_images(imagenet_folder) < 128
    assert "updates:     0 (too few training images for one update of the global batch 128" in describe_recipe(cfg)


def test_dry_run_without_the_data_assumes_imagenets_size_and_shows_transforms_and_lrs(tmp_path, capsys):
    from tdam.train.cli import main

    missing = tmp_path / "no-imagenet-here"
    assert main(["--config", "resnet50_td_joint_t2_m1", "--data_dir", str(missing), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (f"1281167 training images (assumed: ImageNet-1k's 1,281,167 training images; {missing} does not exist)"
            in out)
    assert "updates:     10009 per epoch, 1601440 in total" in out              # 1281167 // 128
    train_part = out[out.index("train transform:"):out.index("eval transform:")]
    assert "interpolation=bilinear bicubic" in train_part and "ColorJitter(brightness=(0.6, 1.4)" in train_part
    eval_part = out[out.index("eval transform:"):out.index("lr at the first update")]
    assert "Resize(size=256, interpolation=bilinear" in eval_part and "CenterCrop(size=(224, 224))" in eval_part
    lrs = dict(cell.split(": ") for line in out[out.index("lr at the first update"):].splitlines()[1:]
               for cell in line.strip().split(", "))
    assert len(lrs) == 160 and lrs["1"] == "0.0001" and lrs["2"] == "0.02008" and lrs["151"] == lrs["160"] == "1e-06"
    assert not (tmp_path / "runs").exists()


def test_explain_names_the_source_of_every_field(capsys):
    from dataclasses import fields

    from tdam.train.cli import main

    assert main(["--config", "resnet50_td_joint_t2_m1", "--epochs", "170", "--explain"]) == 0
    lines = {line.split(":", 1)[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == {f.name for f in fields(TrainConfig)}
    assert "[authors' script] --warmup-lr default 1e-4 (timm_td_train.py L141)" in lines["warmup_lr"]
    assert "[paper]" in lines["weight_decay"] and "[tdam]" in lines["amp"] and "bf16" in lines["amp"]
    assert ("[override] not the recipe's value (recipe: 160): set by the profile 'paper' or an override"
            in lines["epochs"])
    assert main(["--config", "convnext_tiny_td_joint_t2_m1", "--explain"]) == 0
    lines = {line.split(":", 1)[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "[official code]" in lines["lr"] and "not scaled" in lines["lr"]
    assert "[official code]" in lines["warmup_prefix"] and "[official code]" in lines["model_ema"]


def test_readme_has_the_provenance_tables():
    from tdam.train.provenance import provenance_table

    readme = (repo_root() / "README.md").read_text()
    for family in ("resnet", "convnext"):
        assert provenance_table(family) in readme, f"README: regenerate the {family} table (provenance_table)"
