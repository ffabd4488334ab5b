"""``train_on: most_confident`` (supplement §1.1): each sample's loss on the logits of its most confident TD step.

The loss and every gradient equal a reference written here (per-sample argmax over steps of the max-softmax, then
cross-entropy on those logits), with label smoothing and with Mixup soft targets; resume stays bit-identical; 2 gloo
processes equal 1 process (drill tier); a model without TD blocks is a configuration error.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tdam
from tdam.checkpoint import read_checkpoint
from tdam.train import ClassificationTask, load_config, train

from helpers import spawn_ranks
from test_train_distributed import _datasets
from test_train_engine import REF, assert_same_run, tiny_cfg

NUM_CLASSES, SMOOTHING = 5, 0.1


def _model_and_batch():
    torch.manual_seed(0)
    model = tdam.create_model("resnet18", attention="td", t=3, num_classes=NUM_CLASSES).train()
    with torch.no_grad():   # per-step norms away from their init, so that samples pick different steps
        for name, p in model.named_parameters():
            if name.startswith("layer4") and name.endswith(("_1.weight", "_2.weight")):
                p.normal_(1.0, 0.5)
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(8, 3, 32, 32, generator=g), torch.arange(8) % NUM_CLASSES


def _reference_loss(model, images, soft_targets):
    """Direct computation: every step's logits, per-sample argmax of the max-softmax, soft-target cross-entropy."""
    steps = torch.stack(model.forward_steps(images))                        # (t, B, C)
    conf = torch.stack([F.softmax(s.detach(), dim=1).max(dim=1).values for s in steps])   # (t, B)
    chosen = torch.stack([steps[int(conf[:, i].argmax()), i] for i in range(images.shape[0])])
    loss = -(soft_targets * F.log_softmax(chosen, dim=1)).sum(dim=1).mean()
    return loss, conf.argmax(dim=0)


def _smoothed(y):
    return F.one_hot(y, NUM_CLASSES).float() * (1 - SMOOTHING) + SMOOTHING / NUM_CLASSES


def _assert_same_loss_and_grads(task_kw, reference_targets):
    model, x, y = _model_and_batch()
    ref_model = copy.deepcopy(model)
    np.random.seed(7)                                                       # timm Mixup draws from numpy
    loss, _ = ClassificationTask(NUM_CLASSES, train_on="most_confident", **task_kw).loss(model, x.clone(), y)
    loss.backward()
    ref_x, soft = reference_targets(x, y)
    ref_loss, best = _reference_loss(ref_model, ref_x, soft)
    ref_loss.backward()
    assert best.unique().numel() > 1, f"steps {best.tolist()}: the test would not tell the rule from a fixed step"
    torch.testing.assert_close(loss, ref_loss)
    grads = [(n, p.grad, dict(ref_model.named_parameters())[n].grad) for n, p in model.named_parameters()]
    assert all(g is not None for _, g, _ in grads)
    for name, got, want in grads:
        torch.testing.assert_close(got, want, msg=lambda m: f"{name}: {m}")
    # the running statistics moved as the reference's (same passes, same batch statistics)
    for (n, a), b in zip(model.named_buffers(), ref_model.buffers()):
        torch.testing.assert_close(a, b, msg=lambda m: f"{n}: {m}")


def test_loss_and_grads_equal_reference_with_label_smoothing():
    _assert_same_loss_and_grads(dict(smoothing=SMOOTHING), lambda x, y: (x, _smoothed(y)))


def test_loss_and_grads_equal_reference_with_mixup_targets():
    def mixed(x, y):        # timm's batch Mixup, with the lambda drawn from the same numpy stream as the task's
        np.random.seed(7)
        np.random.rand()                                                    # timm: mix_prob draw (prob 1)
        lam = float(np.random.beta(0.8, 0.8))
        return x * lam + x.flip(0) * (1 - lam), _smoothed(y) * lam + _smoothed(y.flip(0)) * (1 - lam)
    _assert_same_loss_and_grads(dict(smoothing=SMOOTHING, mixup=0.8), mixed)


def test_last_is_the_model_output_and_differs_from_most_confident():
    model, x, y = _model_and_batch()
    last, out = ClassificationTask(NUM_CLASSES, smoothing=0.0).loss(model, x, y)
    torch.testing.assert_close(out, model(x))
    mc, _ = ClassificationTask(NUM_CLASSES, smoothing=0.0, train_on="most_confident").loss(model, x, y)
    assert mc.item() != pytest.approx(last.item())


