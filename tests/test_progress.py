"""Progress lines of long loops (evaluation): throttled to one per interval, with images done, rate and ETA, and a
final line; the evaluation loop reports through them."""
from __future__ import annotations

import io

import torch
import torch.nn as nn

from tdam.evaluation import evaluate
from tdam.progress import Progress, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_at_most_every_interval_with_rate_and_eta():
    clock, out = Clock(), io.StringIO()
    p = Progress("evaluate", 1000, interval_s=10, stream=out, clock=clock)
    for _ in range(10):                      # 100 images every 4 s: 25 img/s
        clock.now += 4
        p.update(100)
    p.close()
    lines = out.getvalue().splitlines()
    # printed at 12, 24 and 36 s (300, 600, 900 done), then the final line at 40 s
    assert lines == ["evaluate: 300/1000 images (30%), 25.0 images/s, ETA 28s",
                     "evaluate: 600/1000 images (60%), 25.0 images/s, ETA 16s",
                     "evaluate: 900/1000 images (90%), 25.0 images/s, ETA 4s",
                     "evaluate: 1000 images in 40.0s, 25.0 images/s"]


def test_unknown_total_has_no_eta_and_a_short_loop_only_its_final_line():
    clock, out = Clock(), io.StringIO()
    p = Progress("loop", None, interval_s=10, stream=out, clock=clock)
    clock.now += 11
    p.update(5)
    clock.now += 1
    p.update(5)
    p.close()
    assert out.getvalue().splitlines() == ["loop: 5 images, 0.5 images/s", "loop: 10 images in 12.0s, 0.8 images/s"]
    assert duration(3725) == "1h02m" and duration(185) == "3m05s"


def test_evaluate_reports_its_images(capsys):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    batches = [(torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])) for _ in range(3)]
    evaluate(model, batches, topk=(1,))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: 12 images in ")
