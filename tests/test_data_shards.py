"""ImageNet from WebDataset shards and Hugging Face-style parquet files: the same images, labels, synsets and boxes
as the folder, identical logits from a model, the split across ranks and workers, epoch-boundary resume, the
converter and its command line, bad images."""
from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

pytest.importorskip("webdataset")
pytest.importorskip("pyarrow")

import tdam  # noqa: E402
from tdam.data import (BadImageError, BadSample, CountingDataLoader, DatasetLayoutError, build_dataset,  # noqa: E402
                       build_transform, collate_drop_bad, convert_imagenet, make_shapes_dataset, set_shard_epoch,
                       shapes_root, shard_loader)
from tdam.data.convert import main as convert_main  # noqa: E402
from tdam.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shards") / "shapes", size="tiny", formats=("wds", "parquet"))


def _three(shapes, split, transform=None, **wds_options):
    return (build_dataset("imagenet", shapes_root(shapes, "imagenet"), split, transform),
            build_dataset("imagenet_wds", shapes_root(shapes, "imagenet_wds"), split, transform, training=False,
                          with_meta=True, **wds_options),
            build_dataset("imagenet_parquet", shapes_root(shapes, "imagenet_parquet"), split, transform))


@pytest.mark.parametrize("split", ["train", "val"])
def test_formats_hold_the_folder_images_labels_synsets_and_boxes(shapes, split):
    folder, wds, parquet = _three(shapes, split)
    assert len(folder) == len(wds) == len(parquet) == (96 if split == "train" else 48)
    assert folder.classes == wds.classes == parquet.classes
    assert folder.class_names == wds.class_names == parquet.class_names
    assert parquet.has_boxes == folder.has_boxes == (split == "val")
    by_name = {}
    for img, label, meta in wds:
        by_name[meta["filename"]] = (np.asarray(img), label, meta)
    p_index = {parquet.path(j).rsplit(":", 1)[1]: j for j in range(len(parquet))}
    assert len(by_name) == len(p_index) == len(folder)
    if split == "val":  # validation keeps the folder order (training images are written shuffled)
        assert list(p_index.values()) == [p_index[folder.path(i).rsplit("/", 1)[1]] for i in range(len(folder))]
    for i in range(len(folder)):
        img, label = folder[i]
        name = folder.path(i).rsplit("/", 1)[1]
        w_img, w_label, meta = by_name[name]
        j = p_index[name]
        p_img, p_label = parquet[j]
        assert label == w_label == p_label
        assert np.array_equal(np.asarray(img), w_img) and np.array_equal(np.asarray(img), np.asarray(p_img))
        assert meta["synset"] == parquet.synset(j) == folder.classes[label]
        assert (meta["width"], meta["height"]) == parquet.image_size(j) == folder.image_size(i)
        if split == "val":
            boxes, labels = folder.objects(i)
            assert torch.equal(boxes, meta["boxes"]) and torch.equal(boxes, parquet.boxes(j))
            assert torch.equal(labels, meta["box_labels"]) and torch.equal(labels, parquet.objects(j)[1])


def test_same_model_same_images_identical_logits_and_topk(shapes):
    torch.manual_seed(0)
    model = tdam.create_model("resnet18", num_classes=12).eval()
    tf = build_transform(False, img_size=64)
    folder, wds, parquet = _three(shapes, "val", tf)
    wds.with_meta = False

    def logits(ds):
        out, labels = [], []
        with torch.no_grad():
            for x, y in DataLoader(ds, batch_size=16):
                out.append(model(x))
                labels.append(y)
        return torch.cat(out), torch.cat(labels)

    (lf, yf), (lw, yw), (lp, yp) = logits(folder), logits(wds), logits(parquet)
    assert torch.equal(yf, yw) and torch.equal(yf, yp)
    assert torch.equal(lf, lw) and torch.equal(lf, lp)
    for k in (1, 5):
        hits = [(lg.topk(k, 1).indices == y[:, None]).any(1).float().mean().item() for lg, y in
                ((lf, yf), (lw, yw), (lp, yp))]
        assert hits[0] == hits[1] == hits[2]


def _keys(ds, num_workers):
    ds.set_loader_cfg(num_workers)
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers)
    return [meta["key"] for _, _, meta in loader]


def test_wds_evaluation_covers_each_image_once_across_ranks_and_workers(shapes):
    root = shapes_root(shapes, "imagenet_wds")
    every = _keys(build_dataset("imagenet_wds", root, "val", with_meta=True), 0)
    seen = []
    for rank in range(2):
        ds = build_dataset("imagenet_wds", root, "val", with_meta=True, rank=rank, world_size=2)
        keys = _keys(ds, 2)
        assert len(keys) == len(ds)  # the exact per-rank count
        seen += keys
    assert sorted(seen) == sorted(every) and len(set(seen)) == len(every) == 48


def test_wds_training_equal_quota_per_rank_and_epoch_boundary_resume(shapes):
    root = shapes_root(shapes, "imagenet_wds")

    def rank_ds(rank):
        return build_dataset("imagenet_wds", root, "train", with_meta=True, rank=rank, world_size=2, seed=3)

    # every rank runs the same number of batches (DDP never waits on a rank that ran dry)
    steps = []
    for rank in range(2):
        ds = rank_ds(rank)
        loader = shard_loader(ds, 4, num_workers=2, collate_fn=lambda b: [m["key"] for _, _, m in b])
        set_shard_epoch(loader, 0)
        batches = list(loader)
        assert all(len(b) == 4 for b in batches)
        steps.append(len(batches))
        assert len(batches) == len(ds) // 4
    assert steps[0] == steps[1] >= 96 // 2 // 4

    # the order of an epoch is a function of (seed, epoch, world size, workers): a fresh process resuming at
    # epoch 1 streams what the uninterrupted run streamed in epoch 1
    def epoch_keys(ds, epoch):
        ds.set_epoch(epoch)
        return _keys(ds, 2)

    run = rank_ds(0)
    first, second = epoch_keys(run, 0), epoch_keys(run, 1)
    resumed = epoch_keys(rank_ds(0), 1)
    assert resumed == second and first != second


