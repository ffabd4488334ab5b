"""The embedded "tdam-shapes" dataset generator: small datasets written ON DISK IN THE REAL FORMATS.

``make_shapes_dataset(root, seed=0, size='default')`` writes, under ``root``:

* ``imagenet/``: ILSVRC-2012 class-subfolder layout ``train/<wnid>/<wnid>_<n>.JPEG`` (``n`` not fixed-width, not
  consecutive), ``val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG`` (global numbering, classes interleaved),
  ``val_boxes/ILSVRC2012_val_XXXXXXXX.xml`` (ILSVRC VOC XML listing the objects of the image's class),
  ``LOC_synset_mapping.txt`` (Kaggle-style ``<wnid> <words>``) and the side-car ``shapes_objects.json`` (below).
  12 classes = shape x texture x colour family (each shape, colour and texture shared by several classes).
* ``imagenet_v2/imagenetv2-{matched-frequency,threshold0.7,top-images}-format-val/<label>/<k>.jpeg``: ImageNetV2
  layout (decimal label folders, lower-case ``.jpeg``), rendered with a DIFFERENT seed stream and shifted colour /
  size / clutter statistics (shift strength 1.0 / 0.6 / 0.3 for the three variants): a real distribution shift.
* ``cub200/CUB_200_2011/``: ``images/<NNN.Name>/<Name>_<NNNN>_<n>.jpg``, ``images.txt``, ``image_class_labels.txt``,
  ``train_test_split.txt``, ``bounding_boxes.txt``, ``classes.txt``; 10 fine-grained "bird" classes that differ only
  in the crown-cap colour and a wing bar; a few images are greyscale JPEGs, as in CUB.
* ``stanford_dogs/``: ``Images/<wnid>-<Breed>/<wnid>_<n>.jpg``, extension-less VOC XML under ``Annotation/``,
  ``file_list.mat`` / ``train_list.mat`` / ``test_list.mat`` (scipy); 8 "breeds" differing in ears / tail / spots;
  some images hold two dogs of the same breed (two ``<object>``\\ s).
* ``coco2014/``: ``annotations/instances_{train,val}2014.json`` and ``{train,val}2014/COCO_<split>2014_<id:012d>.jpg``;
  6 categories with non-contiguous ids (1, 3, 17, 44, 62, 90), 1-3 objects per image (multi-label), a few images
  without annotations (absent from the multi-label benchmark, as in real COCO).
* ``imagenet_wds/`` and ``imagenet_parquet/`` (only when asked, ``formats=('wds', 'parquet')``): ``imagenet/``
  converted by :mod:`tdam.data.convert` into WebDataset shards and Hugging Face-style parquet files (same image
  bytes, labels, synsets and val boxes), added to a complete dataset on first request.
* ``manifest.json``: what was written (per dataset and split: file, label, boxes, box labels, size, all objects), used
  by the tests; ``.tdam-shapes-complete``: the completion marker, written last.

Objects sit on cluttered backgrounds (gradient + low-frequency noise + random primitives in all hues) at random
positions and scales; about 25 % of ImageNet-style images hold a SECOND object of a different class (smaller, drawn
first so the labelled "primary" object is never occluded). ILSVRC semantics are kept: the label and the val XML
list only the primary (image-class) object; every object of every image (train and val, primary flag, wnid, box) is
recorded in ``imagenet/shapes_objects.json`` for analyses such as attention shifting and the unique-box protocol.

Boxes are exact: the extent of the pixels the object's mask covers, xyxy in INCLUSIVE pixel indices (the ILSVRC
convention; IoU uses width = x2 - x1 + 1). CUB's ``x y w h`` and COCO's ``[x, y, w, h]`` are written as
``(x1, y1, x2 - x1, y2 - y1)`` so every reader returns the same xyxy.

Determinism: one seeded ``numpy.random.Generator`` per (seed, dataset, split) stream and PIL's deterministic JPEG
encoder with fixed settings (the .mat headers' creation-time stamp is fixed too), so the same seed gives
byte-identical files on a given platform and numpy/Pillow version. Generation goes to a temporary sibling
folder that is renamed to ``root`` after the completion marker was written (atomically), so an interrupted run never
looks complete; a later call regenerates.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tdam.errors import ConfigError
from tdam.validation import check_choice

from . import render as R
from .staging import remove_stale_staging, staging_dir

__all__ = [
    "make_shapes_dataset", "load_manifest", "SIZES", "GENERATOR_VERSION", "MARKER", "IMAGENET_CLASSES",
    "COCO_CATEGORIES", "V2_VARIANTS",
]

GENERATOR_VERSION = 1
MARKER = ".tdam-shapes-complete"
JPEG_OPTS = dict(format="JPEG", quality=90, optimize=False, progressive=False, subsampling=2)
_CHUNK = 256
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: tdam-shapes".ljust(116, b" ")


@dataclass(frozen=True)
class _Size:
    imagenet_train: int  # per class
    imagenet_val: int
    v2: int
    cub_train: int
    cub_test: int
    dogs_train: int
    dogs_test: int
    coco_train: int  # images
    coco_val: int


SIZES: dict[str, _Size] = {
    "tiny": _Size(8, 4, 2, 4, 3, 4, 3, 24, 12),
    "default": _Size(200, 40, 10, 30, 30, 40, 25, 600, 200),
}

# ----------------------------------------------------------------------------------------------------- class tables
_FAMILIES = list(R.COLOUR_FAMILIES)


def _imagenet_classes() -> list[dict]:
    """12 classes: shape = SHAPES[i % 6], colour family i % 4, texture (i // 3) % 4; wnid-like ids whose sorted order
    differs from this definition order (the reader's label is the SORTED-wnid index, as ImageFolder's)."""
    out = []
    for i in range(12):
        shape, fam, tex = R.SHAPES[i % 6], _FAMILIES[i % 4], R.TEXTURES[(i // 3) % 4]
        wnid = f"n{(31_000_007 * (i + 3) * 7919) % 10**8:08d}"
        out.append(dict(wnid=wnid, shape=i % 6, family=i % 4, texture=(i // 3) % 4, words=f"{fam} {tex} {shape}"))
    assert len({c["wnid"] for c in out}) == 12
    return out


IMAGENET_CLASSES = _imagenet_classes()
V2_VARIANTS = {  # folder name -> shift strength
    "imagenetv2-matched-frequency-format-val": 1.0,
    "imagenetv2-threshold0.7-format-val": 0.6,
    "imagenetv2-top-images-format-val": 0.3,
}
_CAP_COLOURS = {"Red": (0.0, 0.85, 0.85), "Yellow": (0.14, 0.85, 0.95), "Blue": (0.62, 0.8, 0.85),
                "White": (0.0, 0.0, 0.97), "Black": (0.0, 0.0, 0.08)}
CUB_CLASSES = [dict(name=f"{cap}_capped_{'Barwing' if bar else 'Plainwing'}", cap=cap, bar=bar)
               for cap in _CAP_COLOURS for bar in (0, 1)]
DOG_CLASSES = [dict(breed=f"{'Pointy' if p else 'Floppy'}_{'Curly' if c else 'Straight'}_{'Spotted' if s else 'Plain'}",
                    wnid=f"n0210{k:04d}", pointy=p, curly=c, spots=s)
               for k, (p, c, s) in enumerate([(p, c, s) for p in (1, 0) for c in (0, 1) for s in (0, 1)], start=1)]
COCO_CATEGORIES = [dict(id=i, name=n, supercategory="shape")
                   for i, n in zip((1, 3, 17, 44, 62, 90), R.SHAPES)]


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


# ----------------------------------------------------------------------------------------------------- rendering
def _sizes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(64, R.CANVAS + 1, n), rng.integers(64, R.CANVAS + 1, n)


def _place(rng, W, H, r, margin):
    """Uniform centre keeping the object (extent margin * r) inside the image where possible."""
    lo_x, hi_x = margin * r, np.maximum(W - margin * r, margin * r + 1e-3)
    lo_y, hi_y = margin * r, np.maximum(H - margin * r, margin * r + 1e-3)
    return lo_x + rng.random(len(W)) * (hi_x - lo_x), lo_y + rng.random(len(W)) * (hi_y - lo_y)


def _place_apart(rng, W, H, r, margin, cx0, cy0, r0, tries=8):
    """Among ``tries`` candidate centres pick the one farthest (relative to the radii) from (cx0, cy0)."""
    cands = [_place(rng, W, H, r, margin) for _ in range(tries)]
    cx, cy = np.stack([c[0] for c in cands], 1), np.stack([c[1] for c in cands], 1)
    score = np.hypot(cx - cx0[:, None], cy - cy0[:, None]) / (r + r0)[:, None]
    best = score.argmax(1)
    rows = np.arange(len(W))
    return cx[rows, best], cy[rows, best]


def _object_colour(rng, family, shift, n):
    hue = np.asarray([R.COLOUR_FAMILIES[_FAMILIES[f]] for f in family]) + rng.uniform(-0.035, 0.035, n) + 0.035 * shift
    sat = rng.uniform(0.6, 0.95, n) * (1 - 0.15 * shift)
    val = rng.uniform(0.65, 1.0, n) * (1 - 0.1 * shift)
    return R.hsv_to_rgb(hue, sat, val)


def _render_imagenet(rng, labels: np.ndarray, *, shift: float = 0.0, two_prob: float = 0.25):
    """Render ImageNet-style images for the class-definition indices ``labels``. Returns (images, objects) with
    objects[j] = list of (class_def_index, box, primary)."""
    images, objects = [], []
    for c0 in range(0, len(labels), _CHUNK):
        lab = labels[c0:c0 + _CHUNK]
        n = len(lab)
        W, H = _sizes(rng, n)
        canvas = R.render_background(rng, n, clutter=10 + int(round(3 * shift)), value_scale=1 - 0.15 * shift)
        m = np.minimum(W, H).astype(np.float32)
        r1 = rng.uniform(0.2, 0.34, n) * m * (1 - 0.15 * shift)
        cx1, cy1 = _place(rng, W, H, r1, 1.15)
        two = rng.random(n) < two_prob
        other = (lab + rng.integers(1, 12, n)) % 12  # a different class
        r2 = r1 * rng.uniform(0.6, 0.85, n)
        cx2, cy2 = _place_apart(rng, W, H, r2, 1.15, cx1, cy1, r1)
        boxes2 = np.full((n, 4), -1, np.int64)

        def draw(idx, cls, cx, cy, r):
            table = [IMAGENET_CLASSES[c] for c in cls]
            k = len(idx)
            return R.draw_shapes(
                canvas, idx, np.array([t["shape"] for t in table]), np.array([t["texture"] for t in table]),
                _object_colour(rng, [t["family"] for t in table], shift, k), cx, cy, r,
                rng.uniform(0, 2 * np.pi, k), W[idx], H[idx], rng.uniform(2.0, 3.5, k))

        sec = np.nonzero(two)[0]
        if len(sec):
            boxes2[sec] = draw(sec, other[sec], cx2[sec], cy2[sec], r2[sec])
        boxes1 = draw(np.arange(n), lab, cx1, cy1, r1)
        canvas += rng.normal(0.0, 0.02, canvas.shape).astype(np.float32)
        pix = R.to_uint8(canvas)
        for j in range(n):
            images.append(pix[j, :H[j], :W[j]])
            objs = [(int(lab[j]), boxes1[j].tolist(), True)]
            if two[j]:
                objs.append((int(other[j]), boxes2[j].tolist(), False))
            objects.append(objs)
    return images, objects


def _render_creatures(rng, labels: np.ndarray, kind: str, *, second_prob: float = 0.0):
    """CUB-style birds or Dogs-style dogs for class indices ``labels``. Returns (images, boxes per image)."""
    images, boxes = [], []
    for c0 in range(0, len(labels), _CHUNK):
        lab = labels[c0:c0 + _CHUNK]
        n = len(lab)
        W, H = _sizes(rng, n)
        canvas = R.render_background(rng, n, clutter=8)
        m = np.minimum(W, H).astype(np.float32)
        r = rng.uniform(0.19, 0.27, n) * m
        cx, cy = _place(rng, W, H, r, 1.65)
        two = rng.random(n) < second_prob
        r2 = r * rng.uniform(0.6, 0.8, n)
        cx2, cy2 = _place_apart(rng, W, H, r2, 1.65, cx, cy, r)
        all_boxes = [[] for _ in range(n)]
        for layer, (idx, lcx, lcy, lr) in enumerate([(np.nonzero(two)[0], cx2, cy2, r2), (np.arange(n), cx, cy, r)]):
            if len(idx) == 0:
                continue
            k = len(idx)
            theta, flip = rng.uniform(-0.3, 0.3, k), rng.random(k) < 0.5
            if kind == "bird":
                cls = [CUB_CLASSES[c] for c in lab[idx]]
                cap = np.array([_CAP_COLOURS[c["cap"]] for c in cls], np.float32)
                cap_rgb = R.hsv_to_rgb(cap[:, 0] + rng.uniform(-0.02, 0.02, k), cap[:, 1], cap[:, 2])
                body = R.hsv_to_rgb(rng.uniform(0.04, 0.13, k), rng.uniform(0.1, 0.5, k), rng.uniform(0.4, 0.8, k))
                b = R.draw_birds(canvas, idx, cap_rgb, np.array([c["bar"] for c in cls]), body, lcx[idx], lcy[idx],
                                 lr[idx], theta, flip, W[idx], H[idx])
            else:
                cls = [DOG_CLASSES[c] for c in lab[idx]]
                coat = R.hsv_to_rgb(rng.uniform(0.05, 0.11, k), rng.uniform(0.0, 0.6, k), rng.uniform(0.35, 0.95, k))
                b = R.draw_dogs(canvas, idx, np.array([c["pointy"] for c in cls]), np.array([c["curly"] for c in cls]),
                                np.array([c["spots"] for c in cls]), coat, lcx[idx], lcy[idx], lr[idx], theta, flip,
                                W[idx], H[idx])
            for j, bb in zip(idx, b):
                all_boxes[j].insert(0 if layer == 1 else len(all_boxes[j]), bb.tolist())
        canvas += rng.normal(0.0, 0.02, canvas.shape).astype(np.float32)
        pix = R.to_uint8(canvas)
        for j in range(n):
            images.append(pix[j, :H[j], :W[j]])
            boxes.append(all_boxes[j])  # primary first
    return images, boxes


def _render_coco(rng, n: int):
    """Multi-label scenes: 1-3 shapes of COCO_CATEGORIES (indices) per image, any colour / texture; ~3 % of the
    images (at least one) hold no object, like COCO's unannotated images."""
    images, objects = [], []
    counts = rng.choice(np.array([1, 2, 3]), n, p=[0.45, 0.35, 0.20])
    counts[rng.choice(n, max(1, round(0.03 * n)), replace=False)] = 0  # unannotated images, as in real COCO
    for c0 in range(0, n, _CHUNK):
        k = min(_CHUNK, n - c0)
        W, H = _sizes(rng, k)
        canvas = R.render_background(rng, k, clutter=8)
        count = counts[c0:c0 + k]
        m = np.minimum(W, H).astype(np.float32)
        objs = [[] for _ in range(k)]
        prev_cx, prev_cy, prev_r = np.full(k, -1e3), np.full(k, -1e3), np.ones(k)
        for layer in range(3):
            idx = np.nonzero(count > layer)[0]
            r = rng.uniform(0.14, 0.24, k) * m
            cx, cy = _place_apart(rng, W, H, r, 1.15, prev_cx, prev_cy, prev_r)
            cat = rng.integers(0, len(COCO_CATEGORIES), k)
            if len(idx):
                q = len(idx)
                b = R.draw_shapes(canvas, idx, cat[idx], rng.integers(0, len(R.TEXTURES), q),
                                  R.hsv_to_rgb(rng.random(q), rng.uniform(0.55, 0.95, q), rng.uniform(0.6, 1.0, q)),
                                  cx[idx], cy[idx], r[idx], rng.uniform(0, 2 * np.pi, q), W[idx], H[idx],
                                  rng.uniform(2.0, 3.5, q))
                for j, bb, c in zip(idx, b, cat[idx]):
                    objs[j].append((int(c), bb.tolist()))
            prev_cx, prev_cy, prev_r = np.where(count > layer, cx, prev_cx), np.where(count > layer, cy, prev_cy), \
                np.where(count > layer, r, prev_r)
        canvas += rng.normal(0.0, 0.02, canvas.shape).astype(np.float32)
        pix = R.to_uint8(canvas)
        for j in range(k):
            images.append(pix[j, :H[j], :W[j]])
            objects.append(objs[j])
    return images, objects


# ----------------------------------------------------------------------------------------------------- writers
def _save_jpeg(arr: np.ndarray, path: Path, grey: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if grey:
        img = img.convert("L")
    img.save(path, **JPEG_OPTS)


def _voc_xml(path: Path, *, folder: str, filename: str, database: str, width: int, height: int,
             objects: list[tuple[str, list[int]]], segment_tag: str = "segmented") -> None:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = folder
    ET.SubElement(ann, "filename").text = filename
    ET.SubElement(ET.SubElement(ann, "source"), "database").text = database
    size = ET.SubElement(ann, "size")
    for tag, val in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(val)
    ET.SubElement(ann, segment_tag).text = "0"
    for name, box in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        for tag, val in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, tag).text = str(int(val))
    ET.indent(ann)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ET.tostring(ann, encoding="utf-8") + b"\n")


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=False))


