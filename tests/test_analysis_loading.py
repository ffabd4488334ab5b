"""Checkpoint -> model + evaluation data for notebooks 05, 06, 09, and their parameter validation."""
from __future__ import annotations

import pytest
import torch

import tdam.notebook as nb
from tdam.evaluation.data import (
    choose_images,
    crop_boxes,
    crop_objects,
    load_run,
    localization_batches,
    model_label,
    sample_indices,
    two_object_indices,
)
from tdam.evaluation.provenance import run_facts


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shapes_tiny):
    from tdam import create_model
    from tdam.checkpoint import save_checkpoint
    from tdam.train.config import TrainConfig

    cfg = TrainConfig(model={"arch": "resnet18", "num_classes": 12}, img_size=64, data_size="tiny", epochs=1,
                      warmup_epochs=0)
    torch.manual_seed(0)
    model = create_model("resnet18", attention="td", num_classes=12)
    path = tmp_path_factory.mktemp("ckpt") / "td.pth"
    save_checkpoint({"model": model.state_dict(), "model_config": model.model_config, "config": cfg.to_dict(),
                     "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def run(checkpoint):
    return load_run(checkpoint)


def test_load_run_rebuilds_model_and_data(run, shapes_tiny):
    assert run.label == "resnet18 TD-joint t2 m1" == model_label(run.model_config)
    assert not run.model.training
    assert run.data_dir is None  # the embedded data: not the paper's setting
    facts = run_facts(run, len(run.dataset))
    assert facts.paper_setting("table3").reason == (
        "resnet18 TD-joint t2 m1 is not a model of Table 3 (resnet50 plain, resnet50 TD-top t2 m3, resnet50 TD-joint "
        "t2 m1); embedded tdam-shapes data, not ImageNet; 12 classes, not ImageNet's 1000; evaluated at 64 px, not the "
        f"paper's 224 px; {len(run.dataset)} ImageNet-V1 val images evaluated, not the whole split's 50,000")
    assert facts.paper_setting("table1").model_row["method"] == "TDjoint(t=2;m=1)" and facts.paper_setting().row is None
    assert (facts.run, facts.epochs, facts.t_eval, facts.data) == ("ckpt0", 1, 2, "embedded")
    assert run.dataset.root == shapes_tiny / "imagenet" and run.dataset.split == "val"
    x, y = run.dataset[0]
    assert x.shape == (3, 64, 64)
    assert len(run.class_names) == 12


def test_crop_boxes_follow_the_eval_geometry(run):
    from tdam.data import map_boxes

    for i in range(len(run.dataset)):
        boxes = crop_boxes(run, i)
        w, h = run.dataset.image_size(i)
        ref, keep = map_boxes(run.dataset.boxes(i), (w, h), 73, 64, return_keep=True)  # floor(64 / 0.875) = 73
        assert torch.equal(boxes, ref[keep].long())
        assert ((boxes >= 0) & (boxes <= 63)).all()


def test_two_object_images_and_choice(run):
    two = two_object_indices(run)
    ds = run.dataset
    assert two == [i for i in range(len(ds)) if len({o["label"] for o in ds.all_objects(i)}) > 1]
    assert two, "the tiny embedded data should hold two-object images"
    objs = crop_objects(run, two[0])
    assert sum(primary for _, _, primary in objs) == 1
    picked = choose_images(run, min(2, len(two)), seed=1)
    assert set(picked) <= set(two) and picked == sorted(picked)
    assert picked == choose_images(run, min(2, len(two)), seed=1)
    assert choose_images(run, 1, indices=[3, 0]) == [3, 0]
    with pytest.raises(ValueError, match="out of range"):
        choose_images(run, 1, indices=[len(ds)])
    with pytest.raises(ValueError, match="only"):
        choose_images(run, len(two) + 1)


def test_sample_indices_spread_over_classes(run):
    n = len(run.dataset)
    assert sample_indices(run, 0) == list(range(n))
    s = sample_indices(run, n // 2, seed=3)
    assert len(s) == n // 2 == len(set(s)) and s == sample_indices(run, n // 2, seed=3)
    assert len({run.dataset.targets[i] for i in s}) > 6  # not just the first classes


def test_localization_batches(run):
    idx = list(range(5))
    batches = list(localization_batches(run, idx, 2))
    assert [len(b[1]) for b in batches] == [2, 2, 1]
    images, labels, boxes = batches[0]
    assert images.shape == (2, 3, 64, 64) and labels.tolist() == [run.dataset.targets[0], run.dataset.targets[1]]
    assert torch.equal(boxes[1], crop_boxes(run, 1))


def test_params_validation():
    p = nb.parameters("05_attention_shift")
    assert p.backbone == "resnet18" and p.num_images == 4 and p.as_dict()["two_objects"] is True
    assert p.checkpoint is None and p.baseline_checkpoint is None  # '' in the parameters cell: not given
    with pytest.raises(ValueError, match="backbone='vgg'.*choices"):
        nb.parameters("05_attention_shift", backbone="vgg")
    with pytest.raises(ValueError, match="no such file"):
        nb.parameters("06_weak_localization", checkpoint="/nonexistent.pth")
    with pytest.raises(ValueError, match="split"):
        nb.parameters("06_weak_localization", split="test2")
    with pytest.raises(ValueError, match="num_figure_images"):
        nb.parameters("06_weak_localization", num_figure_images=0)
    with pytest.raises(ValueError, match="choices"):
        nb.parameters("09_feature_selectivity", backbone="convnext_tiny")  # selectivity blocks are ResNet blocks
    with pytest.raises(ValueError, match="block 1 changes the size"):
        nb.parameters("09_feature_selectivity", layer4_blocks=[1])
    with pytest.raises(ValueError, match="image_indices"):
        nb.parameters("05_attention_shift", image_indices=[-1])
    with pytest.raises(nb.UnknownParameterError, match="has no parameter 'tt' \\(did you mean 't'\\?\\)"):
        nb.parameters("05_attention_shift", tt=3)
    assert nb.parameters("05_attention_shift", t=3).t == 3      # the steps at evaluation
    with pytest.raises(ValueError, match="plain backbone has a single computation step"):
        nb.parameters("05_attention_shift", attention="plain", t=2)
    assert nb.parameters("06_weak_localization", max_images=0).max_images is None  # 0 and None: every image


def test_selectivity_block_choice():
    from tdam import create_model
    from tdam.evaluation.selectivity import selectivity_blocks

    model = create_model("resnet34", num_classes=3)
    assert selectivity_blocks(model, [], [2, 4]) == {4: [1, 2], 3: [1, 3]}
    assert selectivity_blocks(model) == {4: [1, 2], 3: [1, 2, 3, 4, 5]}


def test_attention_shift_tables(run):
    from tdam.cam import grad_cam_steps
    from tdam.evaluation.attention_shift import object_rates, steps_table, two_object_targets
    from tdam.evaluation.data import load_images

    two = two_object_indices(run)[:3]
    t = two_object_targets(run, two)
    for j, i in enumerate(two):
        objs = {primary: (name, box) for name, box, primary in crop_objects(run, i)}
        assert run.class_names[int(t["primary_label"][j])] == objs[True][0]
        assert t["primary_box"][j].tolist() == objs[True][1]
        assert t["other_box"][j].tolist() == objs[False][1]
    rates = object_rates(run, two, batch_size=2)
    assert rates["step"].tolist() == [1, 2] and (rates["n_images"] == len(two)).all()
    assert rates.loc[0, "shift_from_step1"] == 0.0
    values = rates[["pred_primary", "pred_other", "box_on_primary", "box_on_other", "shift_from_step1"]].to_numpy()
    assert ((values >= 0) & (values <= 100)).all()
    # the rates are fractions of images, e.g. pred_primary = % of images predicted as the labelled class
    images, labels = load_images(run, two)
    steps = grad_cam_steps(run.model, images)
    for k, s in enumerate(steps):
        assert rates.loc[k, "pred_primary"] == pytest.approx((s.prediction == labels).float().mean().item() * 100)
    assert object_rates(run, []).empty
    table = steps_table({"td": steps}, labels, run.class_names, two, (64, 64))
    assert len(table) == 2 * len(two) and set(table["step"]) == {1, 2}
    assert table["correct"].tolist() == [bool(s.prediction[j] == labels[j]) for s in steps for j in range(len(two))]


def _checkpoint(path, num_classes, data_dir):
    from tdam import create_model
    from tdam.checkpoint import save_checkpoint
    from tdam.train.config import TrainConfig

    cfg = TrainConfig(model={"arch": "resnet18", "num_classes": num_classes}, img_size=64, data_size="tiny",
                      epochs=1, warmup_epochs=0).to_dict()
    cfg["data_dir"] = data_dir
    model = create_model("resnet18", num_classes=num_classes)
    save_checkpoint({"model": model.state_dict(), "model_config": model.model_config, "config": cfg, "epoch": 1},
                    path)
    return path


def test_load_run_refuses_data_with_another_class_count(tmp_path, shapes_tiny):
    from tdam.evaluation import ClassCountError

    root = shapes_tiny / "imagenet"
    ckpt = _checkpoint(tmp_path / "user.pth", 3, "/data/user-3cls")
    with pytest.raises(ClassCountError) as err:
        load_run(ckpt, data_dir=str(root))
    assert str(err.value) == (f"the model predicts 3 classes but {root} has 12: evaluate it on the data it was "
                              "trained on (data_dir='/data/user-3cls')")
    with pytest.raises(ClassCountError, match="data_dir=None: the embedded tdam-shapes data"):
        load_run(_checkpoint(tmp_path / "emb.pth", 3, None))


def test_class_count_check_names_the_training_data():
    from tdam import create_model
    from tdam.evaluation import ClassCountError, eval_dataset
    from tdam.evaluation.data import check_data, trained_on

    assert trained_on({"data_dir": None}) == "data_dir=None: the embedded tdam-shapes data"
    assert trained_on({"data_dir": "/data/in1k"}) == "data_dir='/data/in1k'"
    authors = create_model("resnet18")          # 1000 classes, no trainer run config
    from tdam.data import dataset_root

    ds = eval_dataset("imagenet", dataset_root("imagenet", None, size="tiny"), img_size=32)
    with pytest.raises(ClassCountError, match="predicts 1000 classes .* has 12: .*records no training data: give "
                                              "data_dir=<the folder it was trained on>"):
        check_data(authors, ds, {})


def test_v2_only_for_a_given_folder_or_an_all_embedded_run(shapes_tiny, tmp_path):
    from tdam.evaluation import v2_root

    embedded = {"dataset": "imagenet", "data_dir": None, "data_size": "tiny"}
    real = {**embedded, "data_dir": "/data/imagenet"}
    assert v2_root(str(tmp_path), None, real) == (tmp_path, f"ImageNet-V2 from {tmp_path}")
    root, why = v2_root(None, None, embedded)
    assert root == shapes_tiny / "imagenet_v2" and root.is_dir() and why.startswith("the embedded ImageNet-V2")
    assert v2_root(None, None, real) == (None, "no v2_dir given and the model was not trained on the embedded data: "
                                               "ImageNet-V2 skipped")
    assert v2_root(None, "/data/imagenet", embedded)[0] is None      # trained on embedded, evaluated elsewhere
    assert v2_root("", "", {**embedded, "dataset": "cub200"})[1].startswith(
        "no v2_dir given and the model was trained on cub200, not ImageNet")
