"""Feature selectivity of residual blocks (TDAM supplement §3, Table 3, Figs. 3-4).

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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn

from tdam.evaluation.tables import beside_paper, model_key, paper_table

__all__ = [
    "minmax_spatial",
    "pairwise_rho",
    "rho_mean",
    "input_entropy",
    "output_entropy",
    "default_selectivity_blocks",
    "BlockSelectivity",
    "collect_selectivity",
    "TABLE3_METRICS",
    "paper_table3_column",
    "selectivity_table",
    "table3_beside_paper",
]


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


_PAPER_BLOCKS_1BASED = {4: (2, 3), 3: (2, 3, 4, 5, 6)}


def default_selectivity_blocks(model: nn.Module) -> dict[int, list[int]]:
    """Blocks analysed per ResNet stage, as {stage (1-based, 3 = layer3): [0-based block indices]}.

    The paper (ResNet-50) uses layer4 blocks 2-3 and layer3 blocks 2-6 (1-based); the first block of a stage is always
    skipped because its input and output sizes differ. For a shallower backbone the paper's indices that exist are
    kept (ResNet-18: layer4 block 2 and layer3 block 2, i.e. 0-based index 1 in both; ResNet-34: layer4 2-3,
    layer3 2-6).
    """
    out: dict[int, list[int]] = {}
    for stage, blocks in _PAPER_BLOCKS_1BASED.items():
        layer = getattr(model, f"layer{stage}", None)
        if not isinstance(layer, nn.Sequential):
            raise ValueError(
                f"feature selectivity needs a ResNet-style model with layer{stage} (an nn.Sequential of blocks); "
                f"got {type(model).__name__}"
            )
        out[stage] = [b - 1 for b in blocks if b - 1 < len(layer)]
    return out


@dataclass
class BlockSelectivity:
    """Per-image statistics of one block: ρ(X, Y) (N,), H(X, Y^j) (N, Co) and H(Y) (N,)."""

    name: str
    rho: list[Tensor] = field(default_factory=list)
    h_in: list[Tensor] = field(default_factory=list)
    h_out: list[Tensor] = field(default_factory=list)

    def add(self, x: Tensor, y: Tensor) -> None:
        x, y = x.detach().float(), y.detach().float()
        self.rho.append(rho_mean(x, y).cpu())
        self.h_in.append(input_entropy(x, y).cpu())
        self.h_out.append(output_entropy(y).cpu())

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        if not self.rho:
            raise ValueError(f"no images were seen for block {self.name}")
        return torch.cat(self.rho), torch.cat(self.h_in), torch.cat(self.h_out)

    def summary(self) -> dict[str, float]:
        rho, h_in, h_out = self.tensors()
        return {
            "rho_mean": rho.mean().item(),
            "rho_std": rho.std(unbiased=False).item(),
            "entropy_HY": h_out.mean().item(),
            "entropy_HXY_mean": h_in.mean().item(),
            "n_images": float(rho.numel()),
        }

    def channel_entropy(self) -> Tensor:
        """H(X, Y^j) averaged over images: one value per output channel j (the histogram of Figs. 3-4)."""
        return self.tensors()[1].mean(dim=0)


def _block_names(blocks: Mapping[int, Sequence[int]]) -> list[str]:
    return [f"layer{stage}.{idx}" for stage in sorted(blocks, reverse=True) for idx in blocks[stage]]


@torch.no_grad()
def collect_selectivity(
    model: nn.Module,
    images: Iterable[Tensor | tuple[Tensor, ...] | list[Tensor]],
    blocks: Mapping[int, Sequence[int]] | None = None,
    *,
    device: str | torch.device = "cpu",
    max_images: int | None = None,
) -> dict[str, BlockSelectivity]:
    """Run ``model`` over ``images`` (a loader of images or (images, targets) batches) and gather the block statistics.

    Forward hooks on each chosen block record its input X and output Y (a TD block's output is its final step);
    statistics are computed batch by batch, so activations are never all held in memory. Returns {"layer4.1": ...}.
    """
    if model.training:
        raise ValueError("call model.eval() first: selectivity is measured on the inference network")
    blocks = default_selectivity_blocks(model) if blocks is None else blocks
    names = _block_names(blocks)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"model has no blocks {missing}; available blocks: "
                         f"{[n for n in modules if n.count('.') == 1 and n.startswith('layer')]}")
    stats = {n: BlockSelectivity(n) for n in names}

    def hook(name: str):
        def fn(_m: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            stats[name].add(args[0], out)
        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    seen = 0
    try:
        for batch in images:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if max_images is not None:
                x = x[: max_images - seen]
            if x.shape[0] == 0:
                break
            model(x.to(device))
            seen += x.shape[0]
            if max_images is not None and seen >= max_images:
                break
    finally:
        for h in handles:
            h.remove()
    return stats


TABLE3_METRICS = ("rho_mean", "rho_std", "entropy_HY")


def paper_table3_column(model_config: Mapping) -> str | None:
    """The column of the paper's Table 3 describing the same kind of model (the paper's are ResNet-50 ones).

    Plain model -> ``original``; TD joint t=2 m=1 -> ``tdjoint_t2_m1``; TD top t=2 m=3 -> ``tdtop_t2_m3``; others None.
    """
    key = model_key(model_config)
    if not key["attention"]:
        return "original"
    if key["attention"] == "td":
        col = f"td{key['td_mode']}_t{key['t']}_m{key['m']}"
        return col if col in paper_table("table3").columns else None
    return None


def selectivity_table(results: Mapping[str, Mapping[str, BlockSelectivity]]) -> pd.DataFrame:
    """Table 3 layout, ours: one row per (stage, block (1-based), metric), one column per model label.

    ``results``: {model label: collect_selectivity(...)}; metrics ρ mean, ρ std and H(Y) (mean over images).
    """
    rows: dict[tuple[int, int, str], dict[str, float]] = {}
    for label, stats in results.items():
        for name, st in stats.items():
            layer, idx = name.split(".")
            summary = st.summary()
            for metric in TABLE3_METRICS:
                rows.setdefault((int(layer.removeprefix("layer")), int(idx) + 1, metric), {})[label] = summary[metric]
    index = pd.MultiIndex.from_tuples(list(rows), names=["stage", "block", "metric"])
    return pd.DataFrame(list(rows.values()), index=index).reset_index()


def table3_beside_paper(ours: pd.DataFrame, paper_columns: Mapping[str, str | None]) -> pd.DataFrame:
    """Our Table 3 (``selectivity_table``) beside the paper's: for each model label with a paper counterpart,
    ``<label>``, ``paper_<column>`` and ``diff_<label>`` (ours - paper). The paper reports layer4 blocks 2-3 only;
    other rows keep NaN there. ``paper_columns``: {model label: paper column or None}."""
    paper = paper_table("table3").rename(columns={"layer4_block": "block"})
    paper.insert(0, "stage", 4)
    cols = {label: col for label, col in paper_columns.items() if col is not None}
    unknown = [label for label in cols if label not in ours.columns]
    if unknown:
        raise ValueError(f"models {unknown} are not in the table; its models: {list(ours.columns[3:])}")
    out = beside_paper(ours, paper, on=["stage", "block", "metric"], columns=cols)
    return out.astype({"stage": int, "block": int})
