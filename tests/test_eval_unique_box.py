"""The supplement's unique-box protocol, most-confident and top-k, against plain loops."""
import numpy as np
import pytest
import torch

from helpers import ref_iou
from tdam.metrics import (most_confident_correct, topk_correct, unique_box_correct,
                                        unique_box_sources)


def ref_unique_box(step_logits, boxes, targets, topk=(1, 5)):
    """The protocol as written, one image at a time, with a python list of (p, logits, box)."""
    t, n, _ = step_logits.shape
    out = np.zeros((n, len(topk)), dtype=bool)
    for i in range(n):
        kept = []
        for k in range(t):
            logits = step_logits[k, i].tolist()
            p = max(np.exp(np.array(logits) - max(logits)) / np.exp(np.array(logits) - max(logits)).sum())
            cur = [p, logits, boxes[k, i].tolist()]
            if k >= 1:
                for j in range(len(kept)):
                    if ref_iou(cur[2], kept[j][2]) > 0.5:
                        if cur[0] > kept[j][0]:
                            kept[j] = list(cur)
                        else:
                            cur = list(kept[j])
            kept.append(cur)
        for a, kk in enumerate(topk):
            for _, logits, _ in kept:
                order = sorted(range(len(logits)), key=lambda c: -logits[c])[:kk]
                if int(targets[i]) in order:
                    out[i, a] = True
    return out


def test_topk_correct_hand_made():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    tgt = torch.tensor([1, 2, 0])
    got = topk_correct(logits, tgt, (1, 2, 5))
    assert got.tolist() == [[True, True, True], [False, True, True], [False, False, True]]


def test_overlapping_boxes_keep_more_confident_step():
    # 2 steps, 3 classes; same box at both steps. Image 0: step 1 right but less confident than wrong step 2 -> wrong.
    # Image 1: step 1 right and MORE confident than wrong step 2 -> right (step 2 takes step 1's values).
    logits = torch.tensor([[[2.0, 0.0, 0.0], [5.0, 0.0, 0.0]],
                           [[0.0, 5.0, 0.0], [0.0, 2.0, 0.0]]])
    boxes = torch.tensor([[[0, 0, 9, 9], [0, 0, 9, 9]], [[1, 1, 9, 9], [0, 0, 9, 8]]])
    tgt = torch.tensor([0, 0])
    got = unique_box_correct(logits, boxes, tgt, topk=(1,))
    assert got[:, 0].tolist() == [False, True]
    src = unique_box_sources(logits.softmax(-1).amax(-1), boxes)
    assert src.tolist() == [[1, 1], [0, 0]]
    # `last` would give [False, False]; most-confident picks the same steps here
    assert most_confident_correct(logits, tgt, (1,))[:, 0].tolist() == [False, True]


def test_distinct_boxes_both_count():
    # step 1 right (low confidence), step 2 wrong (high confidence), boxes apart -> both kept -> correct.
    logits = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 6.0, 0.0]]])
    boxes = torch.tensor([[[0, 0, 4, 4]], [[10, 10, 14, 14]]])
    tgt = torch.tensor([0])
    assert unique_box_correct(logits, boxes, tgt, topk=(1,)).tolist() == [[True]]
    assert most_confident_correct(logits, tgt, (1,)).tolist() == [[False]]
    assert unique_box_sources(logits.softmax(-1).amax(-1), boxes).tolist() == [[0, 1]]


def test_current_takes_kept_values_and_carries_them_on():
    # 3 steps. b1 and b3 overlap, b2 apart. Step 3 less confident than step 1 -> takes step 1's values.
    logits = torch.tensor([[[4.0, 0, 0]], [[0, 3.0, 0]], [[0, 0, 1.0]]])
    boxes = torch.tensor([[[0, 0, 9, 9]], [[20, 20, 29, 29]], [[0, 0, 9, 8]]])
    src = unique_box_sources(logits.softmax(-1).amax(-1), boxes)
    assert src.tolist() == [[0, 1, 0]]
    assert unique_box_correct(logits, boxes, torch.tensor([2]), topk=(1,)).tolist() == [[False]]


@pytest.mark.parametrize("t", [1, 2, 3, 5])
def test_matches_reference_on_random_inputs(t):
    g = torch.Generator().manual_seed(t)
    n, k = 200, 8
    logits = torch.randn(t, n, k, generator=g) * 2
    xy0 = torch.randint(0, 6, (t, n, 2), generator=g)
    wh = torch.randint(3, 8, (t, n, 2), generator=g)
    boxes = torch.cat([xy0, xy0 + wh], dim=-1)  # many overlaps around IoU 0.5
    tgt = torch.randint(0, k, (n,), generator=g)
    got = unique_box_correct(logits, boxes, tgt, topk=(1, 5)).numpy()
    ref = ref_unique_box(logits.numpy().astype(np.float64), boxes.numpy(), tgt.numpy())
    np.testing.assert_array_equal(got, ref)
    # with one step there is nothing to compare: unique-box is plain top-k
    if t == 1:
        np.testing.assert_array_equal(got, topk_correct(logits[0], tgt, (1, 5)).numpy())


def test_most_confident_matches_reference():
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(4, 50, 6, generator=g)
    tgt = torch.randint(0, 6, (50,), generator=g)
    got = most_confident_correct(logits, tgt, (1, 5))
    p = logits.softmax(-1).amax(-1)
    for i in range(50):
        best = max(range(4), key=lambda s: (p[s, i].item(), -s))
        assert got[i, 0].item() == (logits[best, i].argmax().item() == tgt[i].item())
