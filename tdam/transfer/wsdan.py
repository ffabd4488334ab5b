"""WS-DAN: Weakly Supervised Data Augmentation Network (Hu et al., 2019, https://arxiv.org/abs/1901.09891).

The fine-grained transfer experiment of the TDAM supplement (§1.3) keeps WS-DAN as published (GuYuc/WS-DAN.PyTorch)
and swaps its backbone for our ImageNet-trained models. Spec: ``06-transfer.md`` §1. Vocabulary:

- feature maps F (B, C, H, W): the backbone's last feature map (``forward_features``, ResNet layer4) at its trained t;
- attention maps A (B, M, H, W), M = 32: 1x1 conv (no bias) + BatchNorm (eps 1e-3) + ReLU on F;
- bilinear attention pooling (BAP): part features f[b, m, c] = mean_hw(A_m F_c), flattened m-major to M*C,
  signed square root, L2-normalised; the classifier sees 100 * f;
- feature centers (num_classes, M*C): a buffer updated with rate beta = 5e-2 and the center loss ||f - c||^2;
- attention cropping / dropping: data augmentation driven by one sampled attention map per image;
- test-time refinement: average the logits of the raw image and of its crop around the mean attention map.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from tdam.checkpoint import unwrap_model

__all__ = [
    "WSDAN",
    "WSDANOutput",
    "bilinear_attention_pooling",
    "sample_attention_maps",
    "attention_crop_boxes",
    "attention_crop",
    "attention_drop",
    "center_loss",
    "update_feature_centers",
    "wsdan_training_loss",
    "wsdan_refined_logits",
]

BAP_EPS = 1e-12
CLASSIFIER_SCALE = 100.0


class WSDANOutput(NamedTuple):
    """``WSDAN.forward``'s result: logits (B, K), normalised part features f (B, M*C), attention maps (B, M, H, W)."""

    logits: torch.Tensor
    features: torch.Tensor
    attention_maps: torch.Tensor


def bilinear_attention_pooling(features: torch.Tensor, attention_maps: torch.Tensor) -> torch.Tensor:
    """Bilinear attention pooling (BAP): feature maps (B, C, H, W) and attention maps (B, M, H', W') -> f (B, M*C).

    Attention maps of a different size are bilinearly resized to (H, W) with ``align_corners=True``. The result is
    the m-major flattened part-feature matrix after the signed square root and the L2 normalisation of the whole
    M*C vector (the normalised, unscaled f that the center loss uses).
    """
    if features.ndim != 4 or attention_maps.ndim != 4 or features.shape[0] != attention_maps.shape[0]:
        raise ValueError(f"expected features (B, C, H, W) and attention maps (B, M, H', W'), got "
                         f"{tuple(features.shape)} and {tuple(attention_maps.shape)}")
    h, w = features.shape[-2:]
    if attention_maps.shape[-2:] != (h, w):
        attention_maps = F.interpolate(attention_maps, size=(h, w), mode="bilinear", align_corners=True)
    f = torch.einsum("imhw,inhw->imn", attention_maps, features) / float(h * w)
    f = f.flatten(1)
    f = torch.sign(f) * torch.sqrt(f.abs() + BAP_EPS)
    return F.normalize(f, dim=-1)