def _unique_ints(rng, n, lo, hi) -> list[int]:
    return [int(x) for x in rng.choice(np.arange(lo, hi), size=n, replace=False)]


def _gen_imagenet(out: Path, seed: int, sz: _Size) -> dict:
    wnids_sorted = sorted(c["wnid"] for c in IMAGENET_CLASSES)
    sorted_index = [wnids_sorted.index(c["wnid"]) for c in IMAGENET_CLASSES]
    root = out / "imagenet"
    _write_text(root / "LOC_synset_mapping.txt",
                [f"{w} {next(c['words'] for c in IMAGENET_CLASSES if c['wnid'] == w)}" for w in wnids_sorted])
    man = {"classes": wnids_sorted, "class_names": [next(c["words"] for c in IMAGENET_CLASSES if c["wnid"] == w)
                                                   for w in wnids_sorted], "splits": {}}
    side = {}
    for split, per in (("train", sz.imagenet_train), ("val", sz.imagenet_val)):
        rng = _rng(seed, f"imagenet/{split}")
        labels = np.repeat(np.arange(12), per)
        if split == "val":
            labels = rng.permutation(labels)  # val numbering interleaves classes, as ILSVRC's
        images, objects = _render_imagenet(rng, labels)
        recs, side[split] = [], {}
        nums = {c: iter(sorted(_unique_ints(rng, per, 1, 20000))) for c in range(12)}
        for j, (img, objs) in enumerate(zip(images, objects)):
            ci = int(labels[j])
            wnid = IMAGENET_CLASSES[ci]["wnid"]
            if split == "train":
                rel = f"train/{wnid}/{wnid}_{next(nums[ci])}.JPEG"
            else:
                stem = f"ILSVRC2012_val_{j + 1:08d}"
                rel = f"val/{wnid}/{stem}.JPEG"
                _voc_xml(root / "val_boxes" / f"{stem}.xml", folder="val", filename=stem, database="ILSVRC_2012",
                         width=img.shape[1], height=img.shape[0],
                         objects=[(IMAGENET_CLASSES[c]["wnid"], b) for c, b, prim in objs if c == ci])
            _save_jpeg(img, root / rel)
            all_objs = [{"wnid": IMAGENET_CLASSES[c]["wnid"], "label": sorted_index[c], "box": b, "primary": p}
                        for c, b, p in objs]
            side[split][rel] = all_objs
            recs.append({"file": rel, "label": sorted_index[ci], "width": img.shape[1], "height": img.shape[0],
                         "boxes": [o["box"] for o in all_objs if o["label"] == sorted_index[ci]],
                         "objects": all_objs})
        man["splits"][split] = recs
    _write_json(root / "shapes_objects.json", {"note": "every drawn object (primary = the labelled one); boxes "
                                               "xyxy inclusive pixels", "splits": side})
    return man


