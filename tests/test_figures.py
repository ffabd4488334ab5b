"""Every notebook figure reads on its own (title with the run, worded axis labels, legends for every colour and
marker, legible at its print width), and run-tagged figure names keep one run from overwriting another's figure."""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tdam.cam import CamResult  # noqa: E402
from tdam.evaluation import figures as F  # noqa: E402
from tdam.evaluation.localization import LocalizationResult  # noqa: E402
from tdam.evaluation.provenance import EvalFacts  # noqa: E402
from tdam.evaluation.selectivity import BlockSelectivity  # noqa: E402
from tdam.notebook.outputs import figure_name, save_figure  # noqa: E402
from tdam.train.plots import plot_curves  # noqa: E402
from tdam.transfer.report import crop_drop_panels  # noqa: E402

RUN = "ResNet-18 TD (t=2, m=1) vs plain, embedded tdam-shapes val"  # what a notebook passes as title=
NAMES = ["disk", "ring", "cross"]
COLUMN, PAGE = F.COLUMN_WIDTH_IN, F.PAGE_WIDTH_IN


def _cam(n: int, pred: int, seed: int = 0) -> CamResult:
    logits = torch.zeros(n, 3)
    logits[:, pred] = 2.0
    cls = logits.argmax(1, keepdim=True)
    cams = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return CamResult(cams, cls, logits.softmax(1).gather(1, cls), logits)


def _selectivity(blocks) -> dict:
    stats = {}
    for label in ("resnet18 TD-joint t2 m1", "resnet18 plain"):
        per_block = {}
        for name in blocks:
            b = BlockSelectivity(name)
            b.add(torch.rand(6, 4, 2, 2), torch.rand(6, 8, 2, 2))
            per_block[name] = b
        stats[label] = per_block
    return stats


def _cost(knob: str, values, columns) -> pd.DataFrame:
    df = pd.DataFrame({knob: values, **{c: np.linspace(1, 3, len(values)) for c in columns}})
    return df.assign(device="cpu", dtype="fp32")


def attention_shift():
    images = np.full((2, 16, 16, 3), 0.5)
    results = {"resnet18 TD-joint t2 m1": [_cam(2, 0), _cam(2, 1, 1)], "resnet18 plain": [_cam(2, 2, 2)]}
    objects = [[("ring", [0, 0, 6, 6], True), ("disk", [8, 8, 15, 15], False)], []]
    return F.attention_shift_figure(images, results, NAMES, labels=[1, 2], objects=objects, title=RUN)


def localization():
    n = 8
    result = LocalizationResult({"last": torch.rand(n, 3) > 0.5}, {"last": torch.rand(n, 2) > 0.5},
                                torch.tensor([[2, 2, 10, 10]] * n), torch.arange(n) % 3, torch.rand(n),
                                torch.rand(n), torch.zeros(n, dtype=torch.long))
    return F.localization_figure(np.full((n, 16, 16, 3), 0.5), [torch.tensor([3, 3, 12, 12])] * n, result, NAMES,
                                 list(range(n)), title=RUN)


def entropy():
    blocks = [f"layer3.{i}" for i in range(5)]  # more blocks than a row holds
    return F.entropy_histograms(_selectivity(blocks), blocks, title="Fig. 4, layer3: " + RUN)


def accuracy_vs_steps():
    tables = {s: pd.DataFrame({"steps": [1, 2, 3], "top1": [50.0 + i, 60.0, 58.0]})
              for i, s in enumerate(["ImageNet-V1", "ImageNet-V2"])}
    return F.plot_accuracy_vs_steps(tables, trained_t=2, title=RUN)


def resolution():
    facts = EvalFacts(run="r", epochs=1, train_on=None, profile="smoke", t_eval=1, images={"v1": 120},
                      data="embedded", data_tag="tdam-shapes/imagenet/default", img_size=64, num_classes=12)
    table = F.resolution_table({"resnet18 plain": {32: 30.0, 64: 60.0, 128: 40.0},
                                "resnet18 td": {32: 35.0, 64: 62.0, 128: 50.0}},
                               {"resnet18 plain": facts, "resnet18 td": facts.replace(t_eval=2)})
    return F.plot_resolution(table, train_resolution=64, title=RUN)


def scaling():
    tables = {"t": _cost("t", [1, 2, 3], ["gflops", "fps_inference", "fps_train"]),
              "batch": _cost("batch", [1, 4, 16], ["fps_inference"]),
              "img_size": _cost("img_size", [32, 64, 128], ["gflops", "fps_inference"])}
    return F.plot_scaling(tables, ys=("gflops", "fps_inference", "mem_inference_gb"), title=RUN)


def curves():
    hist = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 1.9 / e, "val_top1": 20.0 * e, "val_top5": 30.0 * e,
             "ema_val_top1": 19.0 * e} for e in range(1, 4)]
    return plot_curves(hist, chance=100 / 12, title=RUN)


