"""Decoding one image into one training or evaluation crop.

This is the only place the input pipeline touches image bytes, so the datasets never change when
the decoder gets faster. Both functions return an RGB PIL image of exactly the requested size.

Why the JPEG path is fast (bench/data_pipeline.py measures it against ImageFolder + PIL):
- The crop box is sampled from the header size (no pixels decoded), with torch's generator, so
  DataLoader worker seeding keeps it reproducible and the draws are the same as the plain path's.
- libjpeg can decode at 1/2, 1/4 or 1/8 scale in the DCT domain (`Image.draft`), which skips most
  of the inverse DCT, upsampling and colour conversion. We pick the largest reduction that still
  leaves the crop at least `size` pixels on each side, so no output pixel is upsampled that the
  plain path would not upsample.
- Only the crop region is converted to a tensor, and the antialiased bilinear resize runs in
  torch's vectorised uint8 kernel (made to match PIL's output), in under half the time of PIL's
  resize of the same region, conversions included.
Anything that is not a JPEG (PNG, WebP, ...) takes the plain path.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2

Box = tuple[float, float, float, float]   # left, top, right, bottom in pixels of the full-size image

DCT_SCALES = (8, 4, 2, 1)                 # the reductions libjpeg does in the DCT domain (Pillow exposes these)


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
        # Only the header has been read: img.size is known, no pixel is decoded yet.
        top, left, h, w = RandomResizedCrop.get_params(img, list(scale), list(ratio))
        if img.format == "JPEG":
            return _jpeg_crop(img, (left, top, left + w, top + h), size)
        img = img.convert("RGB")
    return F.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True)


def load_eval_crop(path: str | Path, resize: int, crop: int) -> Image.Image:
    """Resize the short side to `resize`, then take the centre `crop` x `crop`."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            return _jpeg_resize_center_crop(img, resize, crop)
        img = img.convert("RGB")
    img = F.resize(img, resize, InterpolationMode.BILINEAR, antialias=True)
    return F.center_crop(img, [crop, crop])


def draft_scale(box_width: float, box_height: float, size: int) -> int:
    """The largest DCT reduction (8, 4, 2 or 1) that keeps the box at least `size` px on each side."""
    room = min(box_width, box_height) / size
    return next(s for s in DCT_SCALES if s <= room) if room >= 1 else 1


def _jpeg_crop(img: Image.Image, box: Box, size: int) -> Image.Image:
    """Decode `img` (an opened JPEG) reduced as far as `box` allows, crop, resize to `size` x `size`."""
    full_w, full_h = img.size
    s = draft_scale(box[2] - box[0], box[3] - box[1], size)
    if s > 1:
        # Pillow picks min(W // w, H // h) rounded down to 8/4/2/1; asking for W//s x H//s yields s.
        img.draft("RGB", (full_w // s, full_h // s))
    small_w, small_h = img.size   # ceil(W / s) x ceil(H / s) after the draft
    sx, sy = small_w / full_w, small_h / full_h
    # Round outwards: the region never shrinks below `size`, and shifts by under one reduced pixel.
    region = img.crop((
        math.floor(box[0] * sx), math.floor(box[1] * sy),
        min(small_w, math.ceil(box[2] * sx)), min(small_h, math.ceil(box[3] * sy)),
    ))
    if region.mode != "RGB":   # grayscale and CMYK JPEGs: convert only the cropped pixels
        region = region.convert("RGB")
    return _resize_uint8(region, size)


def _resize_uint8(region: Image.Image, size: int) -> Image.Image:
    """Antialiased bilinear resize to `size` x `size` in torch's uint8 kernel (PIL-compatible)."""
    hwc = torch.from_numpy(np.array(region))           # a writable copy of the crop only
    out = F2.resize(hwc.permute(2, 0, 1), [size, size], InterpolationMode.BILINEAR, antialias=True)
    return Image.fromarray(out.permute(1, 2, 0).contiguous().numpy(), "RGB")


def _jpeg_resize_center_crop(img: Image.Image, resize: int, crop: int) -> Image.Image:
    """`load_eval_crop` for an opened JPEG: reduced decode, then torchvision's resize and centre crop.

    The whole (reduced) image is resized, not just the crop, so the pixel grid is exactly the plain
    path's; evaluation is a small share of the time, and its figures should not move.
    """
    full_w, full_h = img.size
    # Evaluation is a small share of an epoch's decoding, and its top-1 is the figure users report,
    # so it reduces only while the bilinear resize still downscales at least 2x afterwards: images
    # up to twice the resize (all of ImageNet val at 256) decode exactly as the plain path does.
    s = draft_scale(full_w, full_h, 2 * resize)
    if s > 1:
        img.draft("RGB", (full_w // s, full_h // s))
    if img.mode != "RGB":
        img = img.convert("RGB")
    chw = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    # The output size depends on the full-size image, as in the plain path (not on the reduced one).
    out_h, out_w = _resized_size(full_w, full_h, resize)
    chw = F2.resize(chw, [out_h, out_w], InterpolationMode.BILINEAR, antialias=True)
    chw = F2.center_crop(chw, [crop, crop])
    return Image.fromarray(chw.permute(1, 2, 0).contiguous().numpy(), "RGB")


def _resized_size(w: int, h: int, resize: int) -> tuple[int, int]:
    """torchvision's rule (height, width): the short side becomes `resize`, the long one is truncated."""
    if w <= h:
        return int(resize * h / w), resize
    return resize, int(resize * w / h)
