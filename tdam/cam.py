"""Class activation maps of the last feature map and the box they point at: CAM, Grad-CAM, per-step maps, box rule.

- CAM (Zhou et al. 2016) for heads made of global average pooling + one linear layer (timm ResNet): ``sum_c W[k, c]
  F_c``, no backward pass.
- Grad-CAM (Selvaraju et al. 2017) for any head: ``relu(sum_c alpha_c F_c)`` with ``alpha_c`` the spatial mean of the
  gradient of the class score; it re-applies only the head (``model.forward_head``), so it works for ResNet/ConvNeXt
  (pool -> fc) and MobileNetV3 (pool -> conv_head -> classifier) alike. For a GAP+FC head it equals CAM / (h w).
- Per-step maps: a TD model's ``forward_steps(x, features=True)`` computes the stem and earlier stages once and gives
  the last feature map and logits after each computation step k = 1 ... t of the last TD stage.
- Box rule of the TDAM supplement: upsample the map to the input size (bilinear), min-max normalise it, threshold at
  15 % of the maximum, keep the largest 8-connected component, return its bounding box. Boxes are integer pixel
  coordinates ``(x0, y0, x1, y1)``, both corners INCLUSIVE (the ILSVRC devkit convention, a one-pixel box is
  ``(x, y, x, y)``); :func:`tdam.metrics.box_iou_inclusive` uses the same convention.

Details the supplement leaves open: the public TDAM code passes the map through a JET colour map and back to grey
before thresholding, we follow the stated rule instead; thresholding keeps pixels STRICTLY above ``threshold * max``
(OpenCV's ``THRESH_BINARY``, as the public code and wsolevaluation); a constant map carries no location, its box is
the whole image; ties between equally large components go to the first one in raster order.

Batched throughout: one ``torch.autograd.grad`` per selected class column for the whole batch (exact in eval mode,
where each image's logits depend only on its own features); connected components are labelled on the CPU by ONE
``scipy.ndimage.label`` call over the whole (N, H, W) stack (no links along the batch axis), and the per-image
choice and bounding boxes are vectorised.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

__all__ = [
    "BOX_THRESHOLD", "upsample_normalise", "boxes_from_maps", "cam_maps", "gradcam_maps", "gap_fc_weight",
    "CamResult", "grad_cam_maps", "capture_output", "step_features", "head_grad_cam", "grad_cam", "grad_cam_steps",
    "step_maps",
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


def gap_fc_weight(model: nn.Module) -> torch.Tensor | None:
    """The classifier weight (K, C) when the head is global average pooling + one linear layer (timm ResNet), else
    None. For such heads CAM equals Grad-CAM up to a positive scale (same box) and needs no backward pass."""
    fc = getattr(model, "fc", None)
    pool = getattr(model, "global_pool", None)
    if not isinstance(fc, nn.Linear) or pool is None:
        return None
    if getattr(pool, "pool_type", None) != "avg":
        return None
    if getattr(model, "head_hidden_size", None) not in (None, fc.in_features):
        return None
    return fc.weight


@dataclass
class CamResult:
    """Grad-CAM maps of one forward pass (one computation step).

    cams: (N, K, h, w) maps for the K selected classes; classes: (N, K) the classes (rank order for top-k);
    scores: (N, K) their softmax probabilities; logits: (N, num_classes).
    """

    cams: Tensor
    classes: Tensor
    scores: Tensor
    logits: Tensor

    @property
    def confidence(self) -> Tensor:
        """Max softmax probability per image (N,): the step's confidence p_k."""
        return self.logits.softmax(dim=1).amax(dim=1)

    @property
    def prediction(self) -> Tensor:
        return self.logits.argmax(dim=1)


def grad_cam_maps(features: Tensor, logits: Tensor, classes: Tensor) -> Tensor:
    """Grad-CAM maps (N, K, h, w) of ``classes`` (N,) or (N, K) from ``features`` (N, C, h, w) in ``logits``' graph:
    one batched backward (:func:`gradcam_maps`) per column of ``classes``, the graph kept between columns."""
    if features.dim() != 4:
        raise ValueError(f"Grad-CAM needs a (N, C, h, w) feature map, got shape {tuple(features.shape)}")
    if classes.dim() == 1:
        classes = classes[:, None]
    if classes.dim() != 2 or classes.shape[0] != logits.shape[0]:
        raise ValueError(f"classes must be (N,) or (N, K) with N={logits.shape[0]}, got {tuple(classes.shape)}")
    k = classes.shape[1]
    maps = [gradcam_maps(features, logits, classes[:, j], retain_graph=j < k - 1) for j in range(k)]
    return torch.stack(maps, dim=1)