class WSDAN(nn.Module):
    """WS-DAN head on a backbone's last feature map.

    ``backbone`` is any timm-style model with ``forward_features`` and ``num_features`` (a ``tdam.create_model``
    model; a TD model runs at its trained t). Its own classifier is removed (``reset_classifier(0)``) so no unused
    parameters remain (DDP). ``feature_center`` is a persistent buffer, hence saved and restored with the model's
    state dict (our checkpoints' 'model' entry) — one set of centers per run, restored on resume (spec §1.11).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, num_attentions: int = 32, beta: float = 5e-2) -> None:
        super().__init__()
        if num_classes < 1 or num_attentions < 1:
            raise ValueError(f"num_classes and num_attentions must be >= 1, got {num_classes}, {num_attentions}")
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta (feature-center update rate) must be in (0, 1], got {beta}")
        if not hasattr(backbone, "forward_features") or not hasattr(backbone, "num_features"):
            raise ValueError("backbone must be a timm-style model with forward_features() and num_features")
        if hasattr(backbone, "reset_classifier"):
            backbone.reset_classifier(0)
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_attentions = num_attentions
        self.num_features = int(backbone.num_features)
        self.beta = beta
        # Inception's BasicConv2d: 1x1 conv without bias, BatchNorm eps 1e-3, ReLU.
        self.attention = nn.Sequential(
            nn.Conv2d(self.num_features, num_attentions, kernel_size=1, bias=False),
            nn.BatchNorm2d(num_attentions, eps=1e-3),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(num_attentions * self.num_features, num_classes, bias=False)
        self.register_buffer("feature_center", torch.zeros(num_classes, num_attentions * self.num_features))

    def forward(self, x: torch.Tensor) -> WSDANOutput:
        feature_maps = self.backbone.forward_features(x)
        attention_maps = self.attention(feature_maps)
        # BAP and the classifier in float32 also under autocast: the signed sqrt, the L2 norm over M*C = 65k values
        # and the x100 scale are precision-sensitive (the reference trains in fp32).
        with torch.autocast(device_type=x.device.type, enabled=False):
            f = bilinear_attention_pooling(feature_maps.float(), attention_maps.float())
            logits = self.fc(f * CLASSIFIER_SCALE)
        return WSDANOutput(logits, f, attention_maps)


def sample_attention_maps(attention_maps: torch.Tensor, num_samples: int = 2,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Per image, draw ``num_samples`` attention maps with replacement (spec §1.5) -> (B, num_samples, H, W).

    The probability of map k is proportional to sqrt(sum_hw A_k + 1e-12). With two samples the first drives the
    crop and the second the drop, as in the PyTorch re-implementation.
    """
    b, m = attention_maps.shape[:2]
    weights = torch.sqrt(attention_maps.detach().float().sum(dim=(2, 3)) + BAP_EPS)
    weights = weights / weights.sum(dim=1, keepdim=True)
    idx = torch.multinomial(weights, num_samples, replacement=True, generator=generator)
    return attention_maps[torch.arange(b, device=attention_maps.device)[:, None], idx]


def _relative_thresholds(attention_map: torch.Tensor, theta: float | tuple[float, float] | torch.Tensor,
                         generator: torch.Generator | None) -> torch.Tensor:
    """theta * max(A_k) per image (max over the low-resolution map); a tuple means theta ~ U(lo, hi) per image."""
    b = attention_map.shape[0]
    peak = attention_map.reshape(b, -1).amax(dim=1)
    if isinstance(theta, tuple):
        lo, hi = theta
        if not 0.0 <= lo <= hi:
            raise ValueError(f"theta range must satisfy 0 <= lo <= hi, got {theta}")
        u = torch.rand(b, generator=generator, device="cpu" if generator is None else generator.device)
        frac = lo + (hi - lo) * u.to(attention_map.device, attention_map.dtype)
    else:
        frac = torch.as_tensor(theta, dtype=attention_map.dtype, device=attention_map.device).expand(b)
    return frac * peak


