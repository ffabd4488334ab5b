"""Grad-CAM (Selvaraju et al., ICCV 2017) on the last feature map, at each computation step of the last TD stage.

Grad-CAM of class c on a feature map A (N, K, h, w): α_k = mean_{h,w} ∂y_c/∂A_k, map = ReLU(Σ_k α_k A_k). It needs
only the gradient of the head, so it works for every backbone: ResNet/ConvNeXt (pool → fc) and MobileNetV3 (pool →
1x1 conv_head → activation → classifier). For a GAP+FC head it equals CAM (Σ_k w_ck A_k) divided by h·w, i.e. CAM up
to a positive scale.

Batched: the selected logits of all images are summed and differentiated once; in eval mode every image's logit
depends only on its own features, so the gradient of the sum is each image's own gradient. The maps are taken on
the model's ``forward_features`` output (the "last stage's output" of the paper's supplement, Fig. 1) or, with
``layer=``, on any module's output through a forward hook.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tdam.evaluation.boxes import gradcam_maps

__all__ = [
    "CamResult",
    "grad_cam_maps",
    "step_features",
    "head_grad_cam",
    "grad_cam",
    "grad_cam_steps",
    "capture_output",
]


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
    """Grad-CAM maps (N, K, h, w) of ``classes`` (N,) or (N, K) from ``features`` (N, C, h, w) in ``logits``' graph.

    One batched backward (``tdam.evaluation.boxes.gradcam_maps``) per column of ``classes``; the graph is kept between
    columns.
    """
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
    """(features, logits) at each computation step k = 1 … t of the last TD stage, without autograd history.

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


def grad_cam(
    model: nn.Module,
    x: Tensor,
    classes: Tensor | None = None,
    *,
    topk: int = 1,
    layer: str | None = None,
) -> CamResult:
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
    """Grad-CAM at each computation step k = 1 … t of the last TD stage (one :class:`CamResult` per step).

    ``classes`` fixes the class(es) at every step; by default each step's own top-``topk`` predictions. A model
    without ``forward_steps`` (the plain baseline) gives a single step.
    """
    out = []
    for feats, logits in step_features(model, x):
        cls = _select(logits, classes, topk)
        out.append(CamResult(head_grad_cam(model, feats, cls), cls, logits.softmax(1).gather(1, cls), logits))
    return out
