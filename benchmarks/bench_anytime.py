"""Throughput of anytime prediction (``model.forward_anytime``) against running every step, same process.

Times, on one synthetic batch, interleaved in every repeat:
  fixed_t1     the model at 1 step (``model.steps(1)``): the least an image can cost;
  fixed_t      the model at its trained t (``model(x)``): the baseline of the ratios;
  steps        ``model.forward_steps(x)``: every step for every image (what "most-confident" needs);
  anytime@f    ``model.forward_anytime(x, threshold)`` with the threshold set so that a fraction f of the batch is
               not confident after step 1 (a quantile of the step-1 max-softmax of this batch: a randomly initialised
               model has no meaningful confidences, so the benchmark fixes the fraction that goes on instead).
For every anytime point: the mean steps run, the mean MACs per image against the fixed-t model's
(:func:`tdam.complexity.anytime_macs`, paper convention) beside the measured time ratio -- the difference is the
price of early exit: the confidence check, the gather of the images going on and the scatter of their logits, and
the lower efficiency of smaller batches -- and that exit overhead alone (check, gather, scatter), timed on tensors of
the real shapes.
Reports images/s (median of repeats after a warm-up) and ratios to ``fixed_t`` in wall and process-CPU time.

    python benchmarks/bench_anytime.py --arch resnet50 --t 2 --batch 64 --img-size 224 --device cuda
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads on a shared CPU

import timm  # noqa: E402
import torch  # noqa: E402

import tdam  # noqa: E402
from tdam.complexity import anytime_macs, flops, mean_macs  # noqa: E402
from tdam.evaluation.classification import AMP_DTYPES, autocast  # noqa: E402
from tdam.evaluation.cost import device_name  # noqa: E402
from timing import timed  # noqa: E402  (benchmarks/timing.py)


def _threshold(conf1: torch.Tensor, go_on: float) -> float:
    """The threshold at which a fraction ``go_on`` of the batch is below it after step 1 (midway between two
    neighbouring confidences); 0 and > 1 at the ends."""
    n = conf1.numel()
    k = round(go_on * n)
    if k <= 0:
        return 0.0
    if k >= n:
        return 1.01
    c = conf1.sort().values
    return float((c[k - 1] + c[k]) / 2)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--t", type=int, default=2)
    ap.add_argument("--m", type=int, default=1)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img-size", type=int, default=96)
    ap.add_argument("--go-on", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                    help="fractions of the batch not confident after step 1 (each sets one threshold)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="fp32", choices=sorted(k for k in AMP_DTYPES if k))
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    if any(not 0.0 <= f <= 1.0 for f in a.go_on):
        ap.error(f"--go-on fractions must lie in [0, 1], got {a.go_on}")
    device = torch.device(a.device)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = tdam.create_model(a.arch, attention="td", t=a.t, m=a.m, num_classes=a.num_classes).eval()
    per_stop = anytime_macs(model, a.img_size)  # on the CPU before the move: ptflops runs one image
    fixed_macs = flops(model, a.img_size)
    with model.steps(1):
        fixed1_macs = flops(model, a.img_size)
    model = model.to(device, memory_format=fmt)
    x = torch.randn(a.batch, 3, a.img_size, a.img_size, generator=torch.Generator().manual_seed(0))
    x = x.to(device).contiguous(memory_format=fmt)
    amp = autocast(device, a.amp)

    def run(fn):
        def timed():
            with torch.inference_mode(), amp:
                return fn()
        return timed

    with torch.inference_mode(), amp:
        h = model.forward_shared(x)
        conf1 = model.forward_step(h, 1).float().softmax(1).amax(1).cpu()
    thresholds = {f: _threshold(conf1, f) for f in a.go_on}

    def fixed1():
        with model.steps(1):
            model(x)

    fns = {"fixed_t1": run(fixed1), "fixed_t": run(lambda: model(x)), "steps": run(lambda: model.forward_steps(x))}
    for f, th in thresholds.items():
        fns[f"anytime@{f:g}"] = run(lambda th=th: model.forward_anytime(x, th))
    # the price of an exit alone, at the shapes of each point: the confidence check, the gather of the shared map's
    # rows of the images going on, the scatter of their logits into the output
    step_logits = torch.randn(a.batch, a.num_classes, device=device)
    overheads = {}
    for f in a.go_on:
        keep = torch.arange(round(f * a.batch), device=device)
        overheads[f"exit_overhead@{f:g}"] = run(lambda keep=keep, th=thresholds[f]: (
            (step_logits.float().softmax(1).amax(1) < th).nonzero(), h[keep],
            step_logits.index_copy(0, keep, step_logits[:keep.numel()])))
    t = timed({**fns, **overheads}, device, a.warmup, a.repeats)
    base_wall, base_cpu = t["fixed_t"]
    points = {}
    for name in fns:
        wall, cpu = t[name]
        row = {"images_per_s": a.batch / wall, "time_ratio_vs_fixed_t": wall / base_wall,
               "cpu_time_ratio_vs_fixed_t": cpu / base_cpu}
        if name.startswith("anytime@"):
            f = float(name.split("@")[1])
            with torch.inference_mode(), amp:
                _, steps = model.forward_anytime(x, thresholds[f])
            macs = mean_macs(per_stop, steps)
            row.update({"threshold": thresholds[f], "mean_steps": float(steps.float().mean()),
                        "share_going_on_after_step1": float((steps > 1).float().mean()),
                        "gmacs_per_image": macs / 1e9, "macs_ratio_vs_fixed_t": macs / fixed_macs,
                        "exit_overhead_ms_per_batch": 1e3 * t[f"exit_overhead@{f:g}"][0]})
        else:
            macs = {"fixed_t1": fixed1_macs, "fixed_t": fixed_macs, "steps": per_stop[-1]}[name]
            row.update({"gmacs_per_image": macs / 1e9, "macs_ratio_vs_fixed_t": macs / fixed_macs})
        points[name] = row
    out = {
        "device": device_name(device), "torch": torch.__version__, "timm": timm.__version__,
        "tdam": tdam.__version__, "arch": a.arch, "t": a.t, "m": a.m,
        "num_classes": a.num_classes, "batch": a.batch, "img_size": a.img_size, "dtype": a.amp,
        "channels_last": a.channels_last, "warmup": a.warmup, "repeats": a.repeats,
        "baseline": "fixed_t (model(x) at the trained t)", "gmacs_per_stop_step": [m / 1e9 for m in per_stop],
        "points": points,
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
