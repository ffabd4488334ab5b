"""Training throughput (images/s) through the real engine: TD-ResNet-50 vs ResNet-50 in the same process, with
synthetic in-memory batches (compute only) and with the real loader on the embedded dataset (decode + augmentation
included, so data-loading limits show up as the data-wait share).

    python benchmarks/bench_train.py                                  # CPU: 64 px, batch 32 (the smoke profile)
    python benchmarks/bench_train.py --img-size 224 --batch-size 128  # GPU: bf16 + channels_last, eager
    python benchmarks/bench_train.py --img-size 224 --batch-size 128 --compile --workers 8
    python benchmarks/bench_train.py --train-on --arch resnet18 --repeats 7  # train_on most_confident vs last

``--train-on``: the cost of ``train_on: most_confident`` against ``last`` for TD-<arch> (TDjoint t=2 m=1 defaults),
synthetic batches, the two interleaved in one process (order alternating), ``--repeats`` times: median img/s, spread
and the median of the per-repeat ratios. Memory, two measures: the bytes of the tensors autograd saves for backward
in one training forward (exact, deterministic; the activation memory the options differ in), and the peak memory of
a fresh process per option running the same steps (CUDA: torch.cuda.max_memory_allocated; CPU: ru_maxrss of the
child process, i.e. the whole process high-water mark including Python, torch and the weights, so the ratio
understates the activation difference).

On CUDA the trainer's defaults apply: bf16 autocast (fp16 + GradScaler where bf16 is unsupported) and channels_last.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
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


def _saved_bytes(state: TrainState, task, x: torch.Tensor, y: torch.Tensor, ctx: EvalContext) -> int:
    """Bytes of the distinct storages autograd keeps for backward in one training forward + loss."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t
    state.model.train()
    images, targets = ctx.to_device(x, y)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx.autocast():
        loss, _ = task.loss(state.model, images, targets)
    del loss
    return sum(storages.values())


def _peak_child(args: argparse.Namespace, train_on: str, queue) -> None:
    """One option in a fresh process: warm-up + timed steps, then its peak memory (bytes)."""
    device, amp_dtype, cl = _device_setup(args)
    state, task, batches, ctx = _train_on_setup(args, train_on, device, amp_dtype, cl)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_one_epoch(state, task, batches, ctx, updates=len(batches))
    if device.type == "cuda":
        queue.put(torch.cuda.max_memory_allocated())
    else:
        queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)   # Linux: KiB


def _device_setup(args: argparse.Namespace):
    device = torch.device("cuda" if (args.device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu")
    return device, resolve_amp("auto", device), device.type == "cuda"


def _train_on_setup(args: argparse.Namespace, train_on: str, device, amp_dtype, channels_last):
    torch.manual_seed(0)
    classes = 12                                                     # the embedded dataset's class count
    state = _state(args.arch, "td", classes, device, channels_last, args.compile, amp_dtype)
    task = ClassificationTask(classes, smoothing=0.1, train_on=train_on)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g)
    y = torch.randint(0, classes, (args.batch_size,), generator=g)
    ctx = EvalContext(device=device, amp_dtype=amp_dtype, channels_last=channels_last)
    return state, task, [(x, y)] * (args.warmup + args.steps), ctx


def compare_train_on(args: argparse.Namespace) -> None:
    device, amp_dtype, cl = _device_setup(args)
    v = versions(device)
    print(f"device: {v['device']} | torch {v['torch']} | threads {torch.get_num_threads()} | TD-{args.arch} "
          f"(TDjoint t=2 m=1) | img {args.img_size} px | batch {args.batch_size} | {args.steps} timed steps after "
          f"{args.warmup} warm-up | {args.repeats} interleaved repeats")
    options = ("last", "most_confident")
    setups = {o: _train_on_setup(args, o, device, amp_dtype, cl) for o in options}
    rates: dict[str, list[float]] = {o: [] for o in options}
    for r in range(args.repeats):
        for o in options if r % 2 == 0 else options[::-1]:
            state, task, batches, ctx = setups[o]
            _timed(state, task, batches[: args.warmup], ctx, args.warmup)
            rates[o].append(_timed(state, task, batches[: args.steps], ctx, args.steps)[0])
    for o in options:
        print(f"{o:>15}: median {statistics.median(rates[o]):7.1f} img/s (min {min(rates[o]):.1f}, max "
              f"{max(rates[o]):.1f}; runs {', '.join(f'{v:.1f}' for v in rates[o])})")
    ratios = [m / la for m, la in zip(rates["most_confident"], rates["last"])]
    print(f"img/s ratio most_confident / last: median {statistics.median(ratios):.3f} (per-repeat min "
          f"{min(ratios):.3f}, max {max(ratios):.3f})")
    saved = {o: _saved_bytes(setups[o][0], setups[o][1], *setups[o][2][0], setups[o][3]) for o in options}
    print(f"saved for backward (one step): last {saved['last'] / 2**20:.1f} MiB | most_confident "
          f"{saved['most_confident'] / 2**20:.1f} MiB | ratio {saved['most_confident'] / saved['last']:.3f}")
    if args.mem_repeats < 1:
        return
    spawn = mp.get_context("spawn")
    peaks: dict[str, list[int]] = {o: [] for o in options}
    for r in range(args.mem_repeats):
        for o in options if r % 2 == 0 else options[::-1]:
            q = spawn.Queue()
            proc = spawn.Process(target=_peak_child, args=(args, o, q))
            proc.start()
            peaks[o].append(q.get())
            proc.join()
    what = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "child-process ru_maxrss (whole process)"
    med = {o: statistics.median(peaks[o]) for o in options}
    runs = {o: ", ".join(f"{p / 2**20:.0f}" for p in peaks[o]) for o in options}
    print(f"peak memory, {what}, median of {args.mem_repeats}: last {med['last'] / 2**20:.0f} MiB ({runs['last']}) | "
          f"most_confident {med['most_confident'] / 2**20:.0f} MiB ({runs['most_confident']}) | ratio "
          f"{med['most_confident'] / med['last']:.3f}")


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
    p.add_argument("--train-on", action="store_true", help="train_on most_confident vs last (see the docstring)")
    p.add_argument("--repeats", type=int, default=5, help="--train-on: interleaved timing repeats")
    p.add_argument("--mem-repeats", type=int, default=3, help="--train-on: fresh processes per option for peak memory (0: skip)")
    args = p.parse_args()
    if args.train_on:
        return compare_train_on(args)

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
