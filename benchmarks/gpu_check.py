"""The GPU check: one command, one JSON of measured throughput and memory (measurements only, no reference values).

    python benchmarks/gpu_check.py --out gpu_check.json          # one CUDA GPU, about 8 minutes at most
    python benchmarks/gpu_check.py --small --out small.json      # CPU smoke mode, under a minute (the test suite)

In one process it measures, for ResNet-50 and ResNet-18, plain against TD (``attention='td', t=2, m=1,
td_mode='joint'``):

* ``models``: images/s of inference (eval mode, ``torch.inference_mode``) and of a full training step (train mode,
  forward + cross-entropy + backward + SGD update), eager and ``torch.compile``, at batch 256 and 224 px, bf16
  autocast and channels_last on CUDA (fp32 on CPU); plain and TD timings interleave (plain repeat, TD repeat, ...)
  after warm-up, each repeat between ``cuda.synchronize`` calls, and the MEDIAN repeat is reported; peak memory
  (``torch.cuda.max_memory_allocated`` after a reset, one step of that model alone; CUDA only); ``td_over_plain``,
  the TD/plain throughput and memory ratios.
* ``trainer``: the trainer's own images/s (``tdam.train.train`` on an in-memory synthetic dataset, the
  ``images_per_s`` of its last epoch; that includes its DataLoader on already-decoded tensors).
* ``loader``: images/s of the data pipeline alone: generated 224 px JPEGs in the ImageNet folder layout, read by
  ``tdam.data`` with the training transform (decode + RandomResizedCrop + flip + normalise), a DataLoader with one
  worker per CPU core.
* ``gpu_decode`` (CUDA only): images/s of ``torchvision.io.decode_jpeg(..., device='cuda')`` on the same files.

The whole check runs under the trainer's GPU settings of the paper recipe (``tdam.train.state.gpu_settings`` with the
recipe's ``cudnn_benchmark`` and ``tf32``: cuDNN autotuning and TF32 on CUDA), recorded under ``meta.gpu_settings``.

Order: eager models, loader, GPU decode, trainer, then the ``torch.compile`` models (the slow compiles last).
``--budget-s`` stops starting new measurements once that many seconds have passed (they are listed under
``meta.skipped``), so the check fits its time slot even where ``torch.compile`` is slow; a measurement that fails
is listed under ``meta.errors`` with its exception and the JSON is still written.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn as nn

import tdam
from tdam.train.config import load_config
from tdam.train.state import gpu_settings

ARCHS = ("resnet50", "resnet18")
TD = dict(attention="td", t=2, m=1, td_mode="joint")
KINDS = ("inference", "train")


# ----------------------------------------------------------------------------------------------------- set-up
class Check:
    """Settings and the time budget of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device if args.device != "auto" else
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.cuda else None
        self.channels_last = self.cuda
        self.t0 = time.perf_counter()
        self.skipped: list[str] = []
        self.errors: list[str] = []

    def attempt(self, what: str, fn, *args, **kwargs):
        """Run one measurement; a failure is recorded in ``meta.errors`` and the check goes on (returns None)."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the JSON must still be written
            self.errors.append(f"{what}: {type(e).__name__}: {e}"[:2000])
            if self.cuda:
                torch.cuda.empty_cache()
            return None

    def time_left(self, what: str) -> bool:
        if time.perf_counter() - self.t0 < self.args.budget_s:
            return True
        self.skipped.append(f"{what}: time budget of {self.args.budget_s:.0f} s spent")
        return False

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()


def environment(c: Check) -> dict:
    import timm
    import torchvision

    env = {"device": torch.cuda.get_device_name(c.device) if c.cuda else
           f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
           "device_type": c.device.type, "dtype": "bfloat16" if c.amp_dtype is torch.bfloat16 else "float32",
           "channels_last": c.channels_last, "torch": torch.__version__, "torchvision": torchvision.__version__,
           "timm": timm.__version__, "tdam": tdam.__version__, "python": sys.version.split()[0],
           "cuda": torch.version.cuda if c.cuda else None,
           "cudnn": torch.backends.cudnn.version() if c.cuda else None, "cpu_count": os.cpu_count(),
           "batch_size": c.args.batch_size, "img_size": c.args.img_size, "warmup": c.args.warmup,
           "repeats": c.args.repeats, "iters_per_repeat": c.args.iters, "small": c.args.small,
           "compile": not c.args.no_compile, "compile_backend": c.args.compile_backend}
    return env


# ----------------------------------------------------------------------------------------------------- models
def _model(arch: str, td: bool, c: Check) -> nn.Module:
    model = tdam.create_model(arch, num_classes=1000, **(TD if td else {})).to(c.device)
    if c.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _batch(c: Check) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(c.args.batch_size, 3, c.args.img_size, c.args.img_size, generator=g).to(c.device)
    if c.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 1000, (c.args.batch_size,), generator=g).to(c.device)


def _step_fn(model: nn.Module, kind: str, compiled: bool, c: Check):
    """One inference or training step of ``model`` (compiled forward when asked)."""
    run = torch.compile(model, backend=c.args.compile_backend) if compiled else model
    if kind == "inference":
        model.eval()

        def step(x, y):
            with torch.inference_mode(), c.autocast():
                return run(x)
        return step
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        with c.autocast():
            loss = loss_fn(run(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def _time(step, x, y, c: Check) -> float:
    c.sync()
    t = time.perf_counter()
    for _ in range(c.args.iters):
        step(x, y)
    c.sync()
    return time.perf_counter() - t


def _peak_mb(step, x, y, c: Check) -> tuple[float | None, float | None]:
    """(peak allocated MB during one step, peak minus what was allocated before it); CUDA only."""
    if not c.cuda:
        return None, None
    c.sync()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(c.device)
    before = torch.cuda.memory_allocated(c.device)
    step(x, y)
    c.sync()
    peak = torch.cuda.max_memory_allocated(c.device)
    return peak / 2**20, (peak - before) / 2**20


def _measure_cell(arch: str, mode: str, kind: str, x, y, c: Check) -> dict:
    """Plain and TD ``arch`` in one execution mode and step kind, timings interleaved (module docstring)."""
    torch.manual_seed(0)
    models = {"plain": _model(arch, False, c), "td": _model(arch, True, c)}
    steps = {k: _step_fn(m, kind, mode == "compile", c) for k, m in models.items()}
    for k in steps:  # warm-up (compiles under torch.compile)
        for _ in range(c.args.warmup):
            steps[k](x, y)
    c.sync()
    times = {"plain": [], "td": []}
    for _ in range(c.args.repeats):  # interleaved: plain, TD, plain, TD, ...
        for k in ("plain", "td"):
            times[k].append(_time(steps[k], x, y, c))
    cells = {}
    for k in ("plain", "td"):
        dt = statistics.median(times[k])
        peak, delta = _peak_mb(steps[k], x, y, c)
        n = c.args.batch_size * c.args.iters
        cells[k] = {"img_s": n / dt, "ms_per_batch": 1000 * dt / c.args.iters, "img_s_min": n / max(times[k]),
                    "img_s_max": n / min(times[k]), "peak_mem_mb": peak, "peak_mem_step_mb": delta}
    p, t = cells["plain"], cells["td"]
    cells["td_over_plain"] = {"img_s": t["img_s"] / p["img_s"]}
    if p["peak_mem_mb"] is not None:
        cells["td_over_plain"]["peak_mem"] = t["peak_mem_mb"] / p["peak_mem_mb"]
    return cells


def measure_models(c: Check, modes: tuple[str, ...], out: dict | None = None) -> dict:
    """Plain vs TD throughput and memory per architecture, execution mode and step kind, into ``out``."""
    out = {} if out is None else out
    x, y = _batch(c)
    for mode in modes:
        for arch in c.args.archs:
            res = out.setdefault(arch, {"plain": {}, "td": {}, "td_over_plain": {}})
            for kind in KINDS:
                what = f"{arch} {mode} {kind}"
                if not c.time_left(what):
                    continue
                cells = c.attempt(what, _measure_cell, arch, mode, kind, x, y, c)
                if cells is not None:
                    for k, v in cells.items():
                        res[k].setdefault(mode, {})[kind] = v
                if c.cuda:
                    torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------------------------------- trainer
class _Synthetic(torch.utils.data.Dataset):
    """``n`` samples cycling through a few fixed decoded images (no decoding, no augmentation)."""

    classes = [str(i) for i in range(1000)]

    def __init__(self, n: int, img_size: int, distinct: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(distinct, 3, img_size, img_size, generator=g)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.x[i % len(self.x)], i % len(self.classes)


def measure_trainer(c: Check, out_dir: Path) -> dict:
    """The trainer's own images/s (``tdam.train.train``, synthetic input): plain and TD per architecture."""
    from tdam.train import load_config, train

    a = c.args
    steps, epochs = (1, 1) if a.small else (max(10, a.trainer_steps), 2)
    res: dict = {"steps_per_epoch": steps, "epochs": epochs, "workers": a.workers, "note": "images_per_s of the last "
                 "epoch as the trainer logs it (its DataLoader on in-memory tensors included)"}
    for arch in a.archs:
        r = res.setdefault(arch, {})
        for name, td in (("plain", False), ("td", True)):
            if not c.time_left(f"trainer {arch} {name}"):
                continue
            model = {"arch": arch, "num_classes": 1000, **(TD if td else {})}
            cfg = load_config(None, model=model, epochs=epochs, steps_per_epoch=steps, val_batches=1,
                              batch_size=a.batch_size, img_size=a.img_size, workers=a.workers, warmup_epochs=0,
                              progress=False, device=str(c.device), name=f"{arch}-{name}",
                              output_dir=str(out_dir / f"{arch}-{name}"))
            n = steps * a.batch_size
            result = c.attempt(f"trainer {arch} {name}", train, cfg,
                               datasets=(_Synthetic(n, a.img_size), _Synthetic(a.batch_size, a.img_size)))
            if result is not None:
                r[name] = float(result.history[-1]["images_per_s"])
        if "plain" in r and "td" in r:
            r["td_over_plain"] = r["td"] / r["plain"]
    return res


