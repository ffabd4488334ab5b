"""Box overlap with pixel-inclusive corners (the ILSVRC devkit's convention, as :mod:`tdam.cam` writes its boxes)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

__all__ = ["box_iou_inclusive", "pad_boxes", "max_iou"]


def box_iou_inclusive(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of boxes ``a`` (..., 4) and ``b`` (..., 4) (broadcast), pixel-inclusive corners.

    Area of ``(x0, y0, x1, y1)`` is ``(x1 - x0 + 1) * (y1 - y0 + 1)`` as in the ILSVRC devkit. Pass ``a[:, None]`` and
    ``b[None]`` for the pairwise (N, M) matrix.
    """
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64, device=a.device)
    if a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have 4 coordinates in the last axis, got {tuple(a.shape)} and {tuple(b.shape)}")
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0]) + 1).clamp_min(0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1]) + 1).clamp_min(0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


def pad_boxes(boxes: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack per-image ground-truth boxes (M_i, 4) into (N, M, 4) padded with zeros, and the validity mask (N, M)."""
    if not boxes:
        raise ValueError("no images: expected one (M_i, 4) tensor of ground-truth boxes per image")
    rows = [torch.as_tensor(b).reshape(-1, 4).long() for b in boxes]
    counts = torch.tensor([r.shape[0] for r in rows])
    m = max(1, int(counts.max()))
    out = pad_sequence(rows + [torch.zeros(m, 4, dtype=torch.long)], batch_first=True)[:-1]
    mask = torch.arange(m)[None, :] < counts[:, None]
    return out, mask


def max_iou(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """Best inclusive IoU of each predicted box (N, K, 4) over the image's valid GT boxes (N, M, 4): (N, K).

    An image without any ground-truth box gets -1 (never correct).
    """
    iou = box_iou_inclusive(pred[:, :, None, :], gt[:, None, :, :].to(pred.device))  # (N, K, M)
    iou = iou.masked_fill(~mask[:, None, :].to(iou.device), -1.0)
    return iou.amax(dim=2)
