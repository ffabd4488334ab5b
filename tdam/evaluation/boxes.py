"""Class activation maps and the box rule of the TDAM supplement (spec 05 §5.3).

Box rule, as the supplement states it: upsample the map to the input size (bilinear), min-max normalise it, threshold
at 15 % of the maximum, keep the largest 8-connected component, return its bounding box. Boxes are integer pixel
coordinates ``(x0, y0, x1, y1)``, both corners INCLUSIVE (the ILSVRC devkit convention, so a one-pixel box is
``(x, y, x, y)`` with area 1); :func:`box_iou_inclusive` uses the same convention.

Notes on the details the supplement leaves open:

- The public TDAM code passes the map through a JET colour map and back to grey before thresholding; we follow the
  stated rule instead (no colour-map round trip).
- Thresholding keeps pixels STRICTLY above ``threshold * max`` (OpenCV's ``THRESH_BINARY``, which the public code and
  wsolevaluation use). After min-max normalisation the maximum is 1, so the cut is at ``threshold``.
- A constant map carries no location: its box is the whole image.
- Ties between equally large components go to the first one in raster order.

Batched: everything runs on whole ``(N, h, w)`` stacks. Connected components are labelled on the CPU by ONE
``scipy.ndimage.label`` call over the whole stack (a 3-D structuring element without links along the batch axis, so
components never cross images); component sizes, the per-image choice and the bounding boxes are vectorised
(``numpy.bincount`` / ``numpy.lexsort`` / tensor reductions), with no Python loop over images or pixels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "BOX_THRESHOLD",
    "upsample_normalise",
    "boxes_from_maps",
    "box_iou_inclusive",
    "cam_maps",
    "gradcam_maps",
]

BOX_THRESHOLD = 0.15

# 8-connectivity inside each image, no connectivity along the batch axis.
_STRUCTURE_8 = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_8[1] = True


def upsample_normalise(maps: torch.Tensor, size: tuple[int, int] | int | None = None) -> torch.Tensor:
    """Bilinear upsampling of ``maps`` (N, h, w) to ``size`` (H, W) and per-map min-max normalisation to [0, 1].

    Constant maps become all zeros. ``size=None`` keeps the map's own size.
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must be (N, h, w), got shape {tuple(maps.shape)}")
    maps = maps.float()
    if size is not None:
        if isinstance(size, int):
            size = (size, size)
        if tuple(size) != tuple(maps.shape[-2:]):
            maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    lo = maps.amin(dim=(1, 2), keepdim=True)
    hi = maps.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def boxes_from_maps(
    maps: torch.Tensor, size: tuple[int, int] | int | None = None, threshold: float = BOX_THRESHOLD
) -> torch.Tensor:
    """Boxes (N, 4) int64 ``(x0, y0, x1, y1)`` inclusive, in the coordinates of the upsampled map, on maps' device.

    ``maps`` (N, h, w): one saliency map per image (CAM / Grad-CAM). ``size``: the input image size (H, W) the maps
    are upsampled to (None: no upsampling). See the module docstring for the exact rule.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    norm = upsample_normalise(maps, size)
    n, h, w = norm.shape
    device = norm.device
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.long, device=device)
    if not torch.isfinite(norm).all():
        raise ValueError("saliency maps contain NaN or inf values; cannot extract boxes")
    constant = norm.amax(dim=(1, 2)) <= 0  # min-max normalised maps have max 1 unless constant
    fg = (norm > threshold).cpu().numpy()
    labels, n_labels = ndimage.label(fg, structure=_STRUCTURE_8)
    full = torch.tensor([0, 0, w - 1, h - 1], dtype=torch.long, device=device).expand(n, 4).clone()
    if n_labels == 0:
        return full
    flat = labels.reshape(n, -1)
    sizes = np.bincount(flat.ravel(), minlength=n_labels + 1)[1:]
    # image index of each label (labels never cross images; any pixel of the label names it)
    img_of = np.empty(n_labels + 1, dtype=np.int64)
    img_of[flat.ravel()] = np.repeat(np.arange(n), h * w)
    img_of = img_of[1:]
    ids = np.arange(1, n_labels + 1)
    order = np.lexsort((ids, -sizes, img_of))  # per image: largest first, then first in raster order
    imgs_sorted = img_of[order]
    first = np.unique(imgs_sorted, return_index=True)[1]
    chosen = np.zeros(n, dtype=np.int64)  # 0 = no component (constant map)
    chosen[imgs_sorted[first]] = ids[order][first]
    keep = torch.from_numpy(labels).to(device) == torch.from_numpy(chosen).to(device)[:, None, None]
    rows = keep.any(dim=2)  # (N, H)
    cols = keep.any(dim=1)  # (N, W)
    ar_h = torch.arange(h, device=device)
    ar_w = torch.arange(w, device=device)
    y0 = torch.where(rows, ar_h, h).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1)
    x0 = torch.where(cols, ar_w, w).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    empty = constant.to(device) | torch.from_numpy(chosen == 0).to(device)
    return torch.where(empty[:, None], full, boxes)


def box_iou_inclusive(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
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


def cam_maps(
    features: torch.Tensor, fc_weight: torch.Tensor, classes: torch.Tensor, *, relu: bool = True
) -> torch.Tensor:
    """CAM (Zhou et al. 2016) of ``classes`` (N,) for a global-average-pool + linear head, batched.

    ``features`` (N, C, h, w) is the last feature map, ``fc_weight`` (K, C) the classifier weight. Returns (N, h, w):
    ``sum_c W[class, c] * F[c]``. With ``relu=True`` (default) negative evidence is clipped, which makes the map
    EXACTLY proportional to Grad-CAM's for such a head (Grad-CAM weights are ``W[class] / (h w)``), so both give the
    same box; ``relu=False`` is the original CAM.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (N, C, h, w), got shape {tuple(features.shape)}")
    w = fc_weight[classes].to(features.dtype)  # (N, C)
    cam = torch.einsum("nc,nchw->nhw", w, features)
    return cam.clamp_min(0) if relu else cam


def gradcam_maps(
    features: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor, *, retain_graph: bool = False
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of ``classes`` (N,) on ``features`` (N, C, h, w), batched.

    ``features`` must be in the autograd graph of ``logits`` (N, K) (e.g. from ``model.forward_steps(x, features=True)``
    under ``torch.enable_grad()``). One ``torch.autograd.grad`` call for the whole batch: the summed class scores are
    differentiated, which is exact because each image's logits depend only on its own features (eval mode).
    Returns ``relu(sum_c alpha_c F_c)`` with ``alpha_c`` the spatial mean of the gradient, (N, h, w), detached.
    """
    score = logits.gather(1, classes.view(-1, 1).to(logits.device)).sum()
    (grad,) = torch.autograd.grad(score, features, retain_graph=retain_graph)
    alpha = grad.mean(dim=(2, 3))
    return torch.einsum("nc,nchw->nhw", alpha, features.detach()).clamp_min(0)
