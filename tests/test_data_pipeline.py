"""Box mapping, transforms (ImageNet, WS-DAN and ASL presets), the counting loader and bad-input errors of tdam.data."""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tdam.data import (BadImageError, BadSample, CountingDataLoader, DatasetLayoutError, Geometry, build_dataset,
                       build_transform, collate_drop_bad, eval_geometry, map_boxes, shapes_root)
from tdam.data.transforms import CutoutPIL


# ----------------------------------------------------------------------------------------------- box mapping
def test_map_boxes_hand_computed_with_clipping():
    # 100 x 50 image, Resize(64) on the shorter side -> 128 x 64 (x2 scale on x, 1.28 on y), CenterCrop(64):
    # left = round((128 - 64) / 2) = 32, top = 0.
    boxes = torch.tensor([[10.0, 5.0, 60.0, 45.0],  # -> (12.8, 6.4, 76.8, 57.6) - 32 -> (-19.2, ...) clipped to 0
                          [0.0, 0.0, 20.0, 10.0],  # -> (-32, 0, -6.4, 12.8): entirely left of the crop
                          [70.0, 10.0, 95.0, 40.0]])  # -> (57.6, 12.8, 89.6, 51.2): x2 clipped to 63
    out, keep = map_boxes(boxes, (100, 50), 64, 64, return_keep=True)
    expect = torch.tensor([[0.0, 6.4, 44.8, 57.6], [0.0, 0.0, 0.0, 12.8], [57.6, 12.8, 63.0, 51.2]])
    assert torch.allclose(out, expect, atol=1e-4)
    assert keep.tolist() == [True, False, True]
    # squash resize (h, w) and no crop: plain per-axis scaling
    assert torch.allclose(map_boxes([[10, 5, 60, 45]], (100, 50), (20, 40)), torch.tensor([[4.0, 2.0, 24.0, 18.0]]))
    # portrait image, crop larger than the resized image on one axis -> torchvision pads (negative offset)
    out = map_boxes([[0, 0, 9, 19]], (10, 20), 8, (8, 12))  # 10x20 -> 8x16; crop 12 wide: pad (12-8)//2 = 2 left
    assert torch.allclose(out, torch.tensor([[2.0, 0.0, 9.2, 7.0]]), atol=1e-4)


def test_map_boxes_agrees_with_torchvision_pixels():
    """A white rectangle pushed through the real eval transform lands where map_boxes says (within a pixel)."""
    from torchvision import transforms as T

    img = Image.new("RGB", (90, 70))
    box = [50, 10, 80, 60]
    img.paste((255, 255, 255), (box[0], box[1], box[2] + 1, box[3] + 1))
    geo = eval_geometry(64)
    t = T.Compose([T.Resize(geo.resize), T.CenterCrop(geo.crop), T.ToTensor()])
    x = t(img)[0]
    ys, xs = torch.nonzero(x > 0.5, as_tuple=True)
    mapped = geo.map([box], img.size)[0]
    got = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.float32)
    assert torch.allclose(got, mapped, atol=1.5), (got, mapped)


def test_eval_geometry_presets_match_build_transform():
    assert eval_geometry(224) == Geometry(256, 224)
    assert eval_geometry(448) == Geometry(512, 448) and eval_geometry(112) == Geometry(128, 112)  # test-res
    assert eval_geometry(64) == Geometry(math.floor(64 / 0.875), 64)
    assert eval_geometry(448, preset="wsdan") == Geometry((512, 512), 448)
    assert eval_geometry(448, preset="asl") == Geometry((448, 448), None)
    for preset in ("imagenet", "wsdan", "asl"):
        for size in (64, 224):
            geo = eval_geometry(size, preset=preset)
            ops = [(type(t).__name__, t.size) for t in build_transform(False, size, preset=preset).transforms
                   if type(t).__name__ in ("Resize", "CenterCrop")]
            assert [name for name, _ in ops] == ["Resize", "CenterCrop"][:1 + (geo.crop is not None)]
            sizes = dict(ops)
            resize = sizes["Resize"]
            assert (resize if isinstance(resize, int) else tuple(resize)) == geo.resize
            assert sizes.get("CenterCrop") == (None if geo.crop is None else (geo.crop, geo.crop))
    with pytest.raises(ValueError, match="preset='timm' is not valid; valid choices are"):
        eval_geometry(224, preset="timm")


