"""Throughput of TD-ResNet-50 (joint, t=2, m=1) against plain ResNet-50, measured in one process.

    python benchmarks/bench_td_block.py                       # CPU fp32, batch 32 at 224x224
    python benchmarks/bench_td_block.py --device cuda         # + bf16/channels_last, eager and torch.compile

Runs of the two models are interleaved so both see the same machine state; each number is the median of the timed
repeats after warm-up. The TD/plain ratio is the figure of merit: the FLOPs allow about 4.13/4.60 = 0.90.
Results are printed and written as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

import tdam


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fns(model, device, dtype, channels_last):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    amp = dict(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)

    def infer(x):
        with torch.no_grad(), torch.autocast(**amp):
            return model(x)

    def train(x, y):
        with torch.autocast(**amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return infer, train


def bench(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    settings = [("fp32", torch.float32, False, False)]
    if device.type == "cuda":
        settings = [("fp32", torch.float32, False, False), ("bf16+cl", torch.bfloat16, True, False),
                    ("bf16+cl+compile", torch.bfloat16, True, True)]
    elif args.channels_last:
        settings.append(("fp32+cl", torch.float32, True, False))
    x = torch.randn(args.batch, 3, args.img, args.img, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    results = []
    start = time.perf_counter()
    print(f"[bench] ResNet-50 vs TD-ResNet-50 on {device}, batch {args.batch} at {args.img}px: settings "
          f"{', '.join(s[0] for s in settings)}; inference then training, {args.warmup} warm-up + {args.repeats} timed "
          "repeats of each model", flush=True)
    for name, dtype, cl, compiled in settings:
        xs = x.to(memory_format=torch.channels_last) if cl else x
        models = {"resnet50": tdam.create_model("resnet50"),
                  "td_resnet50": tdam.create_model("resnet50", attention="td", t=2, m=1, td_mode="joint")}
        fns = {}
        for key, model in models.items():
            model = model.to(device)
            if cl:
                model = model.to(memory_format=torch.channels_last)
            run = torch.compile(model) if compiled else model
            fns[key] = (model, *_step_fns(run, device, dtype, cl))
        row = {"setting": name, "dtype": str(dtype).replace("torch.", ""), "channels_last": cl, "compile": compiled}
        for phase in ("infer", "train"):
            times = {k: [] for k in fns}
            peak = {}
            for rep in range(args.warmup + args.repeats):
                for key, (model, infer, train) in fns.items():
                    model.train(phase == "train")
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    _sync(device)
                    t0 = time.perf_counter()
                    infer(xs) if phase == "infer" else train(xs, y)
                    _sync(device)
                    if rep >= args.warmup:
                        times[key].append(time.perf_counter() - t0)
                    if device.type == "cuda":
                        peak[key] = torch.cuda.max_memory_allocated(device) / 2**30
                print(f"[bench] {name} {phase}: repeat {rep + 1}/{args.warmup + args.repeats}"
                      f"{' (warm-up)' if rep < args.warmup else ''}, {time.perf_counter() - start:.0f} s so far",
                      flush=True)
            for key, ts in times.items():
                row[f"{key}_{phase}_img_s"] = args.batch / statistics.median(ts)
                if peak:
                    row[f"{key}_{phase}_peak_gib"] = peak[key]
            row[f"ratio_{phase}"] = row[f"td_resnet50_{phase}_img_s"] / row[f"resnet50_{phase}_img_s"]
        results.append(row)
    env = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
               device_type=device.type, threads=torch.get_num_threads(), batch=args.batch, img_size=args.img,
               repeats=args.repeats, warmup=args.warmup, torch=torch.__version__, timm=timm.__version__,
               tdam=tdam.__version__, python=sys.version.split()[0])
    return dict(env=env, results=results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--channels-last", action="store_true", help="CPU: also time fp32 with channels_last")
    p.add_argument("--out", default="runs/bench/td_block.json")
    args = p.parse_args()
    out = bench(args)
    print(json.dumps(out["env"]))
    for row in out["results"]:
        print(f"{row['setting']:>16}: infer {row['resnet50_infer_img_s']:8.1f} -> {row['td_resnet50_infer_img_s']:8.1f}"
              f" img/s (TD/plain {row['ratio_infer']:.3f});  train {row['resnet50_train_img_s']:8.1f} -> "
              f"{row['td_resnet50_train_img_s']:8.1f} img/s (TD/plain {row['ratio_train']:.3f})"
              + (f";  train peak {row['resnet50_train_peak_gib']:.2f} -> {row['td_resnet50_train_peak_gib']:.2f} GiB"
                 if "resnet50_train_peak_gib" in row else ""))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