# ----------------------------------------------------------------------------------------------------- loader
def _write_jpegs(root: Path, n: int, size: int, classes: int = 8) -> list[Path]:
    """``n`` smooth-plus-noise JPEGs of ``size`` px in the ImageNet layout ``train/<wnid>/<wnid>_<k>.JPEG``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for k in range(n):
        wnid = f"n{k % classes:08d}"
        base = np.stack([np.sin(6.28 * (xx * rng.uniform(0.5, 3) + yy * rng.uniform(0.5, 3)) + rng.uniform(0, 6))
                         for _ in range(3)], -1)
        arr = np.clip(127 + 90 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        p = root / "train" / wnid / f"{wnid}_{k}.JPEG"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(p, quality=90)
        paths.append(p)
    return paths


def measure_loader(c: Check, tmp: Path) -> tuple[dict, list[Path]]:
    """Images/s of decode + training transform through a DataLoader with one worker per core."""
    from torch.utils.data import DataLoader

    from tdam.data import build_dataset, build_transform

    a = c.args
    paths = _write_jpegs(tmp / "imagenet", a.loader_images, a.loader_img_size)
    ds = build_dataset("imagenet", tmp / "imagenet", "train", build_transform(True, img_size=a.loader_img_size))
    workers = a.loader_workers if a.loader_workers is not None else (os.cpu_count() or 1)
    batch = min(a.batch_size, max(1, len(ds) // max(1, workers)), 128)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                        drop_last=True, generator=torch.Generator().manual_seed(0))
    for _ in loader:  # warm-up epoch: worker start-up and page cache
        pass
    n, t = 0, time.perf_counter()
    for _ in range(a.loader_epochs):
        for xb, _ in loader:
            n += xb.shape[0]
    dt = time.perf_counter() - t
    return {"img_s": n / dt, "images": len(ds), "epochs": a.loader_epochs, "img_size": a.loader_img_size,
            "workers": workers, "batch_size": batch, "transform": "train (RandomResizedCrop + flip + normalise)"}, paths


def measure_gpu_decode(c: Check, paths: list[Path]) -> dict:
    """``torchvision.io.decode_jpeg`` on the GPU, batched, on the loader's files (bytes already in memory)."""
    from torchvision.io import decode_jpeg, read_file

    data = [read_file(str(p)) for p in paths]
    batch = min(len(data), 128)
    chunks = [data[i:i + batch] for i in range(0, len(data) - batch + 1, batch)]
    decode_jpeg(chunks[0], device=c.device)
    c.sync()
    t = time.perf_counter()
    n = 0
    for _ in range(3):
        for ch in chunks:
            decode_jpeg(ch, device=c.device)
            n += len(ch)
    c.sync()
    return {"img_s": n / (time.perf_counter() - t), "batch_size": batch, "img_size": c.args.loader_img_size}