def _gen_imagenet_v2(out: Path, seed: int, sz: _Size) -> dict:
    wnids_sorted = sorted(c["wnid"] for c in IMAGENET_CLASSES)
    sorted_index = np.array([wnids_sorted.index(c["wnid"]) for c in IMAGENET_CLASSES])
    man = {"classes": [str(i) for i in range(12)], "variants": {}}
    for variant, shift in V2_VARIANTS.items():
        rng = _rng(seed + 7_777, f"imagenet_v2/{variant}")  # a different render seed stream
        labels = np.repeat(np.arange(12), sz.v2)
        images, objects = _render_imagenet(rng, labels, shift=shift)
        recs = []
        for j, (img, objs) in enumerate(zip(images, objects)):
            lab = int(sorted_index[labels[j]])
            rel = f"{variant}/{lab}/{j % sz.v2}.jpeg"
            _save_jpeg(img, out / "imagenet_v2" / rel)
            recs.append({"file": rel, "label": lab, "width": img.shape[1], "height": img.shape[0],
                         "objects": [{"label": int(sorted_index[c]), "box": b, "primary": p} for c, b, p in objs]})
        man["variants"][variant] = recs
    return man


def _gen_cub(out: Path, seed: int, sz: _Size) -> dict:
    root = out / "cub200" / "CUB_200_2011"
    rng = _rng(seed, "cub200")
    per = sz.cub_train + sz.cub_test
    labels = np.repeat(np.arange(len(CUB_CLASSES)), per)
    images, boxes = _render_creatures(rng, labels, "bird")
    grey = np.zeros(len(images), dtype=bool)
    grey[rng.choice(len(images), max(1, round(0.03 * len(images))), replace=False)] = True  # CUB has grey JPEGs
    is_train = np.concatenate([rng.permutation([1] * sz.cub_train + [0] * sz.cub_test) for _ in CUB_CLASSES])
    folders = [f"{k + 1:03d}.{c['name']}" for k, c in enumerate(CUB_CLASSES)]
    lines = {"images": [], "labels": [], "split": [], "boxes": []}
    recs = {"train": [], "test": []}
    for j, (img, bxs) in enumerate(zip(images, boxes)):
        ci = int(labels[j])
        stem = "_".join(w.capitalize() for w in CUB_CLASSES[ci]["name"].split("_"))
        rel = f"{folders[ci]}/{stem}_{j % per + 1:04d}_{int(rng.integers(1, 800000))}.jpg"
        _save_jpeg(img, root / "images" / rel, grey=bool(grey[j]))
        x1, y1, x2, y2 = bxs[0]
        iid = j + 1
        lines["images"].append(f"{iid} {rel}")
        lines["labels"].append(f"{iid} {ci + 1}")
        lines["split"].append(f"{iid} {int(is_train[j])}")
        lines["boxes"].append(f"{iid} {float(x1)} {float(y1)} {float(x2 - x1)} {float(y2 - y1)}")
        recs["train" if is_train[j] else "test"].append(
            {"file": f"images/{rel}", "label": ci, "boxes": [bxs[0]], "width": img.shape[1], "height": img.shape[0],
             "grey": bool(grey[j])})
    _write_text(root / "images.txt", lines["images"])
    _write_text(root / "image_class_labels.txt", lines["labels"])
    _write_text(root / "train_test_split.txt", lines["split"])
    _write_text(root / "bounding_boxes.txt", lines["boxes"])
    _write_text(root / "classes.txt", [f"{k + 1} {f}" for k, f in enumerate(folders)])
    return {"classes": folders, "splits": recs}


