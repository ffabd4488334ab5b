"""Benchmark the embedded data pipeline: tdam-shapes generation time and loader throughput.

    .venv/bin/python benchmarks/bench_data.py [--size default] [--workers 2] [--img-size 64] [--batch-size 64]

Prints the device and library versions, the wall and CPU seconds to generate the dataset (fresh, in a temporary
folder unless --root is given), and images/s of the ImageNet-style training loader (train transforms:
RandomResizedCrop + flip + normalise at --img-size, --workers workers), measured over --epochs full passes after a
warm-up pass (which starts the persistent workers).
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


import numpy as np
import PIL
import timm
import torch
import torchvision

from tdam.data import CountingDataLoader, build_dataset, build_transform, collate_drop_bad, make_shapes_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="default", choices=["tiny", "default"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=None, help="generate/reuse here instead of a fresh temporary folder")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    print(f"python {platform.python_version()} | torch {torch.__version__} | torchvision {torchvision.__version__} | "
          f"timm {timm.__version__} | numpy {np.__version__} | pillow {PIL.__version__}")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"device: {platform.processor() or platform.machine()} | usable CPUs {cpus} | torch threads "
          f"{torch.get_num_threads()} | CUDA: {gpu} | load average {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / f"shapes-{args.size}-s{args.seed}"
        t0, c0 = time.perf_counter(), time.process_time()
        root = make_shapes_dataset(root, seed=args.seed, size=args.size)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        n_files = sum(1 for p in root.rglob("*") if p.is_file())
        print(f"generation ({args.size}, seed {args.seed}): {wall:.2f} s wall, {cpu:.2f} s CPU, {n_files} files")

        ds = build_dataset("imagenet", root / "imagenet", "train", build_transform(True, args.img_size))
        loader = CountingDataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                    num_workers=args.workers, persistent_workers=args.workers > 0,
                                    pin_memory=torch.cuda.is_available(), collate_fn=collate_drop_bad)
        for _ in loader:  # warm-up: starts the persistent workers, fills the page cache
            pass
        n, t0 = 0, time.perf_counter()
        for _ in range(args.epochs):
            for x, _ in loader:
                n += x.shape[0]
        dt = time.perf_counter() - t0
        print(f"loader: imagenet train, {len(ds)} images, train transforms at {args.img_size} px, batch "
              f"{args.batch_size}, {args.workers} workers: {n / dt:.0f} images/s ({n} images in {dt:.2f} s)")


if __name__ == "__main__":
    main()