def crop_drop():
    n, g = 2, torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 16, 16, generator=g)
    ex = {"crop_maps": torch.rand(n, 4, 4, generator=g), "drop_maps": torch.rand(n, 4, 4, generator=g),
          "crops": images.flip(-1), "drops": images * 0, "boxes": torch.tensor([[2, 12, 3, 14]] * n)}
    return crop_drop_panels(images, ex, title=RUN)


# every figure function, with the width it is printed at (its docstring says which)
FIGURES = {"01 plot_curves": (curves, PAGE), "02 plot_accuracy_vs_steps": (accuracy_vs_steps, COLUMN),
           "03 plot_scaling": (scaling, PAGE), "05 attention_shift_figure": (attention_shift, PAGE),
           "06 localization_figure": (localization, PAGE), "07 crop_drop_panels": (crop_drop, PAGE),
           "08 plot_resolution": (resolution, COLUMN), "09 entropy_histograms": (entropy, PAGE)}


def _suptitle(fig) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


@pytest.mark.parametrize("name", FIGURES)
def test_figure_reads_on_its_own(name):
    build, width = FIGURES[name]
    fig = build()
    assert F.figure_issues(fig, width_in=width) == []
    assert F.figure_legibility(fig, width) >= F.MIN_FONT_PT
    assert fig.get_size_inches()[0] <= width + 1e-6  # drawn no wider than it is printed
    assert re.sub(r"\s+", " ", _suptitle(fig)).endswith(RUN)  # the run's model and data, wrapped but whole
    plt.close(fig)


def test_figure_issues_finds_what_is_missing():
    fig, ax = plt.subplots(figsize=(6.6, 3))
    ax.plot([1, 2], [1, 2], marker="o")
    ax.plot([1, 2], [2, 1])
    ax.set_xlabel("fps_inference")
    issues = F.figure_issues(fig, width_in=COLUMN)
    assert "no title" in issues and "axes 0: no y label" in issues
    assert "axes 0: raw x label 'fps_inference'" in issues
    assert any(i.startswith("axes 0: no legend entry") for i in issues)
    assert any(i.startswith("smallest text") for i in issues)  # 10 pt ticks on 6.6 in -> ~5 pt at 3.3 in
    ax.imshow(np.zeros((2, 2)))
    assert "colour-mapped image without a colour bar" in F.figure_issues(fig, width_in=COLUMN)
    plt.close(fig)


def test_legibility_scales_font_with_print_width():
    fig = plt.figure(figsize=(6.6, 2))
    fig.text(0.5, 0.5, "x", fontsize=10)
    fig.suptitle("a title", fontsize=12)
    saved = fig.get_tightbbox(fig.canvas.get_renderer()).width + 2 * matplotlib.rcParams["savefig.pad_inches"]
    assert F.figure_legibility(fig, COLUMN) == pytest.approx(10 * COLUMN / saved)
    assert F.figure_legibility(fig, 2 * COLUMN) == pytest.approx(2 * F.figure_legibility(fig, COLUMN))
    plt.close(fig)


