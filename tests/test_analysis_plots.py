"""Figures of the analysis notebooks: layout and labels from synthetic inputs."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from tdam.cam import CamResult
from tdam.evaluation.figures import attention_shift_figure, entropy_histograms, to_display
from tdam.evaluation.selectivity import BlockSelectivity


def _cam(n: int, pred: int) -> CamResult:
    logits = torch.zeros(n, 3)
    logits[:, pred] = 2.0
    cams = torch.zeros(n, 1, 2, 2)
    cams[:, 0, 0, 0] = 1.0
    cls = logits.argmax(1, keepdim=True)
    return CamResult(cams, cls, logits.softmax(1).gather(1, cls), logits)


def test_to_display_undoes_normalisation():
    img = torch.rand(2, 3, 4, 5)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = (img - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    np.testing.assert_allclose(to_display(x, mean, std), img.permute(0, 2, 3, 1).numpy(), atol=1e-6)


def test_attention_shift_grid_layout_and_titles():
    images = np.zeros((2, 8, 8, 3))
    results = {"TD": [_cam(2, 0), _cam(2, 1)], "plain": [_cam(2, 2)]}
    names = ["disk", "ring", "cross"]
    fig = attention_shift_figure(images, results, names, labels=[1, 2],
                                 objects=[[("ring", [0, 0, 3, 3], True), ("disk", [4, 4, 7, 7], False)], []])
    axes = np.array(fig.axes[: 2 * 4]).reshape(2, 4)
    assert len(fig.axes) == 2 * (1 + 3) + 1  # image + 2 TD steps + 1 plain step per row, and the colour bar
    p = torch.softmax(torch.tensor([2.0, 0.0, 0.0]), 0)[0].item()
    assert axes[0, 0].get_title() == "image\nlabel: ring"
    assert axes[0, 1].get_title() == f"TD\nstep 1: disk ({p:.2f})"
    assert axes[1, 2].get_title() == f"TD\nstep 2: ring ({p:.2f})"
    assert axes[0, 3].get_title() == f"plain\nstep 1: cross ({p:.2f})"
    assert len(axes[0, 0].patches) == 2 and len(axes[1, 0].patches) == 0  # both objects drawn on the image
    assert all(len(ax.patches) == 1 for ax in axes[:, 1:].flat)  # the step's box
    plt.close(fig)


def test_entropy_histograms_one_panel_per_block():
    stats = {}
    for label in ("TD", "plain"):
        per_block = {}
        for name in ("layer4.1", "layer4.2"):
            b = BlockSelectivity(name)
            b.add(torch.rand(3, 4, 2, 2), torch.rand(3, 5, 2, 2))
            per_block[name] = b
        stats[label] = per_block
    fig = entropy_histograms(stats, ["layer4.1", "layer4.2"], title="Fig. 3")
    assert [ax.get_title() for ax in fig.axes] == ["layer4 block 2", "layer4 block 3"]
    assert fig._suptitle.get_text().endswith("Fig. 3")  # the caller's title under the figure's heading
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["TD", "plain"]  # one colour per model
    assert sum(len(c) for c in fig.axes[0].containers) == 2 * 30  # two models x 30 bins
    plt.close(fig)
