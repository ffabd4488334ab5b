"""Weakly-supervised localisation metrics on synthetic predictions with hand-counted answers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tdam.evaluation.localization import localize_batch
from tdam.metrics import (
    StepLocalization,
    localization_hits,
    max_iou,
    pad_boxes,
    unique_box_localization_hits,
)

GT = [(10, 10, 29, 29)]  # 20 x 20 box, inclusive corners
GOOD = (10, 10, 29, 29)
BAD = (40, 40, 59, 59)


def _step(classes, boxes, gt_class_boxes, confidence, num_classes=10) -> StepLocalization:
    classes = torch.tensor(classes)
    logits = torch.zeros(len(classes), num_classes)
    return StepLocalization(
        classes=classes,
        boxes=torch.tensor(boxes),
        gt_class_boxes=torch.tensor(gt_class_boxes),
        confidence=torch.tensor(confidence),
        logits=logits,
    )


def test_max_iou_is_pixel_inclusive_and_takes_best_gt():
    gt, mask = pad_boxes([torch.tensor([(0, 0, 9, 9), (100, 100, 109, 109)]), torch.tensor([(0, 0, 9, 9)]),
                          torch.zeros(0, 4)])
    assert gt.shape == (3, 2, 4) and mask.tolist() == [[True, True], [True, False], [False, False]]
    pred = torch.tensor([[(5, 5, 14, 14)], [(5, 5, 14, 14)], [(0, 0, 9, 9)]])
    iou = max_iou(pred, gt, mask)
    # inclusive: 5x5 = 25 pixels shared, 100 + 100 - 25 = 175 in the union (exclusive corners would give 16 / 146)
    assert iou[0, 0].item() == pytest.approx(25 / 175)
    assert iou[1, 0].item() == pytest.approx(25 / 175)
    assert iou[2, 0].item() == -1  # no ground truth: never correct
    one_pixel = max_iou(torch.tensor([[(3, 3, 3, 3)]]), torch.tensor([[(3, 3, 4, 3)]]), torch.tensor([[True]]))
    assert one_pixel.item() == pytest.approx(0.5)  # 1 pixel of a 2-pixel box


def test_top1_top5_gtknown_hand_counted():
    labels = torch.tensor([3, 3, 3, 3, 3])
    gt, mask = pad_boxes([torch.tensor(GT)] * 3 + [torch.tensor([(60, 60, 69, 69), (0, 0, 9, 9)])]
                         + [torch.tensor([(0, 0, 9, 9)])])
    half = (0, 0, 9, 4)  # IoU with (0,0,9,9) exactly 0.5: counts (devkit's >= 0.5)
    step = _step(
        classes=[[3, 1, 2, 4, 5], [1, 2, 3, 4, 5], [3, 1, 2, 4, 5], [0, 1, 2, 4, 5], [3, 0, 1, 2, 4]],
        boxes=[[GOOD, BAD, BAD, BAD, BAD],    # 0: top-1 right class, right box
               [GOOD, BAD, GOOD, BAD, BAD],   # 1: wrong top-1 (right box though), label at rank 3 with right box
               [BAD, GOOD, GOOD, GOOD, GOOD], # 2: right top-1 class, wrong box; others wrong class
               [BAD] * 5,                     # 3: label not in top-5
               [half, BAD, BAD, BAD, BAD]],   # 4: IoU exactly 0.5
        gt_class_boxes=[GOOD, GOOD, BAD, (0, 0, 9, 9), half],  # 3: matches the SECOND gt box
        confidence=[0.9] * 5,
    )
    hits = localization_hits(step, labels, gt, mask)
    assert hits[:, 0].tolist() == [True, False, False, False, True]   # Top-1 Loc 2/5
    assert hits[:, 1].tolist() == [True, True, False, False, True]    # Top-5 Loc 3/5
    assert hits[:, 2].tolist() == [True, True, False, True, True]     # GT-known Loc 4/5
    assert hits.float().mean(0).tolist() == pytest.approx([0.4, 0.6, 0.8])


def test_unique_box_rule_gives_kept_steps_a_chance():
    labels = torch.tensor([3, 3, 3])
    gt, mask = pad_boxes([torch.tensor(GT)] * 3)
    near = (11, 11, 30, 30)  # IoU with GOOD = 361 / 439 > 0.5: the two steps' boxes merge
    step1 = _step([[3, 0, 0, 0, 0]] * 3, [[GOOD] + [BAD] * 4] * 3, [GOOD] * 3, [0.6, 0.4, 0.4])
    step2 = _step([[1, 0, 0, 0, 0]] * 3, [[BAD] + [BAD] * 4, [near] + [BAD] * 4, [near] + [BAD] * 4],
                  [GOOD] * 3, [0.5, 0.9, 0.3])
    last = localization_hits(step2, labels, gt, mask)
    assert last[:, 0].tolist() == [False, False, False]
    ub = unique_box_localization_hits([step1, step2], labels, gt, mask)
    # 0: distinct boxes, both steps kept -> step 1 counts; 1: overlap, step 2 more confident replaces step 1 -> wrong;
    # 2: overlap, step 1 more confident is kept -> right
    assert ub[:, 0].tolist() == [True, False, True]
    assert ub[:, 2].tolist() == [True, True, True]


class _BlobNet(nn.Module):
    """GAP + FC 'network' whose last feature map is the input's first channels: lets a test draw the CAM by hand."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(2, num_classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, -0.1, -5.0]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :2]

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.mean(dim=(2, 3)))


