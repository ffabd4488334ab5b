"""Feature selectivity of a block (TDAM supplement §3, Table 3, Figs. 3-4): pure tensor maths.

For a block with input X (N, Ci, H, W) and output Y (N, Co, H, W) (for a TD block: the output of its final step):

- ρ(X^i, Y^j) = Σ_{h,w} X'^i ⊙ Y'^j, X' and Y' each channel's map min-max normalised to [0, 1] over space;
  ρ(X, Y) = mean over all channel pairs (i, j), one value per image (Table 3 reports mean ± std over images).
- H(X, Y^j) = entropy(softmax_i ρ_raw(X^i, Y^j)), ρ_raw without the normalisation: how many input channels an output
  channel draws on (low entropy = selective); histogram over output channels j: Fig. 3 (layer4), Fig. 4 (layer3).
- H(Y) = entropy(softmax_c maxpool_{h,w} Y): how peaked the block's output is over channels (Table 3).

Entropies are in nats (natural logarithm). All pairwise products are one batched matrix product per block
(``torch.bmm`` of (N, Ci, HW) by (N, HW, Co)); nothing loops over channels or images.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["minmax_spatial", "pairwise_rho", "rho_mean", "input_entropy", "output_entropy"]


def _check_maps(name: str, t: Tensor) -> None:
    if t.dim() != 4:
        raise ValueError(f"{name} must be a (N, C, H, W) feature map, got shape {tuple(t.shape)}")


def minmax_spatial(x: Tensor) -> Tensor:
    """Each channel's map min-max normalised to [0, 1] over (H, W); a constant map becomes all zeros."""
    _check_maps("x", x)
    flat = x.flatten(2)
    lo = flat.amin(dim=2, keepdim=True)
    rng = flat.amax(dim=2, keepdim=True) - lo
    out = torch.where(rng > 0, (flat - lo) / rng.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return out.view_as(x)


def pairwise_rho(x: Tensor, y: Tensor, *, normalise: bool = True) -> Tensor:
    """ρ(X^i, Y^j) for every channel pair: (N, Ci, Co), one batched matmul over the flattened spatial positions.

    ``normalise=True`` gives the paper's ρ (min-max normalised maps); ``False`` gives ρ_raw used by H(X, Y^j).
    """
    _check_maps("x", x)
    _check_maps("y", y)
    if x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
        raise ValueError(
            f"block input {tuple(x.shape)} and output {tuple(y.shape)} must share batch and spatial size "
            "(the first block of a stage changes the size: skip it)"
        )
    if normalise:
        x, y = minmax_spatial(x), minmax_spatial(y)
    return torch.bmm(x.flatten(2), y.flatten(2).transpose(1, 2))


def rho_mean(x: Tensor, y: Tensor) -> Tensor:
    """ρ(X, Y): the mean of the normalised ρ(X^i, Y^j) over all channel pairs, per image (N,)."""
    return pairwise_rho(x, y, normalise=True).mean(dim=(1, 2))


def _entropy(logits: Tensor, dim: int) -> Tensor:
    logp = torch.log_softmax(logits, dim=dim)
    return -(logp.exp() * logp).sum(dim=dim)


def input_entropy(x: Tensor, y: Tensor) -> Tensor:
    """H(X, Y^j) = entropy over input channels i of softmax_i ρ_raw(X^i, Y^j), per image and output channel (N, Co)."""
    return _entropy(pairwise_rho(x, y, normalise=False), dim=1)


def output_entropy(y: Tensor) -> Tensor:
    """H(Y) = entropy over channels of softmax_c of the spatial max of Y, per image (N,)."""
    _check_maps("y", y)
    return _entropy(y.flatten(2).amax(dim=2), dim=1)