# ----------------------------------------------------------------------------------------------- transforms
def test_build_transform_outputs_and_validation():
    from torchvision import transforms as T

    img = Image.new("RGB", (80, 70), (200, 100, 50))
    for preset in ("imagenet", "wsdan", "asl"):
        for train in (True, False):
            x = build_transform(train, 64, preset=preset)(img)
            assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    val = build_transform("val", 224)
    names = [type(t).__name__ for t in val.transforms]
    assert names[:2] == ["Resize", "CenterCrop"] and val.transforms[0].size == 256
    assert val.transforms[0].interpolation == T.InterpolationMode.BILINEAR
    tr = build_transform(kind="train", img_size=224, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    names = [type(t).__name__ for t in tr.transforms]
    assert names[0] == "RandomResizedCropAndInterpolation" and "RandomHorizontalFlip" in names
    assert "RandAugment" in names and names[-1] == "RandomErasing" and "ColorJitter" not in names
    plain = [type(t).__name__ for t in build_transform(True, 224).transforms]
    assert "ColorJitter" not in plain and "RandAugment" not in plain and "RandomErasing" not in plain
    x = build_transform(False, 64, normalize=False)(Image.new("RGB", (70, 70), (255, 0, 0)))
    assert x.dtype == torch.float32 and torch.allclose(x[0], torch.ones(64, 64))
    with pytest.raises(ValueError, match=r"valid choices are \['imagenet', 'wsdan', 'asl'\]"):
        build_transform(True, preset="fancy")
    with pytest.raises(ValueError, match="train='training' is not valid; valid choices are"):
        build_transform("training")
    with pytest.raises(ValueError, match="interpolation='area' is not valid; valid choices are"):
        build_transform(True, interpolation="area")


def test_cutout_pil_rectangle():
    torch.manual_seed(0)
    img = Image.new("RGB", (40, 40), (0, 0, 0))
    out = torch.tensor(np.array(CutoutPIL(0.5)(img))).float()
    filled = (out != 0).any(-1)
    rows, cols = filled.any(1).nonzero().flatten(), filled.any(0).nonzero().flatten()
    # a 20 x 20 cutout: y_c +- 10 (inclusive corners), clipped to the image
    assert rows.numel() <= 21 and cols.numel() <= 21 and rows.numel() >= 11 and cols.numel() >= 11
    assert filled.sum() == rows.numel() * cols.numel()  # one axis-aligned rectangle
    assert img.getpixel((0, 0)) == (0, 0, 0)  # the input is not modified


def test_wsdan_and_asl_presets_shapes_and_normalisation():
    img = Image.new("RGB", (70, 50), (124, 116, 104))  # ~ the ImageNet mean colour
    for split in ("train", "val"):
        x = build_transform(split, 32, preset="wsdan")(img)
        assert x.shape == (3, 32, 32)
        assert build_transform(split, 32, preset="asl")(img).shape == (3, 32, 32)
    assert build_transform("val", 32, preset="wsdan")(img).abs().max() < 0.05
    with pytest.raises(ValueError, match="train='testing' is not valid"):
        build_transform("testing", 32, preset="wsdan")


# ----------------------------------------------------------------------------------------------- bad input
def test_missing_root_and_wrong_layout(tmp_path, fresh_shapes_tiny):
    with pytest.raises(DatasetLayoutError, match=r"(?s)does not exist: .*nowhere.*Expected layout.*train/<wnid>"):
        build_dataset("imagenet", tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError):  # DatasetLayoutError is both a FileNotFoundError and a ValueError
        build_dataset("cub200", tmp_path / "nowhere", "train")
    with pytest.raises(DatasetLayoutError, match="whole tdam-shapes folder.*imagenet"):
        build_dataset("imagenet", fresh_shapes_tiny, "train")
    # pointing at another dataset's folder
    with pytest.raises(ValueError, match=r"(?s)missing 'train/' folder: .*imagenet_v2.*Expected layout"):
        build_dataset("imagenet", fresh_shapes_tiny / "imagenet_v2", "train")
    flat = tmp_path / "flat"
    (flat / "val").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(flat / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetLayoutError, match="flat ILSVRC val"):
        build_dataset("imagenet", flat, "val")
    with pytest.raises(DatasetLayoutError, match=r"(?s)variant folder 'imagenetv2-top-images-format-val'"):
        build_dataset("imagenet_v2", fresh_shapes_tiny / "imagenet", "test", variant="top-images")


def test_missing_annotation_files(tmp_path, fresh_shapes_tiny):
    coco = tmp_path / "coco2014"
    shutil.copytree(fresh_shapes_tiny / "coco2014" / "annotations", coco / "annotations")
    (coco / "val2014").mkdir()
    (coco / "annotations" / "instances_val2014.json").unlink()
    with pytest.raises(DatasetLayoutError, match=r"(?s)missing annotation file .*instances_val2014.json.*Expected"):
        build_dataset("coco2014", coco, "val")
    cub = tmp_path / "CUB_200_2011"
    shutil.copytree(shapes_root(fresh_shapes_tiny, "cub200"), cub, ignore=shutil.ignore_patterns("*.jpg"))
    (cub / "bounding_boxes.txt").unlink()
    ds = build_dataset("cub200", cub, "test")  # boxes are optional until asked for
    with pytest.raises(DatasetLayoutError, match=r"(?s)missing 'bounding_boxes.txt': .*CUB_200_2011"):
        ds.boxes(0)
    (cub / "train_test_split.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"(?s)missing 'train_test_split.txt'.*image_class_labels.txt"):
        build_dataset("cub200", cub, "train")
    inet = tmp_path / "imagenet"
    shutil.copytree(fresh_shapes_tiny / "imagenet", inet)
    victim = sorted((inet / "val_boxes").iterdir())[0]
    victim.unlink()
    ds = build_dataset("imagenet", inet, "val")
    i = next(k for k, (p, _) in enumerate(ds.samples) if Path(p).stem == victim.stem)
    with pytest.raises(DatasetLayoutError, match=f"missing the ILSVRC box annotation: .*{victim.name}"):
        ds.boxes(i)


def test_corrupt_jpeg_raises_or_is_skipped_and_counted(tmp_path, fresh_shapes_tiny, caplog):
    root = tmp_path / "imagenet"
    shutil.copytree(fresh_shapes_tiny / "imagenet", root)
    ds = build_dataset("imagenet", root, "val", build_transform(False, 64))
    bad_path = ds.samples[3][0]
    data = Path(bad_path).read_bytes()
    Path(bad_path).write_bytes(data[: len(data) // 3])  # truncated JPEG
    with pytest.raises(BadImageError, match=f"cannot read image file {bad_path}"):
        ds[3]
    skip = build_dataset("imagenet", root, "val", build_transform(False, 64), on_bad_image="skip")
    sample = skip[3]
    assert isinstance(sample, BadSample) and not sample and sample.path == bad_path
    assert skip.bad_images == [bad_path]
    for workers in (0, 2):
        loader = CountingDataLoader(skip, batch_size=8, num_workers=workers, collate_fn=collate_drop_bad)
        with caplog.at_level(logging.WARNING, logger="tdam.data"):
            n = sum(len(y) for _, y in loader)
        assert n == len(skip) - 1 and loader.bad_images == [bad_path]
        assert "skipped 1 unreadable image(s) this epoch" in caplog.text and bad_path in caplog.text
        caplog.clear()
    with pytest.raises(ValueError, match="on_bad_image='ignore' is not valid; valid choices are"):
        build_dataset("imagenet", root, "val", on_bad_image="ignore")
    garbage = Path(ds.samples[5][0])
    garbage.write_bytes(b"not a jpeg at all")
    with pytest.raises(BadImageError, match=str(garbage)):
        ds[5]