def _gen_dogs(out: Path, seed: int, sz: _Size) -> dict:
    from scipy.io import savemat

    root = out / "stanford_dogs"
    rng = _rng(seed, "stanford_dogs")
    per = sz.dogs_train + sz.dogs_test
    folders = sorted(f"{c['wnid']}-{c['breed']}" for c in DOG_CLASSES)
    order = [next(k for k, c in enumerate(DOG_CLASSES) if f"{c['wnid']}-{c['breed']}" == f) for f in folders]
    labels = np.repeat(np.arange(len(DOG_CLASSES)), per)  # sorted-folder index
    images, boxes = _render_creatures(rng, np.array(order)[labels], "dog", second_prob=0.15)
    recs = {"train": [], "test": []}
    lists = {"train": [], "test": [], "all": []}
    for c in range(len(folders)):
        wnid = folders[c].split("-")[0]
        breed = folders[c].split("-", 1)[1]
        nums = sorted(_unique_ints(rng, per, 100, 20000))
        split_of = rng.permutation(["train"] * sz.dogs_train + ["test"] * sz.dogs_test)
        for t in range(per):
            j = c * per + t
            img, bxs = images[j], boxes[j]
            stem = f"{wnid}_{nums[t]}"
            rel = f"{folders[c]}/{stem}.jpg"
            _save_jpeg(img, root / "Images" / rel)
            _voc_xml(root / "Annotation" / folders[c] / stem, folder=wnid[1:], filename=stem,
                     database="ImageNet database", width=img.shape[1], height=img.shape[0],
                     objects=[(breed, b) for b in bxs], segment_tag="segment")
            item = (rel, f"{folders[c]}/{stem}", c + 1)
            lists[str(split_of[t])].append(item)
            lists["all"].append(item)
            recs[str(split_of[t])].append({"file": f"Images/{rel}", "label": c, "boxes": bxs,
                                           "width": img.shape[1], "height": img.shape[0]})
    for name, key in (("file_list.mat", "all"), ("train_list.mat", "train"), ("test_list.mat", "test")):
        items = lists[key]
        cell_f = np.empty((len(items), 1), dtype=object)
        cell_a = np.empty((len(items), 1), dtype=object)
        for k, (f, a, _) in enumerate(items):
            cell_f[k, 0], cell_a[k, 0] = np.array([f]), np.array([a])
        buf = io.BytesIO()
        savemat(buf, {"file_list": cell_f, "annotation_list": cell_a,
                      "labels": np.array([[lab] for _, _, lab in items], dtype=np.uint8)})
        data = bytearray(buf.getvalue())
        data[:116] = _MAT_HEADER  # scipy stamps the creation time here: fix it for byte-identical output
        (root / name).write_bytes(bytes(data))
    return {"classes": folders, "splits": {k: v for k, v in recs.items()},
            "list_order": {k: [f"Images/{f}" for f, _, _ in v] for k, v in lists.items()}}