def test_localize_batch_boxes_from_hand_made_maps():
    x = torch.zeros(1, 2, 16, 16)
    x[0, 0, 1:4, 1:4] = 1.0      # small blob, 9 pixels
    x[0, 0, 8:14, 6:13] = 1.0    # large blob, 42 pixels: wins
    x[0, 0, 14, 12] = 0.15       # touching the large blob, exactly 15 % of the max: NOT kept (strict threshold)
    x[0, 0, 7, 6] = 0.16         # touching it, above 15 %: kept, extends the box up by one row
    x[0, 1, 10:12, 1:3] = 0.2    # channel 1 = class 1's evidence
    net = _BlobNet().eval()
    (step,) = localize_batch(net, x, torch.tensor([1]), topk=2)
    assert step.classes.tolist() == [[0, 1]]
    assert step.boxes[0, 0].tolist() == [6, 7, 12, 13]  # (x0, y0, x1, y1) of the large blob
    assert step.boxes[0, 1].tolist() == [1, 10, 2, 11]
    assert step.gt_class_boxes[0].tolist() == [1, 10, 2, 11]
    assert step.confidence.item() == pytest.approx(net.forward_head(x).softmax(1).max().item())


class _BlobSteps(_BlobNet):
    """Two 'computation steps': step 1 sees channels 0-1 of the input, step 2 channels 2-3."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 2:4]

    def forward_steps(self, x: torch.Tensor, features: bool = False) -> list:
        out = [(f, self.forward_head(f)) for f in (x[:, :2], x[:, 2:4])]
        return out if features else [lg for _, lg in out]


def test_evaluate_localization_rows_over_steps():
    from tdam.evaluation.localization import evaluate_localization

    x = torch.zeros(2, 4, 16, 16)
    # image 0, label 0: step 1 finds class 0 on the object, step 2 switches to class 1 somewhere else
    x[0, 0, 2:8, 2:8] = 1.0
    x[0, 3, 10:16, 10:16] = 2.0
    # image 1, label 1: both steps predict class 1 on the object
    x[1, 1, 4:10, 4:10] = 1.0
    x[1, 3, 4:10, 4:10] = 1.0
    gt = [torch.tensor([(2, 2, 7, 7)]), torch.tensor([(4, 4, 9, 9)])]
    res = evaluate_localization(_BlobSteps().eval(), [(x, torch.tensor([0, 1]), gt)], topk=2)
    assert set(res.hits) == {"last", "step 1", "step 2", "unique-box"}
    assert res.hits["step 1"][:, 0].tolist() == [True, True]
    assert res.hits["last"][:, 0].tolist() == [False, True]
    torch.testing.assert_close(res.hits["last"], res.hits["step 2"])
    assert res.hits["unique-box"][:, 0].tolist() == [True, True]  # distinct boxes: step 1 kept as a second chance
    assert res.last_boxes.tolist() == [[10, 10, 15, 15], [4, 4, 9, 9]]
    table = res.table().set_index("protocol")
    assert table.loc["last", "top1_loc"] == 50.0 and table.loc["unique-box", "top1_loc"] == 100.0
    assert table.loc["last", "top1_cls"] == 50.0 and table.loc["step 1", "top1_cls"] == 100.0
    assert table.loc["last", "n_images"] == 2