def test_most_confident_needs_td_blocks_and_a_valid_choice():
    with pytest.raises(ValueError, match="needs a TD model"):
        load_config(None, model={"arch": "resnet18"}, train_on="most_confident")
    with pytest.raises(ValueError, match=r"train_on='best' is not valid; valid choices are \['last', 'most_conf"):
        load_config(None, model={"arch": "resnet18", "attention": "td"}, train_on="best")
    plain = tdam.create_model("resnet18", num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="needs a model with TD blocks"):
        ClassificationTask(NUM_CLASSES, train_on="most_confident").loss(plain, torch.randn(2, 3, 32, 32),
                                                                         torch.tensor([0, 1]))
    assert load_config(None).train_on == "last"


@pytest.mark.slow
def test_resume_bit_identical_with_most_confident(shapes_tiny):
    """Uninterrupted vs stopped after 4 updates (mid-epoch 2) and resumed, Mixup/CutMix, EMA, drop-path RNGs on."""
    kw = dict(REF, train_on="most_confident")
    full = train(tiny_cfg("mc-full", **kw))
    cut = train(tiny_cfg("mc-cut", **kw), stop_at_step=4)
    assert cut.interrupted
    resumed = train(tiny_cfg("mc-cut", resume=True, **kw))
    assert not resumed.interrupted
    assert_same_run(read_checkpoint(full.last_checkpoint), read_checkpoint(resumed.last_checkpoint))
    assert read_checkpoint(full.last_checkpoint)["config"]["train_on"] == "most_confident"


K, B = 3, 8


def _ddp_cfg(name: str, batch_size: int, runs: str):
    return load_config(None, model={"arch": "convnext_tiny", "attention": "td"}, epochs=1, steps_per_epoch=K,
                       batch_size=batch_size, lr=0.05, warmup_epochs=0, workers=0, progress=False, name=name,
                       output_dir=f"{runs}/{name}", seed=3, train_on="most_confident")


def _train_rank(world: int, runs: str) -> None:
    assert not train(_ddp_cfg("ddp", B // world, runs), datasets=_datasets()).interrupted


@pytest.mark.drill
def test_two_gloo_processes_equal_one_process_with_most_confident(tmp_path):
    """As tests/test_train_distributed.py (TD-ConvNeXt-T: LayerNorm, so samples are independent), option on."""
    runs = str(tmp_path)
    spawn_ranks(_train_rank, 2, runs)
    single = train(_ddp_cfg("single", B, runs), datasets=_datasets())
    a, b = read_checkpoint(single.last_checkpoint), read_checkpoint(tmp_path / "ddp" / "last.pth")
    assert a["step"] == b["step"] == K and b["world_size"] == 2
    assert b["config"]["train_on"] == "most_confident"
    assert any(".td." in k for k in a["model"])
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=2e-6, msg=lambda m: f"{k}: {m}")
    ha, hb = a["metrics"]["history"][0], b["metrics"]["history"][0]
    for key in ("train_loss", "val_loss", "val_top1"):
        assert hb[key] == pytest.approx(ha[key], rel=1e-4, abs=1e-4), key


def test_ablation_index_lists_the_most_confident_row_beside_tdj_m1_without_paper_numbers():
    import tdam.notebook as nb
    from tdam.evaluation.ablations import table2_entries
    from tdam.reference import ablation_table

    paper_only = table2_entries(["mode_and_distance"])
    assert all(e["paper_row"] for e in paper_only)
    entries = table2_entries(["mode_and_distance"], ["TDj(m1)", "TDj(m1) most-confident"], extras=True)
    assert [(e["row"], e["paper_row"]) for e in entries] == [("TDj(m=1)", True), ("TDj(m=1) most-confident", False)]
    last, mc = (nb.ablation_config(e, profile="smoke") for e in entries)
    assert (last.train_on, mc.train_on) == ("last", "most_confident")
    assert mc.replace(train_on="last").to_dict() == last.to_dict()            # only train_on differs
    assert mc.run_name() != last.run_name()                                   # so they are two cached runs
    rows = [{"set": e["set"], "row": e["row"], "params_M": 25.0, "gflops": 4.0, "v1_top1": 70.0, "v1_top5": 90.0,
             "backbone": "resnet50", "data": "imagenet", "img_size": 224, "num_classes": 1000, "t_eval": 2,
             "v1_images": 50_000} for e in entries]
    tab = ablation_table(rows).set_index("row")
    assert tab.loc["TDj(m=1)", "paper_v1_top1"] == tab.loc["TDj(m=1)", "paper_v1_top1"]     # a number
    assert tab.loc["TDj(m=1) most-confident", ["paper_v1_top1", "diff_v1_top1", "diff_gflops"]].isna().all()
    assert nb.parameters("04_ablations", rows=["TDj(m1) most-confident"]).rows == ["TDj(m1) most-confident"]