def _gen_coco(out: Path, seed: int, sz: _Size) -> dict:
    root = out / "coco2014"
    man = {"categories": [c["id"] for c in COCO_CATEGORIES], "classes": [c["name"] for c in COCO_CATEGORIES],
           "splits": {}}
    for split, n in (("train", sz.coco_train), ("val", sz.coco_val)):
        rng = _rng(seed, f"coco2014/{split}")
        images, objects = _render_coco(rng, n)
        ids = sorted(_unique_ints(rng, n, 1, 600000))
        ann_id = int(rng.integers(1, 10**6))
        js = {"info": {"description": "tdam-shapes COCO-2014-style", "version": str(GENERATOR_VERSION)},
              "licenses": [{"id": 1, "name": "CC0", "url": ""}], "images": [], "annotations": [],
              "categories": list(reversed(COCO_CATEGORIES))}  # JSON order need not be id order; readers sort ids
        recs = []
        for iid, img, objs in zip(ids, images, objects):
            fname = f"COCO_{split}2014_{iid:012d}.jpg"
            _save_jpeg(img, root / f"{split}2014" / fname)
            js["images"].append({"id": iid, "file_name": fname, "width": img.shape[1], "height": img.shape[0],
                                 "license": 1, "coco_url": "", "flickr_url": "", "date_captured": ""})
            for c, (x1, y1, x2, y2) in objs:
                js["annotations"].append({
                    "id": ann_id, "image_id": iid, "category_id": COCO_CATEGORIES[c]["id"],
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "area": float((x2 - x1 + 1) * (y2 - y1 + 1)), "iscrowd": 0,
                    "segmentation": [[float(x1), float(y1), float(x2), float(y1), float(x2), float(y2),
                                      float(x1), float(y2)]]})
                ann_id += 1
            recs.append({"file": f"{split}2014/{fname}", "id": iid, "width": img.shape[1], "height": img.shape[0],
                         "category_ids": [COCO_CATEGORIES[c]["id"] for c, _ in objs],
                         "boxes": [b for _, b in objs]})
        _write_json(root / "annotations" / f"instances_{split}2014.json", js)
        man["splits"][split] = recs
    return man


