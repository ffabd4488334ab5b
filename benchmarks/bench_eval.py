"""Cost of the TD evaluation metrics against plain top-k evaluation of the same model, same run.

Times, on synthetic batches (evaluation cost does not depend on the data):
  plain      evaluate(..., td_metrics=False): top-k of model(x) (`last` only);
  steps      model.forward_steps(x): logits of every step (earlier stages once), no maps;
  three      evaluate(..., td_metrics=True): last + most-confident + unique-box (+ accuracy at every step):
             forward_steps with features, CAM/Grad-CAM per step, boxes (CPU connected components), protocol.
Reports images/s (median of repeats after a warm-up, the three interleaved) and the ratio three/plain, also in
process CPU time (steadier than wall time on a loaded CPU); the target is at most t x plain
plus a small map/box overhead.

    python benchmarks/bench_eval.py --arch resnet50 --t 2 --batch 64 --img-size 224 --device cuda
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads on a shared CPU

import torch  # noqa: E402

import tdam  # noqa: E402
from tdam.evaluation import evaluate  # noqa: E402
from tdam.cam import step_maps  # noqa: E402
from tdam.evaluation.cost import device_name  # noqa: E402
from timing import timed  # noqa: E402  (benchmarks/timing.py)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--t", type=int, default=2)
    ap.add_argument("--m", type=int, default=1)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=2, help="batches per timed evaluation")
    ap.add_argument("--img-size", type=int, default=96)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = tdam.create_model(a.arch, attention="td", t=a.t, m=a.m, num_classes=a.num_classes).eval().to(device)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(a.batch, 3, a.img_size, a.img_size, generator=g),
             torch.randint(0, a.num_classes, (a.batch,), generator=g)) for _ in range(a.batches)]
    kw = dict(device=device, amp=a.amp if a.amp != "fp32" else None, channels_last=a.channels_last)
    n = a.batch * a.batches

    def steps_only():
        with torch.no_grad():
            for x, _ in data:
                step_maps(model, x.to(device), maps=False)

    t = timed({"plain": lambda: evaluate(model, data, td_metrics=False, **kw), "steps": steps_only,
                "three": lambda: evaluate(model, data, td_metrics=True, **kw)}, device, a.warmup, a.repeats)
    (t_plain, c_plain), (t_steps, c_steps), (t_three, c_three) = t["plain"], t["steps"], t["three"]
    out = {
        "device": device_name(device), "torch": torch.__version__, "arch": a.arch, "t": a.t, "m": a.m,
        "batch": a.batch, "img_size": a.img_size, "amp": a.amp, "channels_last": a.channels_last,
        "images": n, "repeats": a.repeats,
        "plain_images_per_s": n / t_plain, "steps_images_per_s": n / t_steps, "three_images_per_s": n / t_three,
        "ratio_three_over_plain": t_three / t_plain, "ratio_steps_over_plain": t_steps / t_plain,
        "map_box_protocol_overhead_s_per_image": (t_three - t_steps) / n,
        "cpu_time_ratio_three_over_plain": c_three / c_plain, "cpu_time_ratio_steps_over_plain": c_steps / c_plain,
        "target_ratio": f"<= t = {a.t} (+ map/box overhead)",
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