def test_scaling_axis_labels_are_words_with_units():
    fig = scaling()
    axes = np.array(fig.axes).reshape(2, 3)  # mem_inference_gb measured nowhere: left out
    assert [ax.get_xlabel() for ax in axes[0]] == ["computation steps t", "batch size", "input resolution (px)"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["GFLOPs", "inference throughput (images/s)"]
    assert axes[0, 1].texts[0].get_text() == "not measured" and not axes[0, 1].lines
    assert "cpu" in _suptitle(fig)
    plt.close(fig)
    assert F.axis_label("mem_inference_gb") == "peak inference memory (GB)"
    assert F.axis_label("some_new_column") == "some new column"


def test_training_curves_have_integer_epoch_ticks():
    fig = curves()
    fig.canvas.draw()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [x for x in ax.get_xticks() if lo <= x <= hi]
        assert ticks and all(float(x).is_integer() for x in ticks)
    plt.close(fig)


def test_attention_shift_legend_names_the_box_colours():
    fig = attention_shift()
    labels = {t.get_text(): h.get_edgecolor() for t, h in zip(fig.legends[0].get_texts(),
                                                               fig.legends[0].legend_handles)}
    assert set(labels) == {"labelled object", "other object", F._CAM_BOX}
    assert matplotlib.colors.to_hex(labels["other object"]) == F.OTHER_COLOUR
    assert any(hasattr(ax, "_colorbar") for ax in fig.axes)  # the Grad-CAM scale
    plt.close(fig)


def test_suptitle_sits_right_above_the_panels():
    fig = entropy()
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    title_bottom = fig._suptitle.get_window_extent(r).y0
    panels_top = max(ax.get_tightbbox(r).y1 for ax in fig.axes if ax.get_visible())
    assert 0 <= (title_bottom - panels_top) / fig.dpi < 0.25  # inches: no detached heading
    plt.close(fig)


def test_figure_name_tags_the_run():
    name = figure_name("08_test_resolution", backbone="resnet18", attention=["plain", "td"], t=2, data=None)
    assert name == "08_test_resolution-resnet18-plain+td-t2-shapes"
    assert figure_name("05", backbone="resnet50", attention=None, data="/data/imagenet/") == \
        "05-resnet50-plain-imagenet"
    assert figure_name("05", backbone="resnet50", attention="plain", data="") == "05-resnet50-plain-shapes"
    odd = figure_name("09", backbone="resnet 18", attention="td", t=3, data="/mnt/My Data (v2)")
    assert odd == "09-resnet_18-td-t3-My_Data_v2" and re.fullmatch(r"[A-Za-z0-9._+-]+", odd)
    kw = dict(attention="td", t=2, data="/data/imagenet")
    assert figure_name("06", backbone="resnet18", **kw) == figure_name("06", backbone="resnet18", **kw)  # determined
    assert figure_name("06", backbone="resnet18", **kw) != figure_name("06", backbone="resnet50", **kw)


def test_figures_of_two_runs_are_two_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TDAM_ROOT", str(tmp_path))
    names = [figure_name("08_test_resolution", backbone=b, attention="td", t=2) for b in ("resnet18", "resnet50")]
    for name in names:
        fig, ax = plt.subplots()
        save_figure(fig, name)
        plt.close(fig)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        f"{n}.{ext}" for n in names for ext in ("pdf", "png"))


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "a\\b", ".hidden"])
def test_save_figure_refuses_paths(bad, tmp_path, monkeypatch):
    monkeypatch.setenv("TDAM_ROOT", str(tmp_path))
    fig = plt.figure()
    with pytest.raises(ValueError, match="plain file stem"):
        save_figure(fig, bad)
    plt.close(fig)
    assert not (tmp_path / "figures").exists() or not any((tmp_path / "figures").iterdir())


def test_crop_drop_figure_file_is_tagged_with_the_run(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from tdam.transfer import report

    class Maps(torch.nn.Module):  # a WS-DAN stand-in: attention maps only
        def forward(self, x):
            return SimpleNamespace(attention_maps=torch.rand(len(x), 3, 4, 4))

    class Fake(report.TransferResult):
        def model(self, use_ema: bool = False):
            return Maps()

    val = [(torch.randn(3, 16, 16), 0) for _ in range(4)]
    monkeypatch.setattr(report, "build_transfer_datasets", lambda cfg: (None, val))
    monkeypatch.setenv("TDAM_ROOT", str(tmp_path))
    runs = [("resnet18", "default"), ("resnet50", "default"), ("resnet18", "tiny")]   # other model, other data size
    for arch, size in runs:
        train = SimpleNamespace(model={"arch": arch, "attention": "td", "t": 3}, model_tag=lambda: f"{arch}_td")
        cfg = SimpleNamespace(task="wsdan", dataset="cub200", data_dir=None, data_size=size, train=train,
                              random_backbone=False)
        plt.close(report.crop_drop_figure(Fake(cfg, tmp_path, [], None), n=2))
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == sorted(
        f"07_transfer_crop_drop_cub200-{arch}-td-t3-shapes{'' if size == 'default' else '-tiny'}.png"
        for arch, size in runs)



def test_overlap_check_catches_run_together_panel_titles():
    """The check the figure tests use flags the old notebook-06 figure (six columns, the long tdam-shapes class name
    and its confidence on one line), and the localisation figure now wraps its titles so that none overlap."""
    from tdam.data.shapes import IMAGENET_CLASSES

    names = [c["words"] for c in IMAGENET_CLASSES]          # e.g. "yellow dots diamond"
    n = len(names)
    result = LocalizationResult({"last": torch.ones(n, 3, dtype=torch.bool)}, {"last": torch.ones(n, 2) > 0},
                                torch.tensor([[2, 2, 10, 10]] * n), torch.arange(n), torch.full((n,), 0.64),
                                torch.full((n,), 0.33), torch.zeros(n, dtype=torch.long))
    images, gt = np.full((n, 16, 16, 3), 0.5), [torch.tensor([3, 3, 12, 12])] * n
    fig = F.localization_figure(images, gt, result, names, list(range(n)), title=RUN)
    assert F.overlapping_texts(fig) == [] and F.figure_issues(fig, width_in=PAGE) == []
    for ax, name in zip(fig.axes, names):
        ax.set_title(f"{name} (0.64)\nIoU 0.33 ✓", fontsize=F.PRINT_STYLE["axes.titlesize"])   # the old titles
    issues = F.figure_issues(fig, width_in=PAGE)
    assert any(i.startswith("overlapping text: ") and "(0.64)" in i for i in issues), issues
    plt.close(fig)