# ----------------------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--small", action="store_true", help="CPU smoke mode: tiny batch and resolution, eager only")
    p.add_argument("--device", default="auto")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    p.add_argument("--batch-size", type=int, default=None, help="default 256 (small: 4)")
    p.add_argument("--img-size", type=int, default=None, help="default 224 (small: 64)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per model (default 5; small: 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per model (default 7; small: 3)")
    p.add_argument("--iters", type=int, default=None, help="steps per timed repeat (default 5; small: 1)")
    p.add_argument("--no-compile", action="store_true", help="eager only (implied by --small)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend ('aot_eager': tracing only)")
    p.add_argument("--trainer-steps", type=int, default=30, help="optimizer steps per trainer epoch")
    p.add_argument("--workers", type=int, default=None, help="trainer DataLoader workers (default 8; small: 0)")
    p.add_argument("--loader-images", type=int, default=None, help="generated JPEGs (default 768; small: 16)")
    p.add_argument("--loader-img-size", type=int, default=None, help="JPEG side (default 224; small: 64)")
    p.add_argument("--loader-epochs", type=int, default=None, help="timed loader epochs (default 3; small: 1)")
    p.add_argument("--loader-workers", type=int, default=None, help="default: one per CPU core (small: 1)")
    p.add_argument("--budget-s", type=float, default=None, help="start no measurement after this (default 360)")
    a = p.parse_args(argv)
    small = dict(batch_size=2, img_size=64, warmup=1, repeats=2, iters=1, workers=0, loader_images=16,
                 loader_img_size=64, loader_epochs=1, loader_workers=1, budget_s=900.0)
    full = dict(batch_size=256, img_size=224, warmup=5, repeats=7, iters=5, workers=8, loader_images=768,
                loader_img_size=224, loader_epochs=3, loader_workers=None, budget_s=360.0)
    for k, v in (small if a.small else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.small:
        a.no_compile = True
        if a.device == "auto":
            a.device = "cpu"
    return a


def _check_finite(obj, path="") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{path}.{k}")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"gpu_check: {path} = {obj} is not finite")


def main(argv=None) -> dict:
    c = Check(parse_args(argv))
    recipe = load_config("resnet50_td_joint_t2_m1")     # the trainer's GPU settings of the paper recipe
    report = {"meta": environment(c)}
    with (gpu_settings(c.device, cudnn_benchmark=recipe.cudnn_benchmark, tf32=recipe.tf32) as settings,
          tempfile.TemporaryDirectory(prefix="tdam-gpu-check-") as tmp):
        report["meta"]["gpu_settings"] = settings
        tmp = Path(tmp)
        # cheap and required measurements first, torch.compile (slow to compile) last, within the budget
        report["models"] = measure_models(c, ("eager",))
        loader = c.attempt("loader", measure_loader, c, tmp)
        if loader is not None:
            report["loader"], paths = loader
            if c.cuda:
                report["gpu_decode"] = c.attempt("gpu_decode", measure_gpu_decode, c, paths)
        report["trainer"] = measure_trainer(c, tmp / "runs")
        if not c.args.no_compile:
            measure_models(c, ("compile",), report["models"])
    report["meta"]["skipped"] = c.skipped
    report["meta"]["errors"] = c.errors
    report["meta"]["elapsed_s"] = time.perf_counter() - c.t0
    _check_finite(report)
    out = Path(c.args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
