"""Feature selectivity against direct double-loop references written here."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tdam.evaluation.selectivity import collect_selectivity, default_selectivity_blocks
from tdam.metrics.selectivity import (
    input_entropy,
    minmax_spatial,
    output_entropy,
    pairwise_rho,
    rho_mean,
)


def _ref_norm(m: torch.Tensor) -> torch.Tensor:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)


def _ref_entropy(v: torch.Tensor) -> float:
    p = [math.exp(a) for a in v.tolist()]
    s = sum(p)
    return -sum(q / s * math.log(q / s) for q in p)


@pytest.fixture
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64)
    y = torch.randn(3, 7, 5, 6, generator=g, dtype=torch.float64).relu()
    y[1, 2] = 0.5  # a constant output channel normalises to zeros
    return x, y


def test_rho_equals_double_loop(xy):
    x, y = xy
    n, ci, co = x.shape[0], x.shape[1], y.shape[1]
    rho = pairwise_rho(x, y)
    raw = pairwise_rho(x, y, normalise=False)
    for b in range(n):
        total = 0.0
        for i in range(ci):
            for j in range(co):
                ref = (_ref_norm(x[b, i]) * _ref_norm(y[b, j])).sum()
                ref_raw = (x[b, i] * y[b, j]).sum()
                assert rho[b, i, j].item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)
                assert raw[b, i, j].item() == pytest.approx(ref_raw.item(), rel=1e-12, abs=1e-12)
                total += ref.item()
        assert rho_mean(x, y)[b].item() == pytest.approx(total / (ci * co), rel=1e-12)
    assert torch.all(rho[1, :, 2] == 0)


def test_input_entropy_equals_double_loop(xy):
    x, y = xy
    h = input_entropy(x, y)
    assert h.shape == (x.shape[0], y.shape[1])
    for b in range(x.shape[0]):
        for j in range(y.shape[1]):
            raw = torch.tensor([(x[b, i] * y[b, j]).sum().item() for i in range(x.shape[1])], dtype=torch.float64)
            assert h[b, j].item() == pytest.approx(_ref_entropy(raw), rel=1e-9)


def test_output_entropy_equals_loop(xy):
    _, y = xy
    h = output_entropy(y)
    for b in range(y.shape[0]):
        peaks = torch.tensor([y[b, c].max().item() for c in range(y.shape[1])], dtype=torch.float64)
        assert h[b].item() == pytest.approx(_ref_entropy(peaks), rel=1e-9)
    # uniform peaks give the maximum entropy ln(C)
    assert output_entropy(torch.ones(1, 8, 2, 2))[0].item() == pytest.approx(math.log(8))


def test_minmax_range_and_errors(xy):
    x, _ = xy
    xn = minmax_spatial(x)
    assert torch.allclose(xn.flatten(2).amin(2), torch.zeros(3, 4, dtype=x.dtype))
    assert torch.allclose(xn.flatten(2).amax(2), torch.ones(3, 4, dtype=x.dtype))
    with pytest.raises(ValueError, match="spatial size"):
        pairwise_rho(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        output_entropy(torch.zeros(2, 3))


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.conv(x)).relu()


class _TinyResNet(nn.Module):
    """layer3 with 2 blocks, layer4 with 3 blocks (enough to check the block choice and the hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer3 = nn.Sequential(_Block(4), _Block(4))
        self.layer4 = nn.Sequential(_Block(4), _Block(4), _Block(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.stem(x))).mean((2, 3))


def test_default_blocks_follow_paper_where_they_exist():
    m = _TinyResNet()
    assert default_selectivity_blocks(m) == {4: [1, 2], 3: [1]}
    with pytest.raises(ValueError, match="layer4"):
        default_selectivity_blocks(nn.Linear(2, 2))


def test_collect_matches_direct_computation():
    torch.manual_seed(0)
    m = _TinyResNet().eval()
    images = torch.randn(5, 3, 6, 6)
    stats = collect_selectivity(m, [(images[:3], None), (images[3:], None)])
    assert list(stats) == ["layer4.1", "layer4.2", "layer3.1"]
    with torch.no_grad():
        x = m.layer4[0](m.layer3(m.stem(images)))
        y = m.layer4[1](x)
    rho, h_in, h_out = stats["layer4.1"].tensors()
    assert torch.allclose(rho, rho_mean(x, y), atol=1e-6)
    assert torch.allclose(h_in, input_entropy(x, y), atol=1e-5)
    assert torch.allclose(h_out, output_entropy(y), atol=1e-6)
    s = stats["layer4.1"].summary()
    assert s["n_images"] == 5
    assert s["rho_std"] == pytest.approx(rho.std(unbiased=False).item())
    assert stats["layer4.1"].channel_entropy().shape == (4,)
    limited = collect_selectivity(m, [images[:3], images[3:]], max_images=4)
    assert limited["layer3.1"].summary()["n_images"] == 4
    with pytest.raises(ValueError, match="eval"):
        collect_selectivity(m.train(), [images])


def test_table3_layout_and_paper_columns():
    import pandas as pd

    from tdam.evaluation.selectivity import selectivity_table
    from tdam.evaluation.provenance import EvalFacts
    from tdam.reference import model_key, paper_table3_column, table3_beside_paper

    torch.manual_seed(0)
    m = _TinyResNet().eval()
    images = torch.randn(4, 3, 6, 6)
    res = {"plain": collect_selectivity(m, [images]), "td": collect_selectivity(m, [images * 2])}
    table = selectivity_table(res)
    assert list(table.columns) == ["stage", "block", "metric", "plain", "td"]
    row = table[(table.stage == 4) & (table.block == 2) & (table.metric == "rho_mean")]
    assert row["plain"].item() == pytest.approx(res["plain"]["layer4.1"].summary()["rho_mean"])
    assert len(table) == 3 * 3  # 3 blocks x (rho_mean, rho_std, entropy_HY)

    assert paper_table3_column({"arch": "resnet50", "attention": None}) == "original"
    assert paper_table3_column({"arch": "resnet50", "attention": "td", "td_mode": "joint", "t": 2, "m": 1}) == \
        "tdjoint_t2_m1"
    assert paper_table3_column({"arch": "resnet50", "attention": "se"}) is None
    assert paper_table3_column({"arch": "resnet18", "attention": None}) is None  # the paper's are ResNet-50 models
    def facts(model_config, **changes):
        base = EvalFacts(run="r", epochs=1, train_on=None, profile=None, t_eval=model_key(model_config)["t"] or 1,
                         images={"v1": 50_000}, data="imagenet", data_tag="in1k", img_size=224, num_classes=1000,
                         model_config=model_config)
        return base.replace(**changes)

    plain50, td50 = {"arch": "resnet50"}, {"arch": "resnet50", "attention": "td"}
    both = table3_beside_paper(table, {"plain": facts(plain50), "td": facts(td50)})
    assert {"paper_original", "diff_plain", "paper_tdjoint_t2_m1", "diff_td"} <= set(both.columns)
    r = both[(both.stage == 4) & (both.block == 2) & (both.metric == "entropy_HY")]
    assert r["paper_original"].item() == pytest.approx(5.67)  # transcribed paper value, shown beside ours
    assert r["diff_plain"].item() == pytest.approx(r["plain"].item() - 5.67)
    assert pd.isna(both[both.stage == 3]["paper_original"]).all()  # the paper reports layer4 only
    assert (both.comparison == "plain: paper setting; td: paper setting").all()
    # on the embedded data, or with a ResNet-18, no paper number stands beside ours
    embedded = dict(num_classes=12, img_size=64, data="embedded")
    mixed = table3_beside_paper(table, {"plain": facts({"arch": "resnet18"}), "td": facts(td50, **embedded)})
    assert mixed.columns.tolist()[:5] == ["stage", "block", "metric", "plain", "td"]
    assert mixed.comparison.iloc[0] == (
        "plain: resnet18 plain is not a model of Table 3 (resnet50 plain, resnet50 TD-top t2 m3, resnet50 TD-joint t2 "
        "m1); td: embedded tdam-shapes data, not ImageNet; 12 classes, not ImageNet's 1000; evaluated at 64 px, not "
        "the paper's 224 px")
    pd.testing.assert_frame_equal(mixed[table.columns], table)
    one = table3_beside_paper(table, {"plain": facts(plain50), "td": facts(td50, **embedded)})
    assert "paper_original" in one and not [c for c in one if c.endswith("tdjoint_t2_m1") or c == "diff_td"]
    with pytest.raises(ValueError, match="not in the table"):
        table3_beside_paper(table, {"other": facts(plain50)})
    with pytest.raises(ValueError, match="EvalFacts"):
        table3_beside_paper(table, {"plain": "original"})


def test_td_model_blocks_are_hooked():
    from tdam import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", attention="td", num_classes=5).eval()
    images = torch.randn(2, 3, 64, 64)
    stats = collect_selectivity(model, [images])
    assert list(stats) == ["layer4.1", "layer3.1"]  # resnet18: two blocks per stage, block 1 skipped
    with torch.no_grad():
        x = model.layer3(model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(images)))))))
        x4 = model.layer4[0](x)
        y4 = model.layer4[1](x4)  # the TD block's final step
    torch.testing.assert_close(stats["layer4.1"].tensors()[0], rho_mean(x4, y4))
    torch.testing.assert_close(stats["layer4.1"].tensors()[2], output_entropy(y4))