# ----------------------------------------------------------------------------------------------------- public API
def _marker_info(seed: int, size: str) -> dict:
    return {"generator": "tdam-shapes", "version": GENERATOR_VERSION, "seed": int(seed), "size": size}


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


#: shard / parquet sizes of the converted formats: (images per tar shard, rows per parquet file, rows per row group)
_FORMAT_SIZES = {"tiny": (8, 32, 10), "default": (100, 1000, 100)}


def make_shapes_dataset(root: str | os.PathLike | None = None, *, seed: int = 0, size: str = "default",
                        formats: tuple[str, ...] | list[str] = ()) -> Path:
    """Generate (once) the embedded tdam-shapes datasets under ``root`` and return ``root``.

    ``root`` defaults to ``tdam.paths.data_cache_dir() / f"shapes-{size}-s{seed}"``. ``size`` is ``'tiny'`` (tests:
    a few hundred images, ~1 s) or ``'default'`` (notebooks: ~2.4k ImageNet-style training images). A complete
    dataset (marker present, same generator version/seed/size) is reused; a different one at ``root`` raises
    ``ValueError``; a non-empty folder without the marker is never touched (``FileExistsError``). ``formats``
    (subset of ``('wds', 'parquet')``) also writes ``imagenet/`` as shards / parquet files (cached likewise).
    """
    check_choice("size", size, sorted(SIZES))
    root = _make_folders(root, seed=seed, size=size)
    if formats:
        _add_formats(root, size, tuple(formats))
    return root


