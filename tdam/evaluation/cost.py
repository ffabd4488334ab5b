"""Measured cost of models, for the paper's Table 1 cost columns and their scaling: params, FLOPs, peak memory,
images/s.

- Params and FLOPs come from :mod:`tdam.complexity` (FLOPs = ptflops MACs with the pytorch backend at 224², modules
  only: the paper's convention, and beside it a count with every element-wise op).
- Throughput: images/s of inference (eval mode, ``torch.inference_mode``) or of one training step (forward, cross
  entropy, backward, SGD step) on synthetic inputs, at a stated batch, precision and memory format; the MEDIAN over
  ``repeats`` timed runs after ``warmup`` untimed ones; on whatever device is present, which is recorded.
- Peak memory: CUDA allocator peak (``torch.cuda.max_memory_allocated``) over one step, in GB. PyTorch keeps no
  allocator statistics on the CPU, so there the column is NaN and ``memory_note`` says so.
"""
from __future__ import annotations

import contextlib
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from tdam.reference import model_key

__all__ = ["device_name", "measure_speed", "size_table", "speed_table", "cost_scaling", "td_cost_scaling"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_MODES = ("inference", "train")


def device_name(device: str | torch.device | None = None) -> str:
    """The device a measurement runs on, in words: ``cuda: <GPU name>`` or ``cpu: <processor> (<n> threads)``."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _check(mode: str, dtype: str, batch_size: int, img_size: int, warmup: int, repeats: int) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if batch_size < 1 or img_size < 8 or warmup < 0 or repeats < 1:
        raise ValueError(f"need batch_size >= 1, img_size >= 8, warmup >= 0, repeats >= 1; got {batch_size}, "
                         f"{img_size}, {warmup}, {repeats}")


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA) before reading a clock; a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_speed(
    model: nn.Module,
    *,
    mode: str = "inference",
    batch_size: int = 32,
    img_size: int = 224,
    device: str | torch.device | None = None,
    dtype: str = "fp32",
    channels_last: bool = False,
    warmup: int = 2,
    repeats: int = 5,
    num_classes: int | None = None,
) -> dict:
    """Images/s (median of ``repeats`` after ``warmup``) and peak memory of inference or one training step.

    Non-fp32 ``dtype`` runs under autocast (bf16/fp16 AMP; fp16 training uses a GradScaler-free step on random data,
    enough for timing). Returns a labelled record: mode, device, dtype, batch, img_size, memory_format, warmup,
    repeats, seconds_median, images_per_s, peak_memory_gb, memory_note. The training step uses SGD with lr 0, so
    the weights do not change, but BatchNorm running statistics do: measure on a throw-away model.
    """
    _check(mode, dtype, batch_size, img_size, warmup, repeats)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model = model.to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device).contiguous(memory_format=fmt)
    n_cls = num_classes or getattr(model, "num_classes", None) or 1000
    y = torch.randint(0, n_cls, (batch_size,), device=device)
    amp = (torch.autocast(device_type=device.type, dtype=_DTYPES[dtype]) if dtype != "fp32"
           else contextlib.nullcontext())
    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            with amp:
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), amp:
                model(x)

    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 1e9
        note = f"CUDA allocator peak (incl. {base / 1e9:.2f} GB resident before the step)"
    else:
        peak, note = float("nan"), "not measured: PyTorch keeps no CPU allocator statistics"
    if mode == "train":
        model.zero_grad(set_to_none=True)
        model.eval()
    med = statistics.median(times)
    return {
        "mode": mode, "device": device_name(device), "dtype": dtype, "batch": batch_size, "img_size": img_size,
        "memory_format": "channels_last" if channels_last else "contiguous", "warmup": warmup, "repeats": repeats,
        "seconds_median": med, "images_per_s": batch_size / med, "peak_memory_gb": peak, "memory_note": note,
    }


def _build(create: Callable[..., nn.Module], spec: Mapping, num_classes: int, device: str | torch.device) -> nn.Module:
    with torch.device(device):
        return create(**spec["create"], num_classes=num_classes)


def size_table(
    specs: Iterable[Mapping],
    *,
    create: Callable[..., nn.Module],
    img_size: int = 224,
    full_flops: bool = True,
    num_classes: int = 1000,
) -> pd.DataFrame:
    """Params (M), GFLOPs in the paper's convention (ptflops MACs) and, with ``full_flops``, torch's FLOP count
    (``gflops_full``: 2 per multiply-add, every op torch's counter knows), one row per spec, at ``img_size``.

    Each model is built on the ``meta`` device (no initialisation cost): parameters and torch's FLOP count are exact
    there (shapes only). The ptflops pass (:func:`tdam.complexity.flops`) runs a real forward pass, so the model is
    then materialised on the CPU with zero weights (``to_empty`` + zeros, which also avoids denormal slow paths). ``create(**spec['create'], num_classes=...)`` builds a
    model (:func:`tdam.create_model`).
    """
    from tdam import complexity

    rows = []
    for spec in specs:
        model = _build(create, spec, num_classes, "meta")
        row = {**model_key(spec["create"]), "method": spec.get("method", "")}
        row["params_M"] = complexity.count_params(model) / 1e6
        if full_flops:
            row["gflops_full"] = complexity.flops_full(model, img_size) / 1e9
        model = model.to_empty(device="cpu")
        with torch.no_grad():
            for t in (*model.parameters(), *model.buffers()):
                t.zero_()
        row["gflops"] = complexity.flops(model, img_size) / 1e9
        row["flops_img_size"] = img_size
        rows.append(row)
        del model
    cols = [c for c in ("params_M", "gflops", "gflops_full", "flops_img_size") if c in rows[0]] if rows else []
    df = pd.DataFrame(rows)
    return df[[c for c in df.columns if c not in cols] + cols] if rows else df


def speed_table(
    specs: Iterable[Mapping],
    *,
    create: Callable[..., nn.Module],
    speed: Mapping,
    num_classes: int = 1000,
) -> pd.DataFrame:
    """Images/s and peak memory of inference (``fps_val``, ``mem_val_gb``) and of a training step (``fps_train``,
    ``mem_train_gb``) per spec, with the measurement labels (device, dtype, batch, img_size, memory format,
    repeats). ``speed``: kwargs of :func:`measure_speed` (without ``mode``). Randomly initialised weights: speed does
    not depend on them."""
    rows = []
    for spec in specs:
        dev = speed.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        model = _build(create, spec, num_classes, "cpu").to(dev)
        row = {**model_key(spec["create"]), "method": spec.get("method", "")}
        for mode, tag in (("inference", "val"), ("train", "train")):
            rec = measure_speed(model, mode=mode, num_classes=num_classes, **speed)
            row[f"fps_{tag}"] = rec["images_per_s"]
            row[f"mem_{tag}_gb"] = rec["peak_memory_gb"]
        row.update({k: rec[k] for k in ("device", "dtype", "batch", "memory_format", "repeats")})
        row["speed_img_size"] = rec["img_size"]
        rows.append(row)
        del model
    return pd.DataFrame(rows)


def cost_scaling(
    build: Callable[[object], nn.Module],
    values: Sequence,
    *,
    vary: str,
    speed: Mapping,
    flops: bool = True,
    modes: Sequence[str] = ("inference",),
) -> pd.DataFrame:
    """Cost against one knob: ``vary`` in {'t', 'batch', 'img_size'}; ``build(value)`` gives the model for each value
    (for 'batch'/'img_size' the same model each time). Columns: the knob, gflops (at that img_size, paper convention),
    images/s and peak memory per mode, with the measurement labels."""
    from tdam import complexity

    if vary not in ("t", "batch", "img_size"):
        raise ValueError(f"vary must be one of ('t', 'batch', 'img_size'), got {vary!r}")
    rows = []
    for v in values:
        model = build(v)
        kw = dict(speed)
        if vary == "batch":
            kw["batch_size"] = int(v)
        if vary == "img_size":
            kw["img_size"] = int(v)
        row: dict = {vary: v}
        if flops:
            row["gflops"] = complexity.flops(model, kw.get("img_size", 224)) / 1e9
        for mode in modes:
            rec = measure_speed(model, mode=mode, **kw)
            row[f"fps_{mode}"] = rec["images_per_s"]
            row[f"mem_{mode}_gb"] = rec["peak_memory_gb"]
        row.update({k: rec[k] for k in ("device", "dtype", "batch", "img_size", "memory_format", "repeats")})
        rows.append(row)
    return pd.DataFrame(rows)


def td_cost_scaling(arch: str, *, t_values: Sequence[int], batch_values: Sequence[int],
                    resolution_values: Sequence[int], speed: Mapping) -> dict[str, pd.DataFrame]:
    """How a TD model's cost grows (notebook 03): against ``t`` (FLOPs, inference and training speed), against the
    batch size (speed) and against the resolution (FLOPs, inference speed); knob -> :func:`cost_scaling` table."""
    import tdam

    td = tdam.create_model(arch, attention="td")
    return {"t": cost_scaling(lambda t: tdam.create_model(arch, attention="td", t=t), t_values, vary="t",
                              speed=speed, modes=("inference", "train")),
            "batch": cost_scaling(lambda _: td, batch_values, vary="batch", speed=speed, flops=False),
            "img_size": cost_scaling(lambda _: td, resolution_values, vary="img_size", speed=speed,
                                     modes=("inference",))}