def test_wds_training_needs_a_shard_per_worker(shapes):
    ds = build_dataset("imagenet_wds", shapes_root(shapes, "imagenet_wds"), "train", rank=0, world_size=4)
    with pytest.raises(ValueError, match="12 training shard.* cannot feed 4 rank.* x 4 loader worker"):
        ds.set_loader_cfg(4)  # 16 global workers, 12 shards: refused before any worker starts
    ds.reader.set_loader_cfg(num_workers=4)   # a loader that skipped set_loader_cfg: refused by the reader itself
    with pytest.raises(ValueError, match="cannot feed"):
        next(iter(DataLoader(ds, batch_size=None, num_workers=0)))


def test_parquet_is_map_style_under_distributed_sampler_and_workers(shapes):
    ds = build_dataset("imagenet_parquet", shapes_root(shapes, "imagenet_parquet"), "train",
                       build_transform(False, img_size=32))
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(1)
        idx = list(sampler)
        labels = torch.cat([y for _, y in DataLoader(ds, batch_size=8, sampler=idx, num_workers=2)])
        assert labels.tolist() == [ds.targets[i] for i in idx]
        seen += idx
    assert sorted(seen) == list(range(len(ds)))


def test_converter_cli_is_deterministic_and_refuses_to_overwrite(shapes, tmp_path):
    src = shapes_root(shapes, "imagenet")
    args = [src, "--formats", "wds", "parquet", "--splits", "val", "--shard-size", "20"]
    assert convert_main([args[0], str(tmp_path / "a"), *args[1:]]) == 0
    convert_main([args[0], str(tmp_path / "b"), *args[1:]])
    info = json.loads((tmp_path / "a/imagenet_wds/_info.json").read_text())
    assert info["splits"]["validation"]["shard_lengths"] == [20, 20, 8] and "train" not in info["splits"]
    for name in info["splits"]["validation"]["filenames"]:
        assert (tmp_path / "a/imagenet_wds" / name).read_bytes() == (tmp_path / "b/imagenet_wds" / name).read_bytes()
        with tarfile.open(tmp_path / "a/imagenet_wds" / name) as tar:
            exts = {m.name.split(".", 1)[1] for m in tar.getmembers()}
        assert exts == {"jpg", "cls", "json"}
    import pyarrow.parquet as pq
    t = pq.read_table(tmp_path / "a/imagenet_parquet/data/validation-00000-of-00001.parquet")
    assert t.column_names[:2] == ["image", "label"] and t.schema.field("image").type.names == ["bytes", "path"]
    with pytest.raises(ConfigError, match=r"imagenet_wds exists .*nothing to convert"):
        convert_imagenet(src, tmp_path / "a", formats=("wds",), splits=("val",))
    with pytest.raises(ValueError, match="format"):
        convert_imagenet(src, tmp_path / "c", formats=("zip",))


def test_missing_layouts_name_the_path(tmp_path):
    with pytest.raises(DatasetLayoutError, match="_info.json"):
        build_dataset("imagenet_wds", tmp_path, "val")
    with pytest.raises(DatasetLayoutError, match="parquet"):
        build_dataset("imagenet_parquet", tmp_path, "val")


def test_bad_image_follows_on_bad_image(shapes, tmp_path):
    src = tmp_path / "imagenet"
    shutil.copytree(shapes_root(shapes, "imagenet"), src)
    victim = sorted((src / "val").rglob("*.JPEG"))[0]
    victim.write_bytes(b"not a jpeg")
    convert_imagenet(src, tmp_path, splits=("val",))
    for kind in ("imagenet_wds", "imagenet_parquet"):
        root = tmp_path / kind
        with pytest.raises(BadImageError, match=victim.name):
            list(build_dataset(kind, root, "val"))
        ds = build_dataset(kind, root, "val", build_transform(False, img_size=32), on_bad_image="skip")
        loader = CountingDataLoader(ds, batch_size=50, collate_fn=collate_drop_bad)
        (x, y), = list(loader)
        assert len(x) == 47 and len(loader.bad_images) == 1 and victim.name in loader.bad_images[0]
        assert isinstance(BadSample("p", 0), BadSample)


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    import os

    import torch.distributed as dist
    import torch.nn as nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ds = build_dataset("imagenet_wds", root, "train", build_transform(False, img_size=16), seed=1)
        loader = shard_loader(ds, 8, num_workers=0)
        set_shard_epoch(loader, 0)
        torch.manual_seed(0)
        model = DDP(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 12)))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        steps = 0
        for x, y in loader:
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            steps += 1
        total = torch.tensor([steps])
        dist.all_reduce(total)
        weight = model.module[1].weight.detach().clone()
        torch.save({"rank": ds.reader.dist_rank, "world": ds.reader.dist_num_replicas, "steps": steps,
                    "len": len(ds), "total": int(total), "weight": weight}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_one_ddp_epoch_from_shards_under_two_gloo_processes(shapes, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, shapes_root(shapes, "imagenet_wds"), str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)  # read from the process group
    assert r0["steps"] == r1["steps"] == r0["len"] // 8 == 6 and r0["total"] == 12  # 96 images / 2 ranks / 8
    assert torch.equal(r0["weight"], r1["weight"])  # DDP kept the replicas in step
