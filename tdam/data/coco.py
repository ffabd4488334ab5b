"""MS-COCO 2014 multi-label reader (the ASL transfer experiment's dataset).

Targets are float multi-hot vectors over the JSON's categories mapped by ASCENDING category id (ASL's ``cat2cat``;
80 entries for real COCO, never ``id - 1``). Following the multi-label benchmark convention (pycocotools' imgToAnns),
images without any annotation are left out unless ``include_unlabeled=True``. All annotations count, crowd ones too.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from .base import ImageDataset, boxes_tensor
from .errors import DatasetLayoutError, layout_error

__all__ = ["COCO2014Dataset"]

_COCO_LAYOUT = """\
<root>/annotations/instances_train2014.json
<root>/annotations/instances_val2014.json
<root>/train2014/COCO_train2014_XXXXXXXXXXXX.jpg
<root>/val2014/COCO_val2014_XXXXXXXXXXXX.jpg"""


class COCO2014Dataset(ImageDataset):
    """COCO-2014 instances as a multi-label dataset. ``split`` in {'train', 'val'} ('test' = 'val').
    ``classes`` = category names by ascending id, ``category_ids`` the ids, ``cat_to_label`` the id -> index map."""

    kind = "coco2014"
    layout = _COCO_LAYOUT

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 on_bad_image: str = "raise", include_unlabeled: bool = False,
                 target_transform: Callable | None = None) -> None:
        split = self._split(split, {"train": "train", "val": "val", "test": "val"}, self.kind)
        super().__init__(root, split, transform, on_bad_image=on_bad_image, target_transform=target_transform)
        self._check_root()
        ann_path = self._require(self.root / "annotations" / f"instances_{split}2014.json",
                                 f"annotation file 'annotations/instances_{split}2014.json'")
        img_dir = self._require(self.root / f"{split}2014", f"image folder '{split}2014/'", is_dir=True)
        try:
            data = json.loads(ann_path.read_text())
            cats = sorted(data["categories"], key=lambda c: int(c["id"]))
            images, anns = data["images"], data["annotations"]
        except (ValueError, KeyError, TypeError) as e:
            raise layout_error(self.kind, ann_path, f"malformed instances JSON ({type(e).__name__}: {e}); need "
                               "'images', 'annotations', 'categories' in", self.layout) from e
        self.category_ids = [int(c["id"]) for c in cats]
        self.classes = [str(c["name"]) for c in cats]
        self.cat_to_label = {cid: k for k, cid in enumerate(self.category_ids)}
        per_image: dict[int, list[tuple[int, list[float]]]] = {}
        for n, a in enumerate(anns):
            with self._record(ann_path, "annotations", n, a, "'image_id', 'category_id', 'bbox' [x, y, w, h]"):
                cid = int(a["category_id"])
                if cid not in self.cat_to_label:
                    raise layout_error(self.kind, ann_path, f"annotation {a.get('id')} has category_id {cid} not in "
                                       "'categories' of", self.layout)
                bbox = [float(v) for v in a["bbox"]]
                if len(bbox) != 4:
                    raise ValueError(f"'bbox' has {len(bbox)} numbers, expected 4")
                per_image.setdefault(int(a["image_id"]), []).append((self.cat_to_label[cid], bbox))
        k = len(self.classes)
        self.image_ids: list[int] = []
        self._anns: list[list[tuple[int, list[float]]]] = []
        self._sizes: list[tuple[int, int]] = []
        for n, im in enumerate(images):
            with self._record(ann_path, "images", n, im, "'id', 'file_name', 'width', 'height'"):
                iid = int(im["id"])
                objs = per_image.get(iid, [])
                if not objs and not include_unlabeled:
                    continue
                target = torch.zeros(k, dtype=torch.float32)
                if objs:
                    target[torch.tensor(sorted({c for c, _ in objs}))] = 1.0
                sample = (str(img_dir / im["file_name"]), target)
                size = (int(im["width"]), int(im["height"]))
            self.samples.append(sample)
            self.image_ids.append(iid)
            self._anns.append(objs)
            self._sizes.append(size)

    @contextmanager
    def _record(self, path, section: str, index: int, record, needs: str) -> Iterator[None]:
        """A malformed entry of the instances JSON -> DatasetLayoutError naming the file, the section, the entry's
        index and id, and the missing or wrong field."""
        try:
            yield
        except DatasetLayoutError:
            raise
        except KeyError as e:
            rid = record.get("id") if isinstance(record, dict) else None
            raise layout_error(self.kind, path, f"{section}[{index}] (id {rid}) has no {e.args[0]!r} field (each "
                               f"entry needs {needs}) in", self.layout) from None
        except (ValueError, TypeError, AttributeError) as e:
            rid = record.get("id") if isinstance(record, dict) else None
            raise layout_error(self.kind, path, f"{section}[{index}] (id {rid}) is malformed ({type(e).__name__}: "
                               f"{e}; each entry needs {needs}) in", self.layout) from None

    @property
    def has_boxes(self) -> bool:
        return True

    def objects(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        objs = self._anns[i]
        boxes = boxes_tensor([[x, y, x + w, y + h] for _, (x, y, w, h) in objs])
        return boxes, torch.tensor([c for c, _ in objs], dtype=torch.long)

    def image_size(self, i: int) -> tuple[int, int]:
        return self._sizes[i]
