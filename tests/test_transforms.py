"""tdam.train.build_transforms: the paper ResNet recipe's training transform is timm's with colour jitter 0.4 and
random bilinear/bicubic interpolation (the authors' script's defaults)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms as T

from tdam.train import build_transforms, load_config


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (180, 240, 3), dtype=np.uint8))


def _run(transform, img, seed):
    random.seed(seed)
    torch.manual_seed(seed)
    return transform(img)


def test_resnet_train_transform_equals_timms_with_the_scripts_defaults():
    train, _ = build_transforms(load_config("resnet50_td_joint_t2_m1"))
    jitter = [t for t in train.transforms if isinstance(t, T.ColorJitter)]
    assert len(jitter) == 1 and jitter[0].brightness == jitter[0].contrast == jitter[0].saturation == (0.6, 1.4)
    assert [m.value for m in train.transforms[0].interpolation] == ["bilinear", "bicubic"]
    reference = create_transform(224, is_training=True, color_jitter=0.4, interpolation="random")
    for seed in range(6):
        img = _image(seed)
        ours, theirs = _run(train, img, seed), _run(reference, img, seed)
        assert ours.shape == (3, 224, 224)
        assert torch.equal(ours, theirs)


def test_eval_transform_and_the_smoke_profile():
    _, val = build_transforms(load_config("resnet50_td_joint_t2_m1"))
    resize, crop = val.transforms[0], val.transforms[1]
    assert (resize.size, resize.interpolation.value, crop.size) == (256, "bilinear", (224, 224))
    train, _ = build_transforms(load_config("resnet50_td_joint_t2_m1", profile="smoke"))
    assert not any(isinstance(t, T.ColorJitter) for t in train.transforms)
    assert train.transforms[0].interpolation.value == "bilinear"


def test_random_interpolation_is_for_training_only():
    with pytest.raises(ValueError, match=r"interpolation='random' is not valid; valid choices are \['bilinear'"):
        load_config(None, interpolation="random")
    from tdam.data import build_transform

    with pytest.raises(ValueError, match="interpolation='random' is not valid"):
        build_transform("val", interpolation="random")