def _add_formats(root: Path, size: str, formats: tuple[str, ...]) -> None:
    from .convert import convert_imagenet
    from .formats import FORMATS, PARQUET_DIR, WDS_DIR
    for f in formats:
        check_choice("format", f, FORMATS)
    folder = {"wds": WDS_DIR, "parquet": PARQUET_DIR}
    missing = [f for f in dict.fromkeys(formats) if not (root / folder[f]).is_dir()]
    if not missing:
        return
    shard, rows, group = _FORMAT_SIZES[size]
    try:
        convert_imagenet(root / "imagenet", root, formats=missing, shard_size=shard, rows_per_file=rows,
                         row_group_size=group)
    except (OSError, ConfigError):          # the output exists, or appeared while this process converted
        if not all((root / folder[f]).is_dir() for f in missing):  # else a concurrent process finished first
            raise


def _make_folders(root: str | os.PathLike | None, *, seed: int, size: str) -> Path:
    """The folder-format generation of :func:`make_shapes_dataset` (cached, atomic)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if root is None:
        from tdam.paths import data_cache_dir
        root = data_cache_dir() / f"shapes-{size}-s{seed}"
    root = Path(root).expanduser().resolve()
    want = _marker_info(seed, size)
    if root.exists():
        have = _read_marker(root)
        if have == want:
            return root
        if have is not None and have.get("generator") == "tdam-shapes":
            if have.get("version") == GENERATOR_VERSION:
                raise ValueError(f"{root} holds tdam-shapes with seed={have.get('seed')} size={have.get('size')!r}, "
                                 f"not seed={seed} size={size!r}; pass another root")
            # an older generator's cache: regenerate below (replace it)
        elif root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        else:
            raise FileExistsError(f"{root} exists and is not a complete tdam-shapes dataset (no {MARKER}); "
                                  f"remove it or pass another root")
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(root)    # temp folders of generations killed mid-way
    tmp = staging_dir(root)
    try:
        sz = SIZES[size]
        manifest = {"generator": want, "imagenet": _gen_imagenet(tmp, seed, sz),
                    "imagenet_v2": _gen_imagenet_v2(tmp, seed, sz), "cub200": _gen_cub(tmp, seed, sz),
                    "stanford_dogs": _gen_dogs(tmp, seed, sz), "coco2014": _gen_coco(tmp, seed, sz)}
        _write_json(tmp / "manifest.json", manifest)
        marker_tmp = tmp / (MARKER + ".part")
        marker_tmp.write_text(json.dumps(want))
        os.replace(marker_tmp, tmp / MARKER)
        if root.exists():  # an outdated generator version: swap it out
            trash = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(root, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, root)
        except OSError:
            if _read_marker(root) == want:  # a concurrent process finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def load_manifest(root: str | os.PathLike) -> dict:
    """The ``manifest.json`` that :func:`make_shapes_dataset` wrote under ``root``."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tdam-shapes manifest at {path}; generate with tdam.data.make_shapes_dataset")
    return json.loads(path.read_text())
