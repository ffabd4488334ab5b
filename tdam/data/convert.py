"""Write an ImageNet class-subfolder folder as WebDataset tar shards and as Hugging Face ``imagenet-1k``-style
parquet files, keeping labels, synsets and boxes.

The image files are copied BYTE FOR BYTE (no re-encoding), so the three formats decode to identical pixels and a
model evaluated on any of them gives identical logits.

WebDataset (``<out>/imagenet_wds``; timm's ``ReaderWds`` layout, as ``timm/imagenet-1k-wds``)
    ``imagenet1k-{train,validation}-NNNN.tar`` with one sample per image: ``<key>.jpg`` (or ``.png``/``.webp``, the
    original bytes), ``<key>.cls`` (the sorted-wnid label as decimal text) and ``<key>.json`` (``filename``,
    ``label``, ``synset``, ``class_name``, ``width``, ``height``, ``boxes`` xyxy original pixels, ``box_labels``);
    ``_info.json`` lists the splits (``filenames``, ``shard_lengths``, ``num_samples``) and the ``synsets`` /
    ``class_names``. Keys are file stems (the ILSVRC names are unique across classes). Training shards are written
    in a seeded random order (shard-level + buffer shuffling then mixes classes); validation keeps the folder order.
Parquet (``<out>/imagenet_parquet``; the Hugging Face ``imagenet-1k`` layout)
    ``data/{train,validation}-NNNNN-of-MMMMM.parquet`` with columns ``image`` (struct ``bytes``, ``path``) and
    ``label`` (int64), as the Hub files, plus ``synset``, ``width``, ``height``, ``boxes`` (list of xyxy) and
    ``box_labels``; row groups of ``row_group_size`` images (100, the ``datasets`` library's size for image data).
    The schema metadata holds the Hugging Face features (``label`` as ClassLabel) and ``tdam`` (synsets, names).

Function: :func:`convert_imagenet`; command line: ``python -m tdam.data.convert SRC OUT [--formats wds parquet]
[--splits train val] [--shard-size 1000] [--rows-per-file 10000] [--seed 0]``. The tar writer needs only the
standard library; the parquet writer needs ``pyarrow`` (``pip install tdam[shards]``).

Each format folder is written whole or not at all (:mod:`tdam.data.staging`): a killed conversion leaves a temporary
``.imagenet_wds.tmp-<pid>-<hex>`` that the next run removes. An existing format folder is never overwritten; when
some requested formats exist and others do not (a run that stopped on a full disk after the first), the refusal
names the ``--formats`` that writes only the missing ones. The command follows the exit codes of :mod:`tdam.errors`
(2 arguments or an existing output, 3 an unreadable source image or layout, 4 an output that cannot be written,
5 stopped by SIGTERM/SIGINT, its partial output removed).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import logging
import random
import shutil
import signal
import tarfile
from pathlib import Path
from typing import Sequence

from tdam.errors import ConfigError, run_command, writing
from tdam.validation import check_choice, check_int

from .errors import BadRecordError
from .formats import FORMATS, PARQUET_DIR, SPLIT_NAMES, WDS_DIR, require
from .imagenet import ImageNetDataset
from .staging import remove_stale_staging, staging_dir

__all__ = ["convert_imagenet", "FORMATS", "SPLIT_NAMES", "WDS_DIR", "PARQUET_DIR", "require", "main"]

log = logging.getLogger("tdam.data")
PROG = "python -m tdam.data.convert"
_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def _records(ds: ImageNetDataset) -> list[dict]:
    """One metadata record per image of ``ds`` (folder order)."""
    recs = []
    for i, (path, label) in enumerate(ds.samples):
        p = Path(path)
        ext = _EXT.get(p.suffix.lower())
        if ext is None:
            raise BadRecordError(f"{path}: only {sorted(_EXT)} images can be sharded (timm's reader decodes "
                                 f"jpg/png/webp)")
        if "." in p.stem:
            raise BadRecordError(f"{path}: a file stem with a dot cannot be a WebDataset key")
        w, h = ds.image_size(i)
        boxes, box_labels = None, None  # null where the split has no box annotations
        if ds.has_boxes:
            b, bl = ds.objects(i)
            boxes, box_labels = b.tolist(), bl.tolist()
        recs.append({"key": p.stem, "path": path, "ext": ext, "filename": p.name, "label": int(label),
                     "synset": ds.classes[label], "class_name": ds.class_names[label], "width": int(w),
                     "height": int(h), "boxes": boxes, "box_labels": box_labels})
    keys = [r["key"] for r in recs]
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        twice = next(k for k in keys if k in seen or seen.add(k))
        raise BadRecordError(f"{ds.root}/{ds.split}: file stem {twice!r} occurs twice: stems are the WebDataset keys "
                             f"and must be unique")
    return recs


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "", ""
    tar.addfile(info, io.BytesIO(data))


def _meta(r: dict) -> dict:
    return {k: r[k] for k in ("filename", "label", "synset", "class_name", "width", "height", "boxes", "box_labels")}


def _write_wds(recs: list[dict], out: Path, split_name: str, shard_size: int) -> dict:
    names, lengths = [], []
    chunks = [recs[i:i + shard_size] for i in range(0, len(recs), shard_size)]
    digits = max(4, len(str(len(chunks) - 1)))
    for n, chunk in enumerate(chunks):
        name = f"imagenet1k-{split_name}-{n:0{digits}d}.tar"
        with tarfile.open(out / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for r in chunk:
                _tar_add(tar, f"{r['key']}.{r['ext']}", Path(r["path"]).read_bytes())
                _tar_add(tar, f"{r['key']}.cls", str(r["label"]).encode())
                _tar_add(tar, f"{r['key']}.json", json.dumps(_meta(r), sort_keys=True).encode())
        names.append(name)
        lengths.append(len(chunk))
    return {"name": split_name, "num_samples": len(recs), "filenames": names, "shard_lengths": lengths}


def _write_parquet(recs: list[dict], out: Path, split_name: str, rows_per_file: int, row_group_size: int,
                   classes: list[str], class_names: list[str]) -> list[str]:
    pa = require("pyarrow")
    pq = require("pyarrow.parquet")
    schema = pa.schema([
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64()),
        ("synset", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("boxes", pa.list_(pa.list_(pa.float64(), 4))), ("box_labels", pa.list_(pa.int64())),
    ])
    hf = {"info": {"features": {
        "image": {"_type": "Image"}, "label": {"names": list(class_names), "_type": "ClassLabel"},
        "synset": {"dtype": "string", "_type": "Value"}, "width": {"dtype": "int32", "_type": "Value"},
        "height": {"dtype": "int32", "_type": "Value"},
        "boxes": {"feature": {"feature": {"dtype": "float64", "_type": "Value"}, "length": 4, "_type": "Sequence"},
                  "_type": "Sequence"},
        "box_labels": {"feature": {"dtype": "int64", "_type": "Value"}, "_type": "Sequence"}}}}
    schema = schema.with_metadata({"huggingface": json.dumps(hf),
                                   "tdam": json.dumps({"synsets": classes, "class_names": class_names})})
    chunks = [recs[i:i + rows_per_file] for i in range(0, len(recs), rows_per_file)]
    (out / "data").mkdir(parents=True, exist_ok=True)
    names = []
    for n, chunk in enumerate(chunks):
        name = f"data/{split_name}-{n:05d}-of-{len(chunks):05d}.parquet"
        table = pa.table({
            "image": [{"bytes": Path(r["path"]).read_bytes(), "path": r["filename"]} for r in chunk],
            "label": [r["label"] for r in chunk], "synset": [r["synset"] for r in chunk],
            "width": [r["width"] for r in chunk], "height": [r["height"] for r in chunk],
            "boxes": [r["boxes"] for r in chunk], "box_labels": [r["box_labels"] for r in chunk],
        }, schema=schema)
        pq.write_table(table, out / name, row_group_size=row_group_size)
        names.append(name)
    return names


def convert_imagenet(src: str | os.PathLike, out: str | os.PathLike, *, formats: Sequence[str] = FORMATS,
                     splits: Sequence[str] = ("train", "val"), shard_size: int = 1000, rows_per_file: int = 10000,
                     row_group_size: int = 100, seed: int = 0, boxes_dir: str | os.PathLike | None = None
                     ) -> dict[str, Path]:
    """Convert the ImageNet folder ``src`` (the ``imagenet`` reader's root) into ``out/imagenet_wds`` and/or
    ``out/imagenet_parquet`` (see the module docstring); returns {format: folder}. Each format folder is written
    to a temporary sibling and renamed when complete (the temporaries of killed conversions are removed first); an
    existing one raises :class:`~tdam.errors.ConfigError` naming the formats still missing. Training images are
    written in a random order drawn from ``seed``; validation keeps the folder order."""
    formats = tuple(formats)
    for f in formats:
        check_choice("format", f, FORMATS)
    for s in splits:
        check_choice("split", s, sorted(SPLIT_NAMES))
    for name, v in (("shard_size", shard_size), ("rows_per_file", rows_per_file), ("row_group_size", row_group_size)):
        check_int(name, v, 1)
    out = Path(out).expanduser()
    targets = {"wds": out / WDS_DIR, "parquet": out / PARQUET_DIR}
    for f in formats:
        if removed := remove_stale_staging(targets[f]):
            log.warning("removed %d temporary folder(s) left by a killed conversion: %s", len(removed),
                        ", ".join(str(r) for r in removed))
    present = [f for f in formats if targets[f].exists()]
    if present:
        missing = [f for f in formats if f not in present]
        hint = (f"write only the missing with --formats {' '.join(missing)} (formats={tuple(missing)!r})" if missing
                else "nothing to convert")
        raise ConfigError(f"{', '.join(str(targets[f]) for f in present)} exist{'s' if len(present) == 1 else ''} "
                          f"(written by an earlier conversion): {hint}; or remove "
                          f"{'it' if len(present) == 1 else 'them'} to write again")
    if "parquet" in formats:
        require("pyarrow")
    data = {}
    for s in splits:
        ds = ImageNetDataset(src, s, boxes_dir=boxes_dir)
        recs = _records(ds)
        if s == "train":
            random.Random(seed).shuffle(recs)
        data[s] = (ds, recs)
    ds0 = next(iter(data.values()))[0]
    classes, class_names = list(ds0.classes), list(ds0.class_names)
    done = {}
    for f in formats:
        with writing(targets[f].parent):
            tmp = staging_dir(targets[f])
        try:
            with writing(targets[f]):
                _write_format(f, tmp, data, shard_size, rows_per_file, row_group_size, classes, class_names)
            os.rename(tmp, targets[f])
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        done[f] = targets[f]
    return done


def _write_format(f: str, tmp: Path, data: dict, shard_size: int, rows_per_file: int, row_group_size: int,
                  classes: list[str], class_names: list[str]) -> None:
    """Write format ``f`` ('wds' or 'parquet') of the splits ``data`` into the staging folder ``tmp``."""
    if f == "wds":
        info = {"name": "imagenet-1k", "synsets": classes, "class_names": class_names, "splits": {
            SPLIT_NAMES[s]: _write_wds(recs, tmp, SPLIT_NAMES[s], shard_size) for s, (_, recs) in data.items()}}
        (tmp / "_info.json").write_text(json.dumps(info, indent=1))
    else:
        for s, (_, recs) in data.items():
            _write_parquet(recs, tmp, SPLIT_NAMES[s], rows_per_file, row_group_size, classes, class_names)


def _stop(signum: int, frame) -> None:
    """SIGTERM -> KeyboardInterrupt, so a job scheduler's stop removes the partial output as Ctrl-C does."""
    raise KeyboardInterrupt


def _explain(e: BaseException) -> str | None:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted; the partial output was removed: rerun the command to convert again"
    return None


def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="ImageNet folder (train/<wnid>/..., val/<wnid>/..., optional val_boxes/)")
    p.add_argument("out", help="output folder; receives imagenet_wds/ and/or imagenet_parquet/")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    p.add_argument("--splits", nargs="+", default=["train", "val"], choices=sorted(SPLIT_NAMES))
    p.add_argument("--shard-size", type=int, default=1000, help="images per tar shard")
    p.add_argument("--rows-per-file", type=int, default=10000, help="images per parquet file")
    p.add_argument("--row-group-size", type=int, default=100, help="images per parquet row group")
    p.add_argument("--seed", type=int, default=0, help="seed of the training images' order")
    p.add_argument("--boxes-dir", default=None, help="ILSVRC val XML folder (default <src>/val_boxes)")
    a = p.parse_args(argv)
    done = convert_imagenet(a.src, a.out, formats=a.formats, splits=a.splits, shard_size=a.shard_size,
                            rows_per_file=a.rows_per_file, row_group_size=a.row_group_size, seed=a.seed,
                            boxes_dir=a.boxes_dir)
    for f, path in done.items():
        print(f"{f}: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns its exit code (:mod:`tdam.errors`)."""
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return run_command(_main, argv, prog=PROG, explain=_explain)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
