"""Every reader on its generated tdam-shapes dataset: lengths, labels, boxes, class names as written.

Expectations are parsed independently here (directory walks, ElementTree, plain text splits, scipy.io.loadmat, json)
and also compared with the generator's manifest.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from PIL import Image
from scipy.io import loadmat

from tdam.data import (DatasetLayoutError, build_dataset, load_manifest, shapes_root)


@pytest.fixture(scope="module")
def manifest(fresh_shapes_tiny):
    return load_manifest(fresh_shapes_tiny)


def _xml_boxes(path: Path) -> tuple[tuple[int, int], list[tuple[str, list[float]]]]:
    root = ET.parse(path).getroot()
    size = (int(root.find("size/width").text), int(root.find("size/height").text))
    return size, [(o.find("name").text, [float(o.find(f"bndbox/{t}").text) for t in ("xmin", "ymin", "xmax", "ymax")])
                  for o in root.findall("object")]


def test_imagenet_train_matches_folders_and_manifest(fresh_shapes_tiny, manifest):
    root = fresh_shapes_tiny / "imagenet"
    ds = build_dataset("imagenet", root, "train")
    wnids = sorted(os.listdir(root / "train"))
    expected = [(str(root / "train" / w / f), wnids.index(w))
                for w in wnids for f in sorted(os.listdir(root / "train" / w))]
    assert ds.classes == wnids == manifest["imagenet"]["classes"] and len(wnids) == 12
    assert ds.samples == expected and ds.targets == [t for _, t in expected]
    man = {r["file"]: r["label"] for r in manifest["imagenet"]["splits"]["train"]}
    assert {Path(p).relative_to(root).as_posix(): t for p, t in ds.samples} == man
    assert all(Path(p).name.startswith(ds.classes[t] + "_") and p.endswith(".JPEG") for p, t in ds.samples)
    words = dict(line.split(" ", 1) for line in (root / "LOC_synset_mapping.txt").read_text().splitlines())
    assert ds.class_names == [words[w] for w in wnids] == manifest["imagenet"]["class_names"]
    img, target = ds[5]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and target == expected[5][1]
    assert not ds.has_boxes
    with pytest.raises(DatasetLayoutError, match="no bounding boxes|split 'val' only"):
        ds.boxes(0)


def test_imagenet_val_boxes_from_xml(fresh_shapes_tiny, manifest):
    root = fresh_shapes_tiny / "imagenet"
    ds = build_dataset("imagenet", root, "val")
    assert len(ds) == 12 * 4 and ds.has_boxes
    man = {r["file"]: r for r in manifest["imagenet"]["splits"]["val"]}
    for i, (path, label) in enumerate(ds.samples):
        rel = Path(path).relative_to(root).as_posix()
        assert Path(path).name.startswith("ILSVRC2012_val_") and man[rel]["label"] == label
        size, objs = _xml_boxes(root / "val_boxes" / (Path(path).stem + ".xml"))
        assert all(name == ds.classes[label] for name, _ in objs)  # ILSVRC: val objects are of the image's class
        assert ds.boxes(i).tolist() == [b for _, b in objs] == man[rel]["boxes"]
        assert ds.objects(i)[1].tolist() == [label] * len(objs)
        assert ds.image_size(i) == size == Image.open(path).size == (man[rel]["width"], man[rel]["height"])
        assert ds.all_objects(i) == man[rel]["objects"]
    assert build_dataset("imagenet", root, "test").samples == ds.samples  # 'test' = the held-out val set


@pytest.mark.parametrize("variant", ["matched-frequency", "threshold0.7", "top-images"])
def test_imagenet_v2_labels_are_int_folder_names(fresh_shapes_tiny, manifest, variant):
    from tdam.data import IMAGENET_V2_VARIANTS

    ds = build_dataset("imagenet_v2", fresh_shapes_tiny / "imagenet_v2", "test", variant=variant)
    folder = IMAGENET_V2_VARIANTS[variant]
    assert len(ds) == 12 * 2 and ds.classes == [str(i) for i in range(12)]
    for path, label in ds.samples:
        assert label == int(Path(path).parent.name) and path.endswith(".jpeg")
    man = {r["file"]: r["label"] for r in manifest["imagenet_v2"]["variants"][folder]}
    assert {f"{folder}/{Path(p).parent.name}/{Path(p).name}": t for p, t in ds.samples} == man


def test_imagenet_v2_folder_10_is_label_10_not_imagefolder_order(fresh_shapes_tiny):
    from torchvision.datasets import ImageFolder

    variant_dir = fresh_shapes_tiny / "imagenet_v2" / "imagenetv2-matched-frequency-format-val"
    assert sorted(os.listdir(variant_dir), key=int) == [str(i) for i in range(12)]
    ds = build_dataset("imagenet_v2", variant_dir, "val")  # root = a variant folder itself
    labels = {Path(p).parent.name: t for p, t in ds.samples}
    assert labels["10"] == 10 and labels["2"] == 2
    assert ImageFolder(str(variant_dir)).class_to_idx["2"] == 4  # the pitfall: '0','1','10','11','2'
    with pytest.raises(ValueError, match="variant='matched' is not valid; valid choices are"):
        build_dataset("imagenet_v2", fresh_shapes_tiny / "imagenet_v2", "test", variant="matched")


def test_imagenet_labels_agree_with_v2(fresh_shapes_tiny, manifest):
    """V2 folder k holds the class whose wnid is the k-th in sorted order (same generator class)."""
    side = json.loads((fresh_shapes_tiny / "imagenet" / "shapes_objects.json").read_text())
    assert {o[0]["label"] for o in side["splits"]["train"].values()} == set(range(12))
    for rec in manifest["imagenet_v2"]["variants"]["imagenetv2-top-images-format-val"]:
        assert rec["objects"][0]["label"] == rec["label"]


def test_cub200_matches_text_files(fresh_shapes_tiny, manifest):
    root = Path(shapes_root(fresh_shapes_tiny, "cub200"))

    def table(name):
        return {int(a): b for a, b in (line.split(" ", 1) for line in (root / name).read_text().splitlines())}

    images, labels, split = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    bbox = {k: [float(x) for x in v.split()] for k, v in table("bounding_boxes.txt").items()}
    classes = table("classes.txt")
    for name, flag in (("train", "1"), ("test", "0")):
        ds = build_dataset("cub200", root, name)
        ids = [i for i in sorted(images) if split[i] == flag]
        assert ds.classes == [classes[k] for k in sorted(classes)] == manifest["cub200"]["classes"]
        assert ds.samples == [(str(root / "images" / images[i]), int(labels[i]) - 1) for i in ids]
        man = manifest["cub200"]["splits"][name]
        assert [(f"images/{images[i]}", int(labels[i]) - 1) for i in ids] == [(r["file"], r["label"]) for r in man]
        for k, i in enumerate(ids):
            x, y, w, h = bbox[i]
            assert ds.boxes(k).tolist() == [[x, y, x + w, y + h]] == man[k]["boxes"]
            assert ds.image_size(k) == (man[k]["width"], man[k]["height"])
    assert len(build_dataset("cub200", root, "train")) == 10 * 4
    grey = [r for s in ("train", "test") for r in manifest["cub200"]["splits"][s] if r["grey"]]
    assert grey, "the generator writes some greyscale JPEGs, as CUB has"
    assert Image.open(root / grey[0]["file"]).mode == "L"
    ds = build_dataset("cub200", root.parent, "train")  # the parent of CUB_200_2011 works too
    gi = [k for k, (p, _) in enumerate(ds.samples) if Path(p).relative_to(ds.root).as_posix() in
          {r["file"] for r in grey}]
    if gi:
        assert ds[gi[0]][0].mode == "RGB"


def test_stanford_dogs_matches_mat_lists_and_xml(fresh_shapes_tiny, manifest):
    root = Path(shapes_root(fresh_shapes_tiny, "stanford_dogs"))
    folders = sorted(os.listdir(root / "Images"))
    n_multi = 0
    for name in ("train", "test"):
        mat = loadmat(root / f"{name}_list.mat")
        files = [str(e[0][0]) for e in mat["file_list"]]
        labels = [int(v) for v in mat["labels"].ravel()]
        ds = build_dataset("stanford_dogs", root, name)
        assert ds.classes == folders == manifest["stanford_dogs"]["classes"]
        assert ds.class_names == [f.split("-", 1)[1] for f in folders]
        assert ds.samples == [(str(root / "Images" / f), lab - 1) for f, lab in zip(files, labels)]
        assert all(folders[lab - 1] == f.split("/")[0] for f, lab in zip(files, labels))
        man = {r["file"]: r for r in manifest["stanford_dogs"]["splits"][name]}
        assert len(man) == len(ds)
        for i, f in enumerate(files):
            size, objs = _xml_boxes(root / "Annotation" / f[:-4])  # extension-less XML
            assert ds.boxes(i).tolist() == [b for _, b in objs] == man[f"Images/{f}"]["boxes"]
            assert ds.objects(i)[1].tolist() == [ds.targets[i]] * len(objs)
            assert ds.image_size(i) == size
            n_multi += len(objs) > 1
    assert len(build_dataset("stanford_dogs", root, "val")) == 8 * 3  # 'val' = the test list
    assert n_multi >= 1  # some images hold two dogs -> two <object>s


def test_coco_multi_hot_by_ascending_id(fresh_shapes_tiny, manifest):
    root = fresh_shapes_tiny / "coco2014"
    for split in ("train", "val"):
        js = json.loads((root / "annotations" / f"instances_{split}2014.json").read_text())
        ids = sorted(c["id"] for c in js["categories"])
        assert ids == [1, 3, 17, 44, 62, 90] and [c["id"] for c in js["categories"]] != ids  # JSON not in id order
        ds = build_dataset("coco2014", root, split)
        assert ds.category_ids == ids
        assert ds.classes == [next(c["name"] for c in js["categories"] if c["id"] == i) for i in ids]
        anns: dict[int, list] = {}
        for a in js["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        labelled = [im for im in js["images"] if im["id"] in anns]
        assert 0 < len(labelled) < len(js["images"])  # some images have no annotation and are left out
        assert len(ds) == len(labelled)
        for i, im in enumerate(labelled):
            expect = torch.zeros(6)
            for a in anns[im["id"]]:
                expect[ids.index(a["category_id"])] = 1.0
            assert ds.samples[i][0] == str(root / f"{split}2014" / im["file_name"])
            assert torch.equal(ds.targets[i], expect) and torch.equal(ds[i][1], expect)
            assert ds.boxes(i).tolist() == [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns[im["id"]])]
            assert ds.image_size(i) == (im["width"], im["height"])
        man = [r for r in manifest["coco2014"]["splits"][split] if r["category_ids"]]
        assert [r["boxes"] for r in man] == [ds.boxes(i).tolist() for i in range(len(ds))]
        full = build_dataset("coco2014", root, split, include_unlabeled=True)
        assert len(full) == len(js["images"]) and sum(float(t.sum()) == 0 for t in full.targets) == \
            len(js["images"]) - len(labelled)


def test_coco_ids_1_3_90_map_to_0_1_2(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    Image.new("RGB", (8, 6)).save(root / "val2014" / "COCO_val2014_000000000007.jpg")
    js = {"images": [{"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "width": 8, "height": 6}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 90, "bbox": [1, 1, 2, 2], "iscrowd": 0},
                          {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 3, 3], "iscrowd": 1}],
          "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]}
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(js))
    ds = build_dataset("coco2014", root, "val")
    assert ds.cat_to_label == {1: 0, 3: 1, 90: 2} and ds.classes == ["person", "car", "toothbrush"]
    assert ds[0][1].tolist() == [1.0, 0.0, 1.0]  # crowd annotations count, as pycocotools' getAnnIds
    assert ds.objects(0)[1].tolist() == [2, 0]


def test_build_dataset_rejects_bad_kind_and_split(fresh_shapes_tiny):
    choices = (r"valid choices are \['coco2014', 'cub200', 'imagenet', 'imagenet_parquet', 'imagenet_v2', "
               r"'imagenet_wds', 'stanford_dogs'\]")
    with pytest.raises(ValueError, match=choices):
        build_dataset("imagenet1k", fresh_shapes_tiny, "train")
    with pytest.raises(ValueError, match="split='validation' is not valid; valid choices are"):
        build_dataset("imagenet", fresh_shapes_tiny / "imagenet", "validation")
    with pytest.raises(ValueError, match="only for kind='imagenet_v2'"):
        build_dataset("imagenet", fresh_shapes_tiny / "imagenet", "val", variant="top-images")
