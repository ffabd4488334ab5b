"""Model size and cost: parameter counts and FLOPs in the paper's convention and in a full count.

The paper's "FLOPs" column is a multiply-accumulate count by ptflops' ``pytorch`` backend at 3 x 224 x 224, counting
**modules only**: ptflops attaches a forward hook to every ``nn.Module`` it knows (convolutions, linear layers, batch
norms, activations, pooling, upsampling) and sums what each hook reports; anything computed with ``torch``/``F``
calls outside those modules (the TD gates and their small MLPs, global pooling written as ``x.mean``, element-wise
products and sums) counts zero. ptflops 0.7 added a second pass that also patches the functional API
(``count_functional``, on by default); with it, ``nn.ReLU`` is counted twice (once by its module hook and once by the
``F.relu`` it calls), which puts every ResNet row 0.003-0.016 G above the paper. :func:`flops` therefore turns it off
(``backend_specific_config={'count_functional': False}``). One addition keeps the count independent of how tdam
writes the TD module: its searchlight MLP is held as 1x1 ``nn.Conv2d`` layers (as in the public TDAM code, whose
module hooks count them) but run as ``F.linear`` on the pooled vectors for speed, so a hook on ``TDAttention`` adds
the MACs those 1x1 convolutions have on a 1 x 1 map (``Cin x Cout`` per image and per searchlight). Pooling, gates,
sigmoids and the spatial weighting stay uncounted, as everywhere in this convention.

With this, every plain and TD ResNet row of the paper's Table 1 and the TD rows of Table 2 come out at the printed
digit (R50 TDtop m=3 aside: the published row does not match the public m=3 block). The rows that still differ:

- SE / ECA / CBAM / FCA-TS on ResNet-50 and -101 (e.g. R50 SE 4.1244 -> 4.12 vs 4.13): the official modules squeeze
  with ``nn.AdaptiveAvgPool2d`` (CBAM also ``AdaptiveMaxPool2d``), which module hooks count at one MAC per input
  element (+0.0055 G per pooling on R50, +0.0089 G on R101; that brings all eight rows to the printed value). tdam
  writes the squeeze as ``x.mean`` (see :class:`tdam.models.attention.SE`), which is not counted. On ResNet-18/34 the
  pooling is below the printed digit.
- ConvNeXt-T and ConvNeXt-T FCA (4.4690 -> 4.47 vs 4.46): ptflops counts the biases of the pointwise ``nn.Linear``
  layers (one add per output element, 0.0107 G); without them the count is 4.4583 -> 4.46, the printed value, which
  suggests a ptflops version that did not count linear biases.
- ConvNeXt-T TDjoint m=1 / m=2 (5.86 / 7.25 vs 5.50 / 6.54): not a counting question; the second step of a TD
  ConvNeXt block recomputes more here than in the paper's model (0.36 / 0.71 G, about a quarter of the TD overhead).

Anytime prediction (``forward_anytime``): :func:`anytime_macs` gives, in the same convention, the MACs of one image
that stops at step k -- the shared stem and earlier stages once plus steps 1 .. k, each a full run of the last TD stage
at that step count and of the head -- by counting exactly that computation; :func:`mean_macs` averages them over the
steps a batch stopped at. The gather/scatter of the images going on costs no MACs (it is memory traffic: measure it
as images/s, see ``benchmarks/bench_anytime.py``).

``flops_full`` counts every ATen operation instead: matrix products and convolutions as 2 x MACs (torch's
FlopCounterMode), plus one FLOP per output element of every point-wise op (gates, sigmoids, adds, activations) and one
per input element of every reduction, pooling and normalisation -- so the TD gates and the searchlight pooling are
included.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["count_params", "flops", "flops_full", "anytime_macs", "mean_macs"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as FCA's DCT basis or BN statistics are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _input(model: nn.Module, img_size: int, batch_size: int = 1) -> torch.Tensor:
    p = next(model.parameters())
    return torch.zeros(batch_size, 3, img_size, img_size, device=p.device, dtype=p.dtype)


def _td_searchlight_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """ptflops hook for ``TDAttention``: the MACs of its searchlight MLP's 1x1 convolutions (bias-free) per call."""
    n = output.shape[0]
    convs = ("fc1", "fc2") if module.mode == "top" else ("fc_top", "fc_bottom", "fc_out")
    per_searchlight = sum(getattr(module, c).weight.shape[0] * getattr(module, c).weight.shape[1] for c in convs)
    times = len(module.pools) * (2 if module.order == "spatial_channel" and module.mode != "top" else 1)
    module.__flops__ += int(n * per_searchlight * times)


