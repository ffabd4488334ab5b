"""benchmarks/gpu_check.py in its CPU smoke mode: one JSON with every measurement, each finite and positive."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# memory is measured with torch.cuda.max_memory_allocated: null on CPU
_CUDA_ONLY = {"peak_mem_mb", "peak_mem_step_mb", "peak_mem", "cuda", "cudnn"}


def _numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


@pytest.mark.slow
def test_small_mode_writes_every_measurement(tmp_path):
    out = tmp_path / "check.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # about 40 s of CPU time (20 s on two free cores); the timeout only guards against a hang on a loaded machine
    subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--small", "--out", str(out)],
                   check=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    r = json.loads(out.read_text())
    assert set(r) == {"meta", "models", "loader", "trainer"}  # gpu_decode: CUDA only
    meta = r["meta"]
    for key in ("device", "dtype", "torch", "timm", "torchvision", "cuda", "batch_size", "img_size", "elapsed_s"):
        assert key in meta
    assert meta["device_type"] == "cpu" and meta["dtype"] == "float32"
    assert meta["skipped"] == [] and meta["errors"] == []
    for arch in ("resnet50", "resnet18"):
        m = r["models"][arch]
        for variant in ("plain", "td"):
            for kind in ("inference", "train"):
                cell = m[variant]["eager"][kind]
                assert cell["img_s"] > 0 and cell["ms_per_batch"] > 0
                assert cell["peak_mem_mb"] is None  # CPU
        assert set(m["td_over_plain"]["eager"]) == {"inference", "train"}
        assert r["trainer"][arch]["plain"] > 0 and r["trainer"][arch]["td"] > 0
        assert r["trainer"][arch]["td_over_plain"] > 0
    assert r["loader"]["img_s"] > 0 and r["loader"]["workers"] >= 1
    for path, value in _numbers(r):  # measurements are floats; settings (counts, sizes) ints, 0 workers allowed
        assert math.isfinite(value) and (value > 0 if isinstance(value, float) else value >= 0), (path, value)
    for path in (p for p, v in _walk_nulls(r)):
        assert path.rsplit(".", 1)[1] in _CUDA_ONLY, path


def _walk_nulls(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_nulls(v, f"{path}.{k}")
    elif obj is None:
        yield path, obj
