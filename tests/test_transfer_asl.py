"""ASL loss and the ASL-style mAP (Ridnik et al. 2021, Alibaba-MIIL/ASL) against formulas written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tdam.transfer.asl import asymmetric_loss, average_precision_per_class, mean_average_precision, multilabel_prf


def original_asl(x: torch.Tensor, y: torch.Tensor, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8) -> torch.Tensor:
    """The ASL repository's AsymmetricLoss, restated: L = y log p + (1-y) log(1 - p_m), weights detached, -sum."""
    p = torch.sigmoid(x)
    p_m = (p - clip).clamp(min=0)  # probability shifting of negatives: q = min(1 - p + clip, 1) = 1 - p_m
    ll = y * torch.log(p.clamp(min=eps)) + (1 - y) * torch.log((1 - p_m).clamp(min=eps))
    with torch.no_grad():
        w = y * (1 - p) ** gamma_pos + (1 - y) * p_m ** gamma_neg
    return -(ll * w).sum()


@pytest.mark.parametrize("gamma_pos", [0.0, 1.0])
def test_asl_value_and_gradient_equal_original_formula(gamma_pos):
    torch.manual_seed(0)
    x = (3 * torch.randn(6, 10, dtype=torch.float64)).requires_grad_()
    y = (torch.rand(6, 10) < 0.3).double()
    loss = asymmetric_loss(gamma_pos=gamma_pos)(x, y)
    (g,) = torch.autograd.grad(loss, x)
    x_ref = x.detach().clone().requires_grad_()
    ref = original_asl(x_ref, y, gamma_pos=gamma_pos)
    (g_ref,) = torch.autograd.grad(ref, x_ref)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)  # timm computes in float32
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=1e-6)


def test_asl_defaults_are_the_coco_script_and_sum_reduction():
    loss = asymmetric_loss()
    assert (loss.gamma_neg, loss.gamma_pos, loss.clip, loss.disable_torch_grad_focal_loss, loss.reduction) == (
        4, 0, 0.05, True, "sum")
    x, y = torch.randn(4, 5), (torch.rand(4, 5) < 0.5).float()
    torch.testing.assert_close(loss(torch.cat([x, x]), torch.cat([y, y])), 2 * loss(x, y))  # scales with batch
    # with the focusing weights in the graph, the gradient differs
    xg = x.clone().requires_grad_()
    (g_off,) = torch.autograd.grad(loss(xg, y), xg)
    (g_on,) = torch.autograd.grad(asymmetric_loss(disable_torch_grad_focal_loss=False)(xg, y), xg)
    assert not torch.allclose(g_off, g_on)


def test_asl_rejects_bad_configuration():
    with pytest.raises(ValueError, match="reduction"):
        asymmetric_loss(reduction="avg")
    with pytest.raises(ValueError, match="clip"):
        asymmetric_loss(clip=1.5)


def test_average_precision_hand_computed_ranking():
    scores = torch.tensor([
        [0.9, 0.1, 0.3],
        [0.8, 0.7, 0.2],
        [0.7, 0.6, 0.1],
        [0.6, 0.9, 0.4],
        [0.5, 0.2, 0.5],
    ])
    targets = torch.tensor([
        [1, 0, 0],
        [0, 1, 0],
        [1, 0, 0],
        [0, 0, 0],
        [1, 1, 0],
    ])
    ap = average_precision_per_class(scores, targets)
    # class 0: ranking 0.9(+) 0.8(-) 0.7(+) 0.6(-) 0.5(+): precisions 1/1, 2/3, 3/5 over 3 positives
    # class 1: ranking 0.9(-) 0.7(+) 0.6(-) 0.2(+) 0.1(-): precisions 1/2, 2/4 over 2 positives
    # class 2: no positives -> 0
    expected = torch.tensor([(1 + 2 / 3 + 3 / 5) / 3, (1 / 2 + 2 / 4) / 2, 0.0], dtype=torch.float64)
    torch.testing.assert_close(ap, expected)
    assert mean_average_precision(scores, targets) == pytest.approx(100 * expected.mean().item())


def test_average_precision_ties_are_broken_by_sample_index():
    ap = average_precision_per_class(torch.tensor([[0.5], [0.5]]), torch.tensor([[0], [1]]))
    assert ap.item() == pytest.approx(0.5)  # the earlier (negative) sample is ranked first


def _pr_curve_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """sklearn's definition: sum over thresholds of (R_n - R_{n-1}) * P_n."""
    ap, prev_recall = 0.0, 0.0
    for thr in np.sort(np.unique(scores))[::-1]:
        pred = scores >= thr
        tp = float((pred & (targets == 1)).sum())
        precision, recall = tp / pred.sum(), tp / targets.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_average_precision_equals_pr_curve_definition_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.permutation(400).reshape(50, 8) / 400.0  # distinct scores: no ties
    targets = (rng.random((50, 8)) < 0.3).astype(np.int64)
    targets[0] = 1
    ours = average_precision_per_class(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
    ref = np.array([_pr_curve_average_precision(scores[:, k], targets[:, k]) for k in range(8)])
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_average_precision_agrees_with_sklearn_without_ties():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    scores = rng.permutation(600).reshape(60, 10) / 600.0
    targets = (rng.random((60, 10)) < 0.25).astype(np.int64)
    targets[0] = 1
    ours = average_precision_per_class(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
    ref = [sklearn_metrics.average_precision_score(targets[:, k], scores[:, k]) for k in range(10)]
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_multilabel_prf_hand_computed():
    scores = torch.tensor([[0.9, 0.85, 0.1], [0.95, 0.2, 0.3], [0.1, 0.81, 0.9]])
    targets = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    m = multilabel_prf(scores, targets, threshold=0.8)
    # predictions: class 0 {0, 1} (both correct), class 1 {0, 2} (one correct), class 2 {2} (wrong)
    # Nc = (2, 1, 0), Np = (2, 2, 1), Ng = (2, 2, 0)
    cp, cr = (1 + 0.5 + 0) / 3, (1 + 0.5 + 0) / 3  # class 2 has Ng = 0: its recall counts as 0
    op, orr = 3 / 5, 3 / 4
    assert m["CP"] == pytest.approx(100 * cp) and m["CR"] == pytest.approx(100 * cr)
    assert m["CF1"] == pytest.approx(100 * 2 * cp * cr / (cp + cr))
    assert m["OP"] == pytest.approx(100 * op) and m["OR"] == pytest.approx(100 * orr)
    assert m["OF1"] == pytest.approx(100 * 2 * op * orr / (op + orr))


def test_metrics_reject_malformed_inputs():
    with pytest.raises(ValueError, match="same shape"):
        mean_average_precision(torch.rand(3, 2), torch.ones(3, 3))
    with pytest.raises(ValueError, match="0/1"):
        mean_average_precision(torch.rand(3, 2), torch.full((3, 2), 0.5))
