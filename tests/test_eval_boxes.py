"""Box rule of the supplement, inclusive IoU and CAM/Grad-CAM maps against direct reference computations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from tdam.cam import boxes_from_maps, cam_maps, gradcam_maps
from tdam.metrics import box_iou_inclusive
from helpers import ref_iou


def ref_box(m: np.ndarray, size, thr=0.15):
    """One map at a time, plain loops: bilinear upsample, min-max, > thr, largest 8-component, inclusive box."""
    up = F.interpolate(torch.tensor(m, dtype=torch.float32)[None, None], size=size, mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    lo, hi = up.min(), up.max()
    h, w = up.shape
    if hi <= lo:
        return [0, 0, w - 1, h - 1]
    norm = (up - lo) / (hi - lo)
    lab, n = ndimage.label(norm > thr, structure=np.ones((3, 3)))
    best, best_size = None, -1
    for i in range(1, n + 1):
        s = int((lab == i).sum())
        if s > best_size:
            best, best_size = i, s
    ys, xs = np.nonzero(lab == best)
    return [xs.min(), ys.min(), xs.max(), ys.max()]


def test_hand_made_maps():
    m = torch.zeros(3, 8, 10)
    m[0, 2:5, 3:7] = 1.0  # one blob
    m[1, 0:2, 0:2] = 1.0  # small blob
    m[1, 4:8, 5:10] = 0.9  # large blob (weaker, still > 15 %)
    m[2] = 0.3  # constant -> whole image
    boxes = boxes_from_maps(m)
    assert boxes.tolist() == [[3, 2, 6, 4], [5, 4, 9, 7], [0, 0, 9, 7]]


def test_eight_connectivity_joins_diagonals():
    m = torch.zeros(1, 6, 6)
    for i in range(4):
        m[0, i, i] = 1.0  # a diagonal line: one 8-connected component of 4 pixels
    m[0, 5, 0] = 1.0
    assert boxes_from_maps(m).tolist() == [[0, 0, 3, 3]]


def test_threshold_is_strict_and_relative_to_range():
    m = torch.tensor([[[0.0, 0.15, 1.0, 0.16]]])  # after min-max: 0, .15, 1, .16 -> keep >.15 only
    assert boxes_from_maps(m).tolist() == [[2, 0, 3, 0]]


@pytest.mark.parametrize("size", [None, (32, 40)])
def test_matches_reference_on_random_maps(size):
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(24, 7, 9, generator=g) ** 3
    maps[5] = 2.0  # a constant map
    got = boxes_from_maps(maps, size=size)
    tgt = size or (7, 9)
    for i in range(maps.shape[0]):
        assert got[i].tolist() == [int(v) for v in ref_box(maps[i].numpy(), tgt)], i


def test_iou_inclusive_matches_reference_and_broadcasts():
    g = torch.Generator().manual_seed(1)
    xy0 = torch.randint(0, 20, (30, 2), generator=g)
    wh = torch.randint(0, 15, (30, 2), generator=g)
    boxes = torch.cat([xy0, xy0 + wh], dim=1)
    pair = box_iou_inclusive(boxes[:, None], boxes[None])
    assert pair.shape == (30, 30)
    for i in range(30):
        for j in range(30):
            assert pair[i, j].item() == pytest.approx(ref_iou(boxes[i].tolist(), boxes[j].tolist()))
    assert box_iou_inclusive(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 0])).item() == 1.0
    assert box_iou_inclusive(torch.tensor([0, 0, 1, 1]), torch.tensor([2, 2, 3, 3])).item() == 0.0
    # pixel-inclusive: [0,0,1,1] has area 4, [1,1,2,2] overlaps it in 1 pixel -> 1 / 7
    assert box_iou_inclusive(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 2, 2])).item() == pytest.approx(1 / 7)


def test_cam_equals_gradcam_up_to_scale_for_gap_fc_head():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(5, 16, 6, 6, generator=g).relu().requires_grad_(True)
    fc = torch.nn.Linear(16, 7)
    logits = fc(feats.mean(dim=(2, 3)))
    classes = logits.argmax(1)
    grad = gradcam_maps(feats, logits, classes)
    cam = cam_maps(feats.detach(), fc.weight.detach(), classes)
    # Grad-CAM weights are W[c] / (h w): same map up to the factor 36
    torch.testing.assert_close(grad * 36, cam, rtol=1e-4, atol=1e-5)
    ref = torch.stack([(fc.weight[c, :, None, None] * feats[i]).sum(0) for i, c in enumerate(classes)]).relu()
    torch.testing.assert_close(cam, ref.detach(), rtol=1e-5, atol=1e-5)
    assert torch.equal(boxes_from_maps(grad, 24), boxes_from_maps(cam, 24))
