"""tdam-shapes generator: determinism, speed, caching/atomicity, content."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

import tdam.data.shapes as shapes
from tdam.data import make_shapes_dataset
from tdam.data import render as R



def tree_hash(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_identical_files_different_seed_differs(fresh_shapes_tiny, tmp_path):
    t0 = time.perf_counter()
    again = make_shapes_dataset(tmp_path / "again", seed=0, size="tiny")
    seconds = time.perf_counter() - t0
    other = make_shapes_dataset(tmp_path / "other", seed=1, size="tiny")
    h0, h_again, h1 = tree_hash(fresh_shapes_tiny), tree_hash(again), tree_hash(other)
    assert len(h0) > 300 and h0 == h_again  # byte-identical, every file
    jpegs = [k for k in h0 if k.lower().endswith((".jpeg", ".jpg"))]
    assert sorted(k for k in h1 if k.lower().endswith((".jpeg", ".jpg"))) != [] and \
        sum(h0.get(k) == h1.get(k) for k in jpegs) == 0  # a different seed changes every image
    print(f"tiny generation: {seconds:.2f} s")
    assert seconds < 15.0  # "a few seconds" (about 1-2 s on an idle core; generous for a loaded CI box)


def test_cached_and_marker(fresh_shapes_tiny):
    marker = json.loads((fresh_shapes_tiny / shapes.MARKER).read_text())
    assert marker == {"generator": "tdam-shapes", "version": shapes.GENERATOR_VERSION, "seed": 0, "size": "tiny"}
    before = (fresh_shapes_tiny / "manifest.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert make_shapes_dataset(fresh_shapes_tiny, seed=0, size="tiny") == fresh_shapes_tiny
    assert time.perf_counter() - t0 < 0.5
    assert (fresh_shapes_tiny / "manifest.json").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="seed=0 size='tiny'"):
        make_shapes_dataset(fresh_shapes_tiny, seed=3, size="tiny")


def test_bad_arguments_and_foreign_folder(tmp_path):
    with pytest.raises(ValueError, match=r"size='huge' is not valid; valid choices are \['default', 'tiny'\]"):
        make_shapes_dataset(tmp_path / "x", size="huge")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="mine"):
        make_shapes_dataset(tmp_path / "mine", size="tiny")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "user data"


def test_interrupted_generation_never_looks_complete(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "_gen_imagenet_v2", boom)  # after the ImageNet-style part was written
    with pytest.raises(KeyboardInterrupt):
        make_shapes_dataset(tmp_path / "ds", size="tiny")
    assert list(tmp_path.iterdir()) == []  # neither root nor a temp folder is left


def test_default_root_uses_cache_dir_and_stale_temps_are_removed(monkeypatch, tmp_path):
    monkeypatch.setenv("TDAM_DATA", str(tmp_path))
    for name in ("_gen_imagenet", "_gen_imagenet_v2", "_gen_cub", "_gen_dogs", "_gen_coco"):
        monkeypatch.setattr(shapes, name, lambda out, seed, sz: {})  # only the caching logic is under test here
    stale = tmp_path / ".shapes-tiny-s5.tmp-999999999-dead"  # left by a killed generation (no such process)
    (stale / "imagenet").mkdir(parents=True)
    assert make_shapes_dataset(seed=5, size="tiny") == (tmp_path / "shapes-tiny-s5").resolve()
    assert not stale.exists() and (tmp_path / "shapes-tiny-s5" / shapes.MARKER).is_file()


def test_two_object_fraction_and_ilsvrc_semantics(fresh_shapes_tiny):
    side = json.loads((fresh_shapes_tiny / "imagenet" / "shapes_objects.json").read_text())["splits"]
    objs = [o for split in side.values() for o in split.values()]
    two = np.mean([len(o) == 2 for o in objs])
    assert 0.12 < two < 0.40, two  # ~25 % of images hold a second object
    for o in objs:
        assert o[0]["primary"] and all(not x["primary"] for x in o[1:])
        if len(o) == 2:
            assert o[0]["label"] != o[1]["label"]  # the second object is of a different class
    man = json.loads((fresh_shapes_tiny / "manifest.json").read_text())["imagenet"]
    for rec in man["splits"]["val"]:  # val XML boxes = the objects of the image's class only
        assert rec["boxes"] == [o["box"] for o in rec["objects"] if o["label"] == rec["label"]]


def test_v2_is_shifted(fresh_shapes_tiny):
    man = json.loads((fresh_shapes_tiny / "manifest.json").read_text())

    def rel_area(recs):
        return np.mean([(o["box"][2] - o["box"][0] + 1) * (o["box"][3] - o["box"][1] + 1) / (r["width"] * r["height"])
                        for r in recs for o in r["objects"] if o["primary"]])

    val = rel_area(man["imagenet"]["splits"]["val"])
    v2 = rel_area(man["imagenet_v2"]["variants"]["imagenetv2-matched-frequency-format-val"])
    assert v2 < 0.9 * val  # smaller objects (scale x 0.85) in the matched-frequency variant


def test_render_boxes_are_exact_extents():
    """A disk drawn on a blank canvas: the returned box is the extent of the pixel centres within the radius."""
    canvas = np.zeros((2, R.CANVAS, R.CANVAS, 3), np.float32)
    cx, cy, r = np.array([40.3, 20.0]), np.array([30.7, 50.5]), np.array([10.2, 7.0])
    box = R.draw_shapes(canvas, np.arange(2), np.array([0, 0]), np.array([0, 0]),
                        np.ones((2, 3), np.float32), cx, cy, r, np.zeros(2), np.array([96, 96]), np.array([96, 96]),
                        np.full(2, 2.0))
    for j in range(2):
        yy, xx = np.nonzero(canvas[j, :, :, 0] > 0)
        assert box[j].tolist() == [xx.min(), yy.min(), xx.max(), yy.max()]
        ref = np.arange(96) + 0.5  # pixel centres inside the disk, computed directly
        inside = (ref[None, :] - cx[j]) ** 2 + (ref[:, None] - cy[j]) ** 2 <= r[j] ** 2
        ys, xs = np.nonzero(inside)
        assert box[j].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    # clipped to the image's own (W, H)
    canvas = np.zeros((1, R.CANVAS, R.CANVAS, 3), np.float32)
    box = R.draw_shapes(canvas, np.arange(1), np.array([1]), np.array([0]), np.ones((1, 3), np.float32),
                        np.array([60.0]), np.array([30.0]), np.array([10.0]), np.zeros(1), np.array([64]),
                        np.array([80]), np.full(1, 2.0))
    assert box[0].tolist() == [52, 22, 63, 37]


@pytest.mark.slow
def test_default_size_generation_time(tmp_path):
    t0 = time.perf_counter()
    root = make_shapes_dataset(tmp_path / "d", size="default")
    seconds = time.perf_counter() - t0
    print(f"default generation: {seconds:.1f} s")
    man = shapes.load_manifest(root)
    assert len(man["imagenet"]["splits"]["train"]) == 12 * 200 and len(man["imagenet"]["splits"]["val"]) == 12 * 40
    assert seconds < 90