@contextlib.contextmanager
def capture_output(model: nn.Module, layer: str) -> Iterator[dict[str, Tensor]]:
    """Forward hook recording the output of ``model.<layer>`` into the yielded dict under 'out'."""
    modules = dict(model.named_modules())
    if layer not in modules:
        top = [n for n in modules if n and "." not in n]
        raise ValueError(f"model has no module {layer!r}; top-level modules: {top}")
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _args: tuple[Tensor, ...], out: Tensor) -> None:
        store["out"] = out

    handle = modules[layer].register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _check_eval(model: nn.Module) -> None:
    if model.training:
        raise ValueError(
            "call model.eval() first: batched Grad-CAM needs images that do not interact "
            "(train-mode batch norm couples them; dropout makes maps random)"
        )


def _select(logits: Tensor, classes: Tensor | None, topk: int) -> Tensor:
    if classes is not None:
        return classes.view(logits.shape[0], -1).to(logits.device)
    if not 1 <= topk <= logits.shape[1]:
        raise ValueError(f"topk must be in 1..{logits.shape[1]}, got {topk}")
    return logits.topk(topk, dim=1).indices


def step_features(model: nn.Module, x: Tensor, *, steps: bool = True) -> list[tuple[Tensor, Tensor]]:
    """(features, logits) at each computation step k = 1 ... t of the last TD stage, without autograd history.

    A TD model's ``forward_steps(x, features=True)`` computes the stem and earlier stages once; a model without
    ``forward_steps`` (the plain baseline), or ``steps=False``, gives one entry from ``forward_features`` /
    ``forward_head`` (for a TD model: all trained steps run).
    """
    _check_eval(model)
    with torch.no_grad():
        if steps and callable(getattr(model, "forward_steps", None)):
            return [(f.detach(), lg.detach()) for f, lg in model.forward_steps(x, features=True)]
        f = model.forward_features(x)
        return [(f, model.forward_head(f))]


def head_grad_cam(model: nn.Module, features: Tensor, classes: Tensor) -> Tensor:
    """Grad-CAM maps (N, K, h, w) of ``classes`` (N,) / (N, K) on a last feature map, re-applying only the head."""
    f = features.detach().requires_grad_(True)
    with torch.enable_grad():
        return grad_cam_maps(f, model.forward_head(f), classes)


def grad_cam(model: nn.Module, x: Tensor, classes: Tensor | None = None, *, topk: int = 1,
             layer: str | None = None) -> CamResult:
    """Grad-CAM of the given ``classes`` (N,) / (N, K), or of the top-``topk`` predicted classes, for a batch ``x``.

    Default target: the ``forward_features`` output (the last feature map), re-applying only the head with gradients.
    With ``layer`` (a module name, e.g. ``'layer3'``), a forward hook captures that module's output during a full
    forward pass and the gradient flows back to it through the rest of the network.
    """
    _check_eval(model)
    if layer is None:
        ((feats, logits),) = step_features(model, x, steps=False)
        cls = _select(logits, classes, topk)
        return CamResult(head_grad_cam(model, feats, cls), cls, logits.softmax(1).gather(1, cls), logits)
    with torch.enable_grad(), capture_output(model, layer) as store:
        logits = model(x)
        cls = _select(logits.detach(), classes, topk)
        cams = grad_cam_maps(store["out"], logits, cls)
    logits = logits.detach()
    return CamResult(cams, cls, logits.softmax(1).gather(1, cls), logits)


def grad_cam_steps(model: nn.Module, x: Tensor, classes: Tensor | None = None, *, topk: int = 1) -> list[CamResult]:
    """Grad-CAM at each computation step k = 1 ... t of the last TD stage (one :class:`CamResult` per step).

    ``classes`` fixes the class(es) at every step; by default each step's own top-``topk`` predictions. A model
    without ``forward_steps`` (the plain baseline) gives a single step.
    """
    out = []
    for feats, logits in step_features(model, x):
        cls = _select(logits, classes, topk)
        out.append(CamResult(head_grad_cam(model, feats, cls), cls, logits.softmax(1).gather(1, cls), logits))
    return out


def step_maps(model: nn.Module, x: Tensor, *, maps: bool = True) -> tuple[Tensor, Tensor | None]:
    """Per-step logits (t, N, K) of the last TD stage and, with ``maps``, the map of each step's top-1 class
    (t, N, h, w) on that step's last feature map: CAM for a GAP+FC head, else Grad-CAM through the head. One
    ``forward_steps`` pass for all steps (the model may be in train or eval mode; no Grad-CAM coupling check)."""
    with torch.no_grad():
        if not maps:
            return torch.stack(model.forward_steps(x)), None
        outs = model.forward_steps(x, features=True)
    logits = torch.stack([lg for _, lg in outs]).float()
    preds = logits.argmax(dim=-1)  # (t, N)
    weight = gap_fc_weight(model)
    if weight is not None:
        with torch.no_grad():
            cams = torch.stack([cam_maps(f.float(), weight.float(), preds[k]) for k, (f, _) in enumerate(outs)])
        return logits, cams
    cams = []
    for k, (f, _) in enumerate(outs):
        with torch.enable_grad():
            feat = f.detach().float().requires_grad_(True)
            cams.append(gradcam_maps(feat, model.forward_head(feat), preds[k]))
    return logits, torch.stack(cams)
