"""WS-DAN pieces (Hu et al. 2019, GuYuc/WS-DAN.PyTorch) against direct computations written here."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tdam.transfer.wsdan import (
    WSDAN,
    attention_crop,
    attention_crop_boxes,
    attention_drop,
    bilinear_attention_pooling,
    center_loss,
    sample_attention_maps,
    update_feature_centers,
    wsdan_refined_logits,
    wsdan_training_loss,
)
from helpers import TinyBackbone


def test_bap_equals_direct_loop_computation():
    torch.manual_seed(0)
    b, c, m, h, w = 2, 3, 4, 3, 5
    feats = torch.randn(b, c, h, w, dtype=torch.float64)
    att = torch.rand(b, m, h, w, dtype=torch.float64)
    out = bilinear_attention_pooling(feats, att)
    ref = torch.zeros(b, m * c, dtype=torch.float64)
    for i in range(b):
        for k in range(m):
            for j in range(c):
                s = sum(att[i, k, y, x] * feats[i, j, y, x] for y in range(h) for x in range(w))
                v = s / (h * w)
                ref[i, k * c + j] = torch.sign(v) * torch.sqrt(abs(v) + 1e-12)  # m-major layout
        ref[i] = ref[i] / torch.sqrt((ref[i] ** 2).sum())
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(b, dtype=torch.float64))


def test_bap_resizes_attention_bilinearly_align_corners():
    torch.manual_seed(1)
    feats = torch.randn(2, 3, 6, 6)
    att = torch.rand(2, 4, 3, 3)
    att_up = F.interpolate(att, size=(6, 6), mode="bilinear", align_corners=True)
    torch.testing.assert_close(bilinear_attention_pooling(feats, att), bilinear_attention_pooling(feats, att_up))


def test_wsdan_forward_head_and_center_buffer():
    torch.manual_seed(2)
    model = WSDAN(TinyBackbone(), num_classes=5, num_attentions=3).eval()
    assert isinstance(model.backbone.fc, nn.Identity)  # the backbone classifier is dropped
    assert model.attention[0].bias is None and model.attention[1].eps == 1e-3
    assert model.fc.bias is None and model.fc.in_features == 3 * 6
    x = torch.randn(2, 3, 32, 32)
    logits, f, att = model(x)
    fmap = model.backbone.forward_features(x)
    a_ref = F.relu(model.attention[1](model.attention[0](fmap)))
    torch.testing.assert_close(att, a_ref)
    torch.testing.assert_close(f, bilinear_attention_pooling(fmap, a_ref))
    torch.testing.assert_close(logits, (100.0 * f) @ model.fc.weight.t())
    assert (att >= 0).all()
    sd = model.state_dict()
    assert sd["feature_center"].shape == (5, 18)
    sd["feature_center"] = torch.randn(5, 18)
    fresh = WSDAN(TinyBackbone(), num_classes=5, num_attentions=3)
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh.feature_center, sd["feature_center"])


def _peak_map(h: int, w: int, y: int, x: int) -> torch.Tensor:
    a = torch.zeros(1, 1, h, w)
    a[0, 0, y, x] = 2.0
    return a


def test_crop_boxes_hand_computed_threshold_padding_clipping():
    # 3x3 maps upsampled to a 9x13 image (align_corners=True: row i -> i/4, column j -> j/6 in map coordinates).
    # Map 0: peak at the centre. Row profile 1-|i/4-1| >= 0.45 -> rows 2..6; column profile 1-|j/6-1| -> cols 3..9.
    # Map 1: peak at the top-right corner. Rows 1-i/4 -> 0..2; columns 1-|j/6-2| -> 9..12.
    att = torch.cat([_peak_map(3, 3, 1, 1), _peak_map(3, 3, 0, 2)])
    boxes = attention_crop_boxes(att, (9, 13), theta=0.45, padding=0.25)
    # padding 0.25 * 9 = 2.25 rows, 0.25 * 13 = 3.25 columns; int() truncation, then clamp to [0, 9] / [0, 13]:
    # map 0: hmin = int(2 - 2.25) = 0, hmax = int(6 + 2.25) = 8, wmin = int(3 - 3.25) = 0, wmax = int(9 + 3.25) = 12
    # map 1: hmin = max(int(0 - 2.25), 0) = 0, hmax = int(2 + 2.25) = 4, wmin = int(9 - 3.25) = 5,
    #        wmax = min(int(12 + 3.25), 13) = 13
    assert boxes.tolist() == [[0, 8, 0, 12], [0, 4, 5, 13]]
    # padding 0.1: map 0 -> int(2 - 0.9) = 1, int(6.9) = 6, int(3 - 1.3) = 1, int(10.3) = 10
    assert attention_crop_boxes(att[:1], (9, 13), theta=0.45, padding=0.1).tolist() == [[1, 6, 1, 10]]
    # a higher threshold shrinks the mask: rows with 1-|i/4-1| >= 0.7 -> 3..5, columns 1-|j/6-1| >= 0.7 -> 5..7
    assert attention_crop_boxes(att[:1], (9, 13), theta=0.7, padding=0.0).tolist() == [[3, 5, 5, 7]]
    # the threshold is relative to the map's max: scaling the map changes nothing
    assert attention_crop_boxes(5 * att, (9, 13), theta=0.45, padding=0.25).tolist() == boxes.tolist()
    # a range with lo == hi is the fixed threshold
    assert attention_crop_boxes(att, (9, 13), theta=(0.45, 0.45), padding=0.25).tolist() == boxes.tolist()


def test_crop_of_all_zero_map_keeps_all_mask_rows():
    # theta = 0 keeps every pixel: rows 0..8, columns 0..12; hmax = min(int(8 + 0.9), 9) = 8 (the reference's
    # exclusive upper bound drops the last row when padding * H < 1), wmax = min(int(12 + 1.3), 13) = 13
    boxes = attention_crop_boxes(torch.zeros(2, 1, 3, 3), (9, 13), theta=0.5, padding=0.1)
    assert boxes.tolist() == [[0, 8, 0, 13]] * 2
    assert attention_crop_boxes(torch.zeros(1, 1, 3, 3), (9, 13), theta=0.5, padding=0.2).tolist() == [[0, 9, 0, 13]]


def test_random_crop_threshold_is_drawn_per_image_in_range():
    att = _peak_map(3, 3, 1, 1).expand(32, 1, 3, 3)
    g = torch.Generator().manual_seed(0)
    boxes = attention_crop_boxes(att, (9, 13), theta=(0.3, 0.9), padding=0.1, generator=g)
    thetas = 0.3 + 0.6 * torch.rand(32, generator=torch.Generator().manual_seed(0))
    expected = [attention_crop_boxes(att[:1], (9, 13), theta=float(t), padding=0.1)[0].tolist() for t in thetas]
    assert boxes.tolist() == expected
    assert len({tuple(b) for b in expected}) >= 2


def test_crop_images_equal_per_image_slice_and_resize():
    torch.manual_seed(3)
    images = torch.randn(3, 3, 20, 24)
    att = torch.rand(3, 1, 5, 6) ** 4
    crops, boxes = attention_crop(images, att, theta=0.5, padding=0.1)
    for i, (h0, h1, w0, w1) in enumerate(boxes.tolist()):
        ref = F.interpolate(images[i:i + 1, :, h0:h1, w0:w1], size=(20, 24), mode="bilinear", align_corners=True)
        torch.testing.assert_close(crops[i:i + 1], ref, atol=1e-5, rtol=1e-5)


def test_drop_zeroes_exactly_pixels_above_threshold():
    torch.manual_seed(4)
    images = torch.randn(2, 3, 9, 13) + 10.0  # no zero pixels to begin with
    att = torch.cat([_peak_map(3, 3, 1, 1), _peak_map(3, 3, 0, 2)])
    out = attention_drop(images, att, theta=0.45)
    up = F.interpolate(att, size=(9, 13), mode="bilinear", align_corners=True)
    dropped = up >= 0.45 * 2.0  # theta * max over the low-resolution map
    assert dropped.any() and (~dropped).any()
    assert torch.equal(out == 0, dropped.expand_as(out))
    assert torch.equal(out[~dropped.expand_as(out)], images[~dropped.expand_as(out)])
    # hand check on map 0's centre row (row 4): columns 3..9 are dropped
    assert (out[0, 0, 4] == 0).nonzero().flatten().tolist() == list(range(3, 10))


def test_drop_all_zero_map_zeroes_whole_image():
    out = attention_drop(torch.ones(1, 3, 8, 8), torch.zeros(1, 1, 2, 2), theta=(0.2, 0.5))
    assert (out == 0).all()


def test_sample_attention_maps_probabilities():
    att = torch.zeros(1, 3, 2, 2)
    att[0, 1] = 0.25  # sum 1 -> weight 1
    att[0, 2] = 1.0  # sum 4 -> weight 2
    g = torch.Generator().manual_seed(0)
    picked = sample_attention_maps(att.expand(4000, 3, 2, 2), 2, generator=g)
    assert picked.shape == (4000, 2, 2, 2)
    is_map2 = (picked[:, :, 0, 0] == 1.0).float()
    is_map1 = (picked[:, :, 0, 0] == 0.25).float()
    assert torch.equal(is_map1 + is_map2, torch.ones_like(is_map1))  # map 0 (sum 0, weight 1e-6) is never drawn
    assert abs(is_map2.mean().item() - 2 / 3) < 0.03  # p_k proportional to sqrt(sum A_k)


def test_center_update_repeated_labels_last_write_wins():
    torch.manual_seed(5)
    beta = 0.05
    centers = torch.randn(4, 6)
    centers[3] = 0.0  # a class never seen yet: its normalised center is 0
    old = centers.clone()
    labels = torch.tensor([1, 2, 1, 3, 1])
    f = F.normalize(torch.randn(5, 6), dim=1)
    c_b = update_feature_centers(centers, f, labels, beta)
    torch.testing.assert_close(c_b, F.normalize(old[labels], dim=1))  # centers before the update
    assert torch.equal(c_b[3], torch.zeros(6))
    expected = old.clone()
    expected[1] = old[1] + beta * (f[4] - old[1] / old[1].norm())  # class 1 appears at 0, 2, 4: sample 4 wins
    expected[2] = old[2] + beta * (f[1] - old[2] / old[2].norm())
    expected[3] = beta * f[3]
    torch.testing.assert_close(centers, expected)
    # the reference's advanced-index statement gives the same on CPU
    ref = old.clone()
    ref[labels] += beta * (f - F.normalize(ref[labels], dim=-1))
    torch.testing.assert_close(centers, ref)


def test_center_loss_value_and_gradient():
    torch.manual_seed(6)
    f = torch.randn(3, 4, requires_grad=True)
    c = torch.randn(3, 4, requires_grad=True)
    loss = center_loss(f, c)
    torch.testing.assert_close(loss, ((f - c) ** 2).sum(dim=1).mean())
    loss.backward()
    torch.testing.assert_close(f.grad, 2 * (f - c).detach() / 3)
    assert c.grad is None  # the centers are constants


def _tiny_wsdan(seed: int = 7) -> WSDAN:
    torch.manual_seed(seed)
    return WSDAN(TinyBackbone(), num_classes=4, num_attentions=3)


def test_training_loss_matches_manual_step():
    model = _tiny_wsdan()
    ref = copy.deepcopy(model)
    model.train()
    ref.train()
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1, 1, 3])
    loss, parts = wsdan_training_loss(model, x, y, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    logits, f, att = ref(x)
    c_b = F.normalize(ref.feature_center[y], dim=-1)
    ref.feature_center[y] += 0.05 * (f.detach() - c_b)
    lc = ((f - c_b) ** 2).sum() / 4
    maps = sample_attention_maps(att.detach(), 2, generator=g)
    crops, _ = attention_crop(x, maps[:, :1], (0.4, 0.6), 0.1, generator=g)
    drops = attention_drop(x, maps[:, 1:], (0.2, 0.5), generator=g)
    expected = (F.cross_entropy(logits, y) + F.cross_entropy(ref(crops).logits, y)
                + F.cross_entropy(ref(drops).logits, y)) / 3 + lc
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(parts["loss_center"], lc.detach())
    torch.testing.assert_close(model.feature_center, ref.feature_center)
    assert model.feature_center.abs().sum() > 0
    loss.backward()
    expected.backward()
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    # three BN-updating forwards
    assert model.backbone.stem[1].num_batches_tracked.item() == 3


def test_refined_logits_average_raw_and_crop():
    model = _tiny_wsdan().eval()
    x = torch.randn(2, 3, 32, 32)
    raw, refined = wsdan_refined_logits(model, x)
    logits, _, att = model(x)
    crops, _ = attention_crop(x, att.mean(1, keepdim=True), theta=0.1, padding=0.05)
    torch.testing.assert_close(raw, logits)
    torch.testing.assert_close(refined, (logits + model(crops).logits) / 2)
    _, probs = wsdan_refined_logits(model, x, combine="probs")
    torch.testing.assert_close(probs.exp().sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="combine"):
        wsdan_refined_logits(model, x, combine="max")
