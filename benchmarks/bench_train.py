"""Training throughput (images/s) through the real engine: TD-ResNet-50 vs ResNet-50 in the same process, with
synthetic in-memory batches (compute only) and with the real loader on the embedded dataset (decode + augmentation
included, so data-loading limits show up as the data-wait share).

    python benchmarks/bench_train.py                                  # CPU: 64 px, batch 32 (the smoke profile)
    python benchmarks/bench_train.py --img-size 224 --batch-size 128  # GPU: bf16 + channels_last, eager
    python benchmarks/bench_train.py --img-size 224 --batch-size 128 --compile --workers 8

On CUDA the trainer's defaults apply: bf16 autocast (fp16 + GradScaler where bf16 is unsupported) and channels_last.
"""
from __future__ import annotations

import argparse
import time

import torch

import tdam
from tdam.train import ClassificationTask, EvalContext, TrainState, load_config, train_one_epoch
from tdam.train.data import build_datasets, build_loaders
from tdam.train.distributed import DistInfo
from tdam.train.state import versions
from tdam.train.trainer import resolve_amp


def _state(arch: str, attention: str | None, num_classes: int, device: torch.device, channels_last: bool,
           compile_: bool, amp_dtype) -> TrainState:
    from timm.optim import create_optimizer_v2

    model = tdam.create_model(arch, attention=attention, num_classes=num_classes).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = create_optimizer_v2(model, opt="sgd", lr=0.01, weight_decay=1e-4, momentum=0.9)
    run_model = torch.compile(model) if compile_ else model
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainState(model=run_model, optimizer=opt, scaler=scaler)


def _timed(state: TrainState, task, loader, ctx: EvalContext, steps: int) -> tuple[float, float]:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    state.epoch_step = 0
    state.meter.data_time = state.meter.step_time = 0.0
    t0 = time.perf_counter()
    train_one_epoch(state, task, loader, ctx, updates=steps)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return steps * loader_batch(loader) / dt, state.meter.data_time / dt


def loader_batch(loader) -> int:
    return loader.batch_size if hasattr(loader, "batch_size") else loader[0][0].shape[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()

    cfg = load_config(None, profile="smoke", model={"arch": args.arch}, img_size=args.img_size, batch_size=args.batch_size,
                      workers=args.workers, device=args.device)
    device = torch.device("cuda" if (args.device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu")
    amp_dtype = resolve_amp("auto", device)
    channels_last = device.type == "cuda"
    v = versions(device)
    print(f"device: {v['device']} | torch {v['torch']} | timm {v['timm']} | tdam {v['tdam']} | python {v['python']}")
    print(f"dtype: {str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'} | channels_last: {channels_last} "
          f"| compile: {args.compile} | img {args.img_size} px | batch {args.batch_size} | {args.steps} timed steps "
          f"after {args.warmup} warm-up")

    train_set, _ = build_datasets(cfg)
    loader, _, sampler = build_loaders(cfg, train_set, train_set, DistInfo(device=device))
    task = ClassificationTask(len(train_set.classes), smoothing=0.1)
    ctx = EvalContext(device=device, amp_dtype=amp_dtype, channels_last=channels_last)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g)
    y = torch.randint(0, len(train_set.classes), (args.batch_size,), generator=g)
    synthetic = [(x, y)] * (args.warmup + args.steps)

    results = {}
    for attention in (None, "td"):
        name = f"{'TD-' if attention else ''}{args.arch}"
        state = _state(args.arch, attention, len(train_set.classes), device, channels_last, args.compile, amp_dtype)
        _timed(state, task, synthetic[: args.warmup], ctx, args.warmup)
        syn, _ = _timed(state, task, synthetic[: args.steps], ctx, args.steps)
        sampler.set_position(epoch=0)
        real, wait = _timed(state, task, loader, ctx, args.steps)
        results[name] = syn
        print(f"{name:>16}: synthetic {syn:8.1f} img/s | real loader {real:8.1f} img/s "
              f"(data wait {100 * wait:.0f}%, {args.workers} workers)")
    plain, td = results[args.arch], results[f"TD-{args.arch}"]
    print(f"TD-{args.arch} / {args.arch} training throughput (synthetic): {td / plain:.2f}")


if __name__ == "__main__":
    main()
