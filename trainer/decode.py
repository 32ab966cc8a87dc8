"""Decoding one image into one training or evaluation crop.

This is the only place the input pipeline touches image bytes, so a faster decoder (for example
JPEG reduced-size "draft" decoding) can replace the plain one without changing the datasets.
Both functions return an RGB PIL image of exactly the requested size.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F
from torchvision.transforms import RandomResizedCrop


def load_train_crop(
    path: str | Path,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Image.Image:
    """Random-resized crop of `path` at `size` x `size` (the standard ImageNet train crop).

    Randomness comes from torch's generator, so DataLoader worker seeding makes it reproducible.
    """
    with Image.open(path) as img:
        img = img.convert("RGB")
    top, left, h, w = RandomResizedCrop.get_params(img, list(scale), list(ratio))
    return F.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True)


def load_eval_crop(path: str | Path, resize: int, crop: int) -> Image.Image:
    """Resize the short side to `resize`, then take the centre `crop` x `crop`."""
    with Image.open(path) as img:
        img = img.convert("RGB")
    img = F.resize(img, resize, InterpolationMode.BILINEAR, antialias=True)
    return F.center_crop(img, [crop, crop])