def flops(model: nn.Module, img_size: int = 224) -> int:
    """MACs of one 3 x ``img_size`` x ``img_size`` image in the paper's convention (see the module docstring:
    ptflops' pytorch backend, module hooks only, ``count_functional`` off). Divide by 1e9 for the "GFLOPs" column."""
    from ptflops import get_model_complexity_info

    from tdam.models.td import TDAttention

    was_training = model.training
    model.eval()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, _ = get_model_complexity_info(model, (3, img_size, img_size), as_strings=False,
                                            print_per_layer_stat=False, verbose=False, backend="pytorch",
                                            custom_modules_hooks={TDAttention: _td_searchlight_macs},
                                            backend_specific_config={"count_functional": False})
    model.train(was_training)
    if macs is None:
        raise RuntimeError("ptflops failed to count this model (it printed its error to stdout)")
    return int(macs)


class _FirstSteps(nn.Module):
    """What an image that stops at step ``k`` runs: ``model.forward_shared`` once, then ``model.forward_step`` for
    steps 1 .. k (the path of ``forward_anytime``)."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k
        self.training = model.training  # flops() restores this mode on the whole wrapper, so on ``model`` too

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.model.forward_shared(x)
        return [self.model.forward_step(h, j) for j in range(1, self.k + 1)]


def anytime_macs(model: nn.Module, img_size: int = 224) -> list[int]:
    """MACs (paper convention, :func:`flops`) of one 3 x ``img_size`` x ``img_size`` image that stops at step k, for
    k = 1 .. ``model.td_steps`` (entry k-1). ``model``: a tdam model with ``forward_anytime`` (its steps class, see
    :mod:`tdam.models.steps`); an ``add_td`` model with named stages shares nothing, so there step k costs a whole
    model run."""
    if not callable(getattr(model, "forward_anytime", None)):
        raise ValueError(f"{type(model).__name__} has no forward_anytime: anytime MACs need a model from "
                         "tdam.create_model, timm's registry or tdam.add_td")
    return [flops(_FirstSteps(model, k), img_size) for k in range(1, model.td_steps + 1)]


def mean_macs(macs_per_step: Sequence[int], steps: torch.Tensor) -> float:
    """Mean MACs per image of a batch whose images stopped at ``steps`` (1-based, as ``forward_anytime`` returns
    them), ``macs_per_step`` from :func:`anytime_macs`."""
    steps = torch.as_tensor(steps).detach().cpu().long().flatten()
    if steps.numel() == 0:
        raise ValueError("steps is empty: no image to average over")
    if int(steps.min()) < 1 or int(steps.max()) > len(macs_per_step):
        raise ValueError(f"steps must lie in 1..{len(macs_per_step)} (one MAC count per step), got "
                         f"{int(steps.min())}..{int(steps.max())}")
    return float(torch.tensor([float(m) for m in macs_per_step], dtype=torch.float64)[steps - 1].mean())


_aten = torch.ops.aten
_READS_INPUT = {_aten.sum, _aten.mean, _aten.amax, _aten.amin, _aten.max_pool2d_with_indices, _aten.avg_pool2d,
                _aten.adaptive_avg_pool2d, _aten._adaptive_avg_pool2d, _aten.native_batch_norm,
                _aten._native_batch_norm_legit_no_training, _aten._native_batch_norm_legit, _aten.native_layer_norm,
                _aten._softmax}


class _ElementwiseCounter(TorchDispatchMode):
    """Counts point-wise outputs and reduction/normalisation inputs, element by element."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if torch.Tag.pointwise in func.tags:
            first = out[0] if isinstance(out, (tuple, list)) else out
            self.count += first.numel() if isinstance(first, torch.Tensor) else 0
        elif func._overloadpacket in _READS_INPUT and isinstance(args[0], torch.Tensor):
            self.count += args[0].numel()
        return out


def flops_full(model: nn.Module, img_size: int = 224) -> int:
    """FLOPs of one image counting every op: 2 per multiply-add of convs/matmuls, 1 per element of the rest."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    dense, elementwise = FlopCounterMode(display=False), _ElementwiseCounter()
    with torch.no_grad(), dense, elementwise:
        model(_input(model, img_size))
    model.train(was_training)
    return int(dense.get_total_flops()) + elementwise.count