def _upsampled(attention_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if attention_map.ndim != 4 or attention_map.shape[1] != 1:
        raise ValueError(f"expected one attention map per image (B, 1, H, W), got {tuple(attention_map.shape)}")
    return F.interpolate(attention_map.float(), size=size, mode="bilinear", align_corners=True)[:, 0]


def attention_crop_boxes(attention_map: torch.Tensor, image_size: tuple[int, int],
                         theta: float | tuple[float, float] | torch.Tensor, padding: float,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop boxes (B, 4) as integer (hmin, hmax, wmin, wmax), hmax/wmax exclusive (spec §1.6).

    Mask = bilinear upsampling (align_corners=True) of A_k to the image size, kept where >= theta * max(A_k);
    box = min/max row and column of the mask, expanded by padding * H rows and padding * W columns, truncated to int
    and clamped to [0, H] and [0, W]. An all-zero map gives theta = 0, a full mask and the whole image.
    """
    img_h, img_w = image_size
    thr = _relative_thresholds(attention_map.detach().float(), theta, generator)
    mask = _upsampled(attention_map.detach(), (img_h, img_w)) >= thr[:, None, None]
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    empty = ~rows.any(dim=1)
    if bool(empty.any()):
        raise ValueError(f"attention crop: empty mask for images {empty.nonzero().flatten().tolist()} (theta too "
                         "close to 1 for the upsampling, or a non-finite attention map)")

    def first_last(hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(hits.shape[1], device=hits.device, dtype=torch.float64)
        first = torch.where(hits, pos, torch.inf).amin(dim=1)
        last = torch.where(hits, pos, -torch.inf).amax(dim=1)
        return first, last

    (r0, r1), (c0, c1) = first_last(rows), first_last(cols)
    pad_h, pad_w = padding * img_h, padding * img_w
    hmin = torch.trunc(r0 - pad_h).clamp(min=0)
    hmax = torch.trunc(r1 + pad_h).clamp(max=img_h)
    wmin = torch.trunc(c0 - pad_w).clamp(min=0)
    wmax = torch.trunc(c1 + pad_w).clamp(max=img_w)
    boxes = torch.stack([hmin, hmax, wmin, wmax], dim=1).long()
    flat = (boxes[:, 1] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 2])
    if bool(flat.any()):
        raise ValueError(f"attention crop: empty box for images {flat.nonzero().flatten().tolist()} (padding * image "
                         f"size < 1 px with a one-pixel mask; use padding >= 1 / {min(img_h, img_w)})")
    return boxes


def _resize_boxes(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Batched ``F.interpolate(images[b, :, h0:h1, w0:w1], (H, W), bilinear, align_corners=True)``.

    With align_corners=True, output row i of a crop [h0, h1) samples input row h0 + i * (h1 - 1 - h0) / (H - 1): one
    ``grid_sample`` with the same corner convention gives all crops at once.
    """
    b, _, img_h, img_w = images.shape
    boxes = boxes.to(images.device, torch.float64)

    def axis(start: torch.Tensor, stop: torch.Tensor, n: int) -> torch.Tensor:
        step = (stop - 1 - start) / max(n - 1, 1)
        pos = start[:, None] + torch.arange(n, device=images.device, dtype=torch.float64)[None] * step[:, None]
        return (2.0 * pos / max(n - 1, 1) - 1.0).to(images.dtype)

    gy, gx = axis(boxes[:, 0], boxes[:, 1], img_h), axis(boxes[:, 2], boxes[:, 3], img_w)
    grid = torch.stack([gx[:, None, :].expand(b, img_h, img_w), gy[:, :, None].expand(b, img_h, img_w)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


@torch.no_grad()
def attention_crop(images: torch.Tensor, attention_map: torch.Tensor,
                   theta: float | tuple[float, float] | torch.Tensor = (0.4, 0.6), padding: float = 0.1,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention cropping (spec §1.6): crop each normalised image around its map and resize back to (H, W).

    Training: theta ~ U(0.4, 0.6), padding 0.1; test-time refinement: theta 0.1, padding 0.05. Returns the resized
    crops (B, 3, H, W) and the boxes (B, 4) as (hmin, hmax, wmin, wmax).
    """
    boxes = attention_crop_boxes(attention_map, tuple(images.shape[-2:]), theta, padding, generator)
    return _resize_boxes(images, boxes), boxes


@torch.no_grad()
def attention_drop(images: torch.Tensor, attention_map: torch.Tensor,
                   theta: float | tuple[float, float] | torch.Tensor = (0.2, 0.5),
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Attention dropping (spec §1.7): zero (normalised space) the pixels whose upsampled A_k >= theta * max(A_k)."""
    thr = _relative_thresholds(attention_map.detach().float(), theta, generator)
    keep = _upsampled(attention_map.detach(), tuple(images.shape[-2:])) < thr[:, None, None]
    return images * keep[:, None].to(images.dtype)


def _gather_across_ranks(t: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def update_feature_centers(centers: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                           beta: float) -> torch.Tensor:
    """In-place center update (spec §1.4): centers[y] += beta * (f - normalize(centers[y])), last write wins.

    All rows are computed from the centers *before* the update. When a label repeats in the batch, the row of its
    LAST sample is written (the reference's advanced-index assignment on CPU; made deterministic here on every
    device). Under torch.distributed, features and labels are first all-gathered (rank-major order), so every rank
    applies the same update and keeps identical centers (the reference is single-GPU). Returns the normalised
    centers c_b used for the loss (local batch).
    """
    c_local = F.normalize(centers[labels], dim=-1)
    all_f, all_y = _gather_across_ranks(features.detach().to(centers.dtype)), _gather_across_ranks(labels)
    c_all = F.normalize(centers[all_y], dim=-1) if all_y is not labels else c_local
    new_rows = centers[all_y] + beta * (all_f - c_all)
    order = torch.arange(all_y.numel(), device=all_y.device)
    last = torch.full((centers.shape[0],), -1, dtype=torch.long, device=all_y.device)
    last = last.scatter_reduce(0, all_y, order, reduce="amax")
    written = (last >= 0).nonzero().flatten()
    centers[written] = new_rows[last[written]]
    return c_local


def center_loss(features: torch.Tensor, centers_batch: torch.Tensor) -> torch.Tensor:
    """L_center = (1/B) sum_b ||f_b - c_b||^2 (spec §1.4); c_b is a constant, the gradient flows into f only."""
    return (features - centers_batch.detach()).pow(2).sum() / features.shape[0]


def _unwrap(model: nn.Module) -> "WSDAN":
    module = unwrap_model(model)  # DDP / DataParallel / torch.compile
    if not isinstance(module, WSDAN):
        raise TypeError(f"expected a WSDAN model (optionally DDP-/compile-wrapped), got {type(module).__name__}")
    return module


def wsdan_training_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        crop_theta: tuple[float, float] = (0.4, 0.6), crop_padding: float = 0.1,
                        drop_theta: tuple[float, float] = (0.2, 0.5),
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One WS-DAN training step's loss (spec §1.8); three BN-updating forwards, one loss for one backward.

    raw forward -> center loss + center update -> attention crop and drop from the two sampled maps -> forwards ->
    loss = CE(raw)/3 + CE(crop)/3 + CE(drop)/3 + L_center. ``model`` may be DDP-wrapped (all forwards go through it).
    Returns the loss and detached parts (loss_raw, loss_crop, loss_drop, loss_center, logits_raw).
    """
    wsdan = _unwrap(model)
    logits_raw, f, attention_maps = model(images)
    c_b = update_feature_centers(wsdan.feature_center, f, labels, wsdan.beta)
    l_center = center_loss(f.float(), c_b)
    maps = sample_attention_maps(attention_maps.detach(), 2, generator)
    crops, _ = attention_crop(images, maps[:, 0:1], crop_theta, crop_padding, generator)
    logits_crop = model(crops).logits
    drops = attention_drop(images, maps[:, 1:2], drop_theta, generator)
    logits_drop = model(drops).logits
    l_raw = F.cross_entropy(logits_raw.float(), labels)
    l_crop = F.cross_entropy(logits_crop.float(), labels)
    l_drop = F.cross_entropy(logits_drop.float(), labels)
    loss = (l_raw + l_crop + l_drop) / 3.0 + l_center
    parts = dict(loss_raw=l_raw.detach(), loss_crop=l_crop.detach(), loss_drop=l_drop.detach(),
                 loss_center=l_center.detach(), logits_raw=logits_raw.detach())
    return loss, parts


@torch.no_grad()
def wsdan_refined_logits(model: nn.Module, images: torch.Tensor, theta: float = 0.1, padding: float = 0.05,
                         combine: str = "logits") -> tuple[torch.Tensor, torch.Tensor]:
    """Test-time refinement (spec §1.9): (raw logits, refined logits).

    Crop around the mean of the M attention maps with theta = 0.1 * max and padding 0.05, resize back, forward.
    ``combine='logits'``: (raw + crop) / 2 (PyTorch re-implementation, default); ``'probs'``:
    log(0.5 softmax(raw) + 0.5 softmax(crop)) (official TF).
    """
    if combine not in ("logits", "probs"):
        raise ValueError(f"combine must be one of 'logits', 'probs', got {combine!r}")
    logits_raw, _, attention_maps = model(images)
    crops, _ = attention_crop(images, attention_maps.mean(dim=1, keepdim=True), theta, padding)
    logits_crop = model(crops).logits
    logits_raw, logits_crop = logits_raw.float(), logits_crop.float()
    if combine == "logits":
        return logits_raw, (logits_raw + logits_crop) / 2
    return logits_raw, torch.log(0.5 * logits_raw.softmax(-1) + 0.5 * logits_crop.softmax(-1))
