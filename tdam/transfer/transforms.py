"""Input pipelines of the two transfer frameworks (spec 06 §1.10 for WS-DAN, §2.2 for ASL).

Both end with ImageNet mean/std normalisation: our backbones were trained on normalised inputs. (ASL's TResNet takes
[0, 1] inputs; a timm/torchvision backbone needs its own normalisation, spec §2.2.)
"""
from __future__ import annotations

import torch
from PIL import Image, ImageDraw
from torchvision import transforms as T

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "CutoutPIL", "wsdan_transform", "asl_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SPLITS = ("train", "val")


def _check(split: str, img_size: int) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split={split!r} is not valid: valid choices are {list(_SPLITS)}")
    if not isinstance(img_size, int) or img_size < 8:
        raise ValueError(f"img_size={img_size!r}: expected an integer >= 8")


def wsdan_transform(split: str, img_size: int = 448) -> T.Compose:
    """WS-DAN (GuYuc ``utils.get_transform``): resize to (int(S/0.875), int(S/0.875)) ignoring aspect ratio, then
    train: RandomCrop S, flip 0.5, ColorJitter(brightness=0.126, saturation=0.5); val: CenterCrop S; normalise."""
    _check(split, img_size)
    resize = int(img_size / 0.875)
    head: list = [T.Resize((resize, resize))]
    if split == "train":
        head += [T.RandomCrop(img_size), T.RandomHorizontalFlip(0.5), T.ColorJitter(brightness=0.126, saturation=0.5)]
    else:
        head += [T.CenterCrop(img_size)]
    return T.Compose([*head, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class CutoutPIL:
    """ASL's CutoutPIL: one rectangle of int(f*size + 0.5) per side, centred at a uniform random pixel, clipped to the
    image, filled with a uniform random RGB colour (ImageDraw's inclusive corners). Draws from torch's RNG."""

    def __init__(self, cutout_factor: float = 0.5) -> None:
        if not 0.0 < cutout_factor <= 1.0:
            raise ValueError(f"cutout_factor must be in (0, 1], got {cutout_factor}")
        self.cutout_factor = cutout_factor

    def __call__(self, img: Image.Image) -> Image.Image:
        img = img.copy()
        w, h = img.size
        h_cut, w_cut = int(self.cutout_factor * h + 0.5), int(self.cutout_factor * w + 0.5)
        y_c, x_c = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y1, y2 = min(max(y_c - h_cut // 2, 0), h), min(max(y_c + h_cut // 2, 0), h)
        x1, x2 = min(max(x_c - w_cut // 2, 0), w), min(max(x_c + w_cut // 2, 0), w)
        fill = tuple(int(v) for v in torch.randint(0, 256, (3,)))
        ImageDraw.Draw(img).rectangle([x1, y1, x2, y2], fill=fill)
        return img

    def __repr__(self) -> str:
        return f"CutoutPIL(cutout_factor={self.cutout_factor})"


def asl_transform(split: str, img_size: int = 448) -> T.Compose:
    """ASL COCO: Resize((S, S)) (squish); train adds CutoutPIL(0.5) and RandAugment (torchvision's, 2 ops, magnitude
    9: the PyPI ``randaugment`` package of the original is not numpy>=1.24 compatible, spec §2.2); normalise."""
    _check(split, img_size)
    steps: list = [T.Resize((img_size, img_size))]
    if split == "train":
        steps += [CutoutPIL(0.5), T.RandAugment()]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
