"""One-pass TD evaluation on real tdam models against direct computations."""
import numpy as np
import pandas as pd
import pytest
import torch
from test_eval_unique_box import ref_unique_box

import tdam
from tdam.cam import boxes_from_maps, gap_fc_weight, step_maps
from tdam.evaluation import evaluate
from tdam.evaluation.classification import accuracy_vs_steps, batch_metrics
from tdam.models import is_td_model
from tdam.metrics import topk_correct


def _batches(n_batches=3, bs=6, size=64, n_cls=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, 3, size, size, generator=g), torch.randint(0, n_cls, (bs,), generator=g))
            for _ in range(n_batches)]


def _perturb_bn(model, seed=0):
    """Random BN statistics/affines so that random-init models give varied, non-degenerate predictions and maps."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
    return model.eval()


@pytest.fixture(scope="module")
def td_resnet():
    torch.manual_seed(0)
    return _perturb_bn(tdam.create_model("resnet18", attention="td", num_classes=12, t=3, m=1, td_mode="joint"))


def test_last_equals_plain_topk_and_steps(td_resnet):
    loader = _batches()
    res = evaluate(td_resnet, loader, topk=(1, 5))
    with torch.no_grad():
        ref = torch.cat([topk_correct(td_resnet(x), y, (1, 5)) for x, y in loader]).numpy()
    np.testing.assert_array_equal(res.correct["last"], ref)
    assert set(res.correct) == {"last", "most_confident", "unique_box"}
    # accuracy against t: the one-pass table at the trained t is `last`, and so is the model.steps(k) path
    steps = res.steps_table()
    assert steps.steps.tolist() == [1, 2, 3]
    assert steps.iloc[-1].top1 == pytest.approx(res.accuracy("last", 1))
    assert steps.iloc[-1].top5 == pytest.approx(res.accuracy("last", 5))
    ind = accuracy_vs_steps(td_resnet, loader, steps=[1, 2, 3])
    pd.testing.assert_frame_equal(ind, steps, check_dtype=False)


def test_three_metrics_match_direct_computation(td_resnet):
    x, y = _batches(1, bs=10, seed=3)[0]
    got = batch_metrics(td_resnet, x, y, (1, 5))
    w = gap_fc_weight(td_resnet)
    assert w is not None  # ResNet head: GAP + FC -> CAM
    with torch.no_grad():
        outs = td_resnet.forward_steps(x, features=True)
    logits = torch.stack([lg for _, lg in outs])
    boxes = []
    for f, lg in outs:  # CAM per image, one at a time
        per = []
        for i in range(x.shape[0]):
            c = lg[i].argmax()
            cam = (w[c][:, None, None] * f[i]).sum(0).clamp_min(0)
            per.append(boxes_from_maps(cam[None], size=(64, 64))[0])
        boxes.append(torch.stack(per))
    boxes = torch.stack(boxes)
    ref_ub = ref_unique_box(logits.double().numpy(), boxes.numpy(), y.numpy())
    np.testing.assert_array_equal(got["unique_box"].numpy(), ref_ub)
    p = logits.softmax(-1).amax(-1)
    best = p.argmax(0)
    ref_mc = topk_correct(logits[best, torch.arange(10)], y, (1, 5))
    np.testing.assert_array_equal(got["most_confident"].numpy(), ref_mc.numpy())
    np.testing.assert_array_equal(got["last"].numpy(), topk_correct(td_resnet(x), y, (1, 5)).numpy())


def test_gradcam_path_for_non_gap_fc_head():
    torch.manual_seed(1)
    model = _perturb_bn(tdam.create_model("mobilenetv3_large_100", attention="td", num_classes=7, t=2))
    assert gap_fc_weight(model) is None and is_td_model(model)
    x = torch.randn(3, 3, 64, 64)
    logits, cams = step_maps(model, x)
    assert logits.shape == (2, 3, 7) and cams.shape[:2] == (2, 3)
    for k in range(2):  # Grad-CAM per image through the whole network
        for i in range(3):
            xi = x[i:i + 1]
            f, lg = model.forward_steps(xi, features=True)[k]
            c = logits[k, i].argmax()
            (g,) = torch.autograd.grad(lg[0, c], f)
            ref = (g.mean(dim=(2, 3))[0][:, None, None] * f[0]).sum(0).clamp_min(0)
            torch.testing.assert_close(cams[k, i], ref.detach(), rtol=1e-4, atol=1e-5)


def test_plain_model_and_per_class():
    torch.manual_seed(2)
    model = _perturb_bn(tdam.create_model("resnet18", num_classes=12))
    assert not is_td_model(model)
    loader = _batches(2, bs=8, seed=5)
    res = evaluate(model, loader)
    assert set(res.correct) == {"last"} and res.step_correct is None
    with pytest.raises(ValueError, match="TD model"):
        res.steps_table()
    names = [f"c{i}" for i in range(12)]
    pc = res.per_class(names)
    assert len(pc) == 12 and pc.class_name.tolist() == names
    with torch.no_grad():
        preds = torch.cat([model(x).argmax(1) for x, _ in loader])
    tg = torch.cat([y for _, y in loader])
    df = pd.DataFrame({"t": tg.numpy(), "ok": (preds == tg).numpy()})
    ref = df.groupby("t").ok.mean() * 100
    for c, v in ref.items():
        assert pc.loc[c, "last_top1"] == pytest.approx(v)
    assert pc.images.sum() == 16
    top1 = float((preds == tg).float().mean()) * 100
    assert res.summary().set_index("key").loc["last", "top1"] == pytest.approx(top1)


def test_class_count_mismatch_is_refused_before_any_forward_pass(shapes_tiny):
    from tdam.evaluation import ClassCountError, eval_dataset, eval_loader

    torch.manual_seed(0)
    model = tdam.create_model("resnet18", num_classes=3)
    model.register_forward_pre_hook(lambda *_: pytest.fail("the model ran before the class-count check"))
    root = shapes_tiny / "imagenet"
    loader = eval_loader(eval_dataset("imagenet", root, img_size=32), batch_size=4, max_images=8)
    with pytest.raises(ClassCountError) as err:
        evaluate(model, loader)
    assert isinstance(err.value, ValueError)
    assert str(err.value) == (f"the model predicts 3 classes but {root} has 12: evaluate it on the data it was "
                              "trained on")


def test_class_count_of_models():
    from tdam.evaluation.classes import model_num_classes

    assert model_num_classes(tdam.create_model("resnet18", num_classes=7)) == 7
    head_only = torch.nn.Module()
    head_only.get_classifier = lambda: torch.nn.Linear(4, 5)
    assert model_num_classes(head_only) == 5
    with pytest.raises(ValueError, match="cannot tell how many classes Linear predicts"):
        model_num_classes(torch.nn.Linear(2, 2))
