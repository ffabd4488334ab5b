"""Feature selectivity of trained ResNet blocks (TDAM supplement §3, Table 3, Figs. 3-4): forward hooks record each
chosen block's input X and output Y (a TD block's output is its final step) and :mod:`tdam.metrics.selectivity` turns
them into ρ(X, Y), H(X, Y^j) and H(Y), batch by batch.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn

from tdam.metrics.selectivity import input_entropy, output_entropy, rho_mean

__all__ = ["default_selectivity_blocks", "selectivity_blocks", "BlockSelectivity", "collect_selectivity",
           "TABLE3_METRICS", "selectivity_table"]


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


def selectivity_blocks(model: nn.Module, layer4_blocks: Sequence[int] = (), layer3_blocks: Sequence[int] = ()
                       ) -> dict[int, list[int]]:
    """{stage: [0-based indices]} for :func:`collect_selectivity`: the given 1-based block numbers, or the paper's
    choice (:func:`default_selectivity_blocks`) for a stage left empty."""
    out = default_selectivity_blocks(model)
    for stage, given in ((4, layer4_blocks), (3, layer3_blocks)):
        if given:
            out[stage] = [b - 1 for b in given]
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
