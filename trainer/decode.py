"""Decoding one image into one training or evaluation crop, as a uint8 tensor.

This is the only place the input pipeline touches image bytes, so the datasets never change when
the decoder gets faster. Its three loaders (the random-resized crop, CIFAR's pad-and-crop, the
eval crop) return a (3, size, size) uint8 RGB tensor whose memory is pixel-interleaved (H x W x 3,
what decoders write; `data.collate_skipping_bad` stacks these into channels_last batches); the
float conversion and normalisation run on the training device (`trainer.engine.to_device`), so a
worker hands over a quarter of the bytes and does no float work.

Why the JPEG path is fast (bench/data_pipeline.py measures it against ImageFolder + PIL):
- The crop box and the flip are drawn from the header size (no pixels decoded), with one call to
  torch's generator, so DataLoader worker seeding keeps them reproducible and whichever decoder
  runs, a file gets the same crop.
- The decoder is libjpeg-turbo, with its fast integer inverse DCT and chroma upsampling
  (TJFLAG_FASTDCT | TJFLAG_FASTUPSAMPLE; FFCV decodes with the first): differences from Pillow's
  decode of a grey level or two, which the resize then averages away.
- libjpeg-turbo can also decode at 1/2, 1/4 or 1/8 scale in the DCT domain, skipping most of the
  inverse DCT, upsampling and colour conversion. We pick the largest reduction that still leaves
  the crop at least `size` pixels on each side, so no output pixel is upsampled that the plain
  path would not upsample. (The other M/8 scales exist but run without SIMD: 7/8 measured 2.5x
  slower than a full-size decode, so they are never asked for.)
- Only the crop's part of the image is decoded, by trainer/_jpegcrop.c (libjpeg's
  jpeg_crop_scanline and jpeg_skip_scanlines; decoding stops after the crop's last row). Where
  that small extension was not built, simplejpeg (a maintained binding whose wheels bundle
  libjpeg-turbo) decodes the whole image and the crop is cut from it: the same pixels, 1.1-1.3x slower.
- Only the crop region is resized, in torch's vectorised uint8 kernel for channels_last images
  (made to match PIL's antialiased bilinear), called without torchvision's per-call checks.
Anything libjpeg-turbo cannot decode (PNG, a corrupt header, an exotic JPEG) takes the plain PIL
path, with the crop box already drawn, so a file's crop never depends on which decoder ran.
16-bit greyscale images (PNG, TIFF: medical and scientific data) are scaled to 8 bits there first
(`to_rgb`): PIL's own conversion clips them, and every pixel above 255 of 65535 comes out white.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2

from trainer.pixels import to_rgb

try:  # a hard dependency of the `trainer` extra; without it (an odd platform) PIL decodes everything
    import simplejpeg
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    simplejpeg = None
try:  # built from trainer/_jpegcrop.c when libjpeg's headers and a C compiler were there at install
    from trainer import _jpegcrop
except ImportError:
    _jpegcrop = None

Box = tuple[int, int, int, int]   # top, left, height, width in pixels of the full-size image

CROP_TRIES = 10                           # RandomResizedCrop's tries before its centre-crop fallback
DCT_SCALES = (8, 4, 2, 1)                 # the reductions libjpeg-turbo does with SIMD (and Pillow's draft offers)
JPEG_MAGIC = b"\xff\xd8\xff"


def load_train_crop(
    path: str | Path,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = False,
) -> torch.Tensor:
    """Random-resized crop of `path` at `size` x `size` (the standard ImageNet train crop), mirrored
    left to right half the time when `hflip`.

    Randomness comes from torch's generator, so DataLoader worker seeding makes it reproducible.
    """
    with open(path, "rb") as f:
        data = f.read()
    box = None
    if simplejpeg is not None and data[:3] == JPEG_MAGIC:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            pass                                     # PIL decides below (and names the problem)
        else:
            box, flip = crop_box(height, width, scale, ratio, hflip)
            try:
                return _jpeg_crop(data, height, width, box, size, flip)
            except ValueError:
                pass                                 # same box, plain decoder
    with Image.open(io.BytesIO(data)) as img:
        img = to_rgb(img)
    if box is None:
        box, flip = crop_box(img.height, img.width, scale, ratio, hflip)
    top, left, h, w = box
    out = F.pil_to_tensor(F.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BILINEAR,
                                         antialias=True))
    return out.flip(-1) if flip else out


def load_eval_crop(path: str | Path, resize: int, crop: int) -> torch.Tensor:
    """Resize the short side to `resize`, then take the centre `crop` x `crop`."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            return _jpeg_resize_center_crop(img, resize, crop)
        img = to_rgb(img)
    img = F.resize(img, resize, InterpolationMode.BILINEAR, antialias=True)
    return F.pil_to_tensor(F.center_crop(img, [crop, crop]))


def load_pad_crop(path: str | Path, size: int, pad: int, hflip: bool = False) -> torch.Tensor:
    """The CIFAR training crop: torchvision's `RandomCrop(size, padding=pad)` (zero padding), then
    a mirror half the time when `hflip`. An image of another size is first resized (short side)
    and centre-cropped to `size`, as `load_eval_crop` does, so progressive resizing works too.

    Small images (32-64 px), so the whole file is decoded: PIL, which also reads the PNGs that
    `trainer prepare cifar100` writes. Randomness: one call to torch's generator, as `crop_box`.
    """
    with Image.open(path) as img:
        hwc = torch.from_numpy(np.array(to_rgb(img))) if img.size == (size, size) else None
    if hwc is None:
        hwc = load_eval_crop(path, size, size).permute(1, 2, 0)
    u = torch.rand(3, dtype=torch.float64).tolist()
    # The window's offset from the image, -pad..pad each way, uniform as RandomCrop's randint.
    dy, dx = int(u[0] * (2 * pad + 1)) - pad, int(u[1] * (2 * pad + 1)) - pad
    return pad_crop(hwc, dy, dx, hflip and u[2] < 0.5)


def pad_crop(hwc: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """Output pixel (r, c) is input pixel (r + dy, c + dx), zero outside the image; mirrored if
    `flip`. (H, W, 3) in, a (3, H, W) view of pixel-interleaved memory out (what every path returns)."""
    height, width, _ = hwc.shape
    out = torch.zeros_like(hwc)
    rows, cols = height - abs(dy), width - abs(dx)
    if rows > 0 and cols > 0:
        out[max(0, -dy):max(0, -dy) + rows, max(0, -dx):max(0, -dx) + cols] = \
            hwc[max(0, dy):max(0, dy) + rows, max(0, dx):max(0, dx) + cols]
    return (out.flip(1) if flip else out).permute(2, 0, 1)


def crop_box(height: int, width: int, scale, ratio, hflip: bool = False) -> tuple[Box, bool]:
    """A RandomResizedCrop box for an image of this size (no pixels needed), and whether to mirror it.

    torchvision's algorithm (`RandomResizedCrop.get_params`): up to ten tries of an area drawn
    uniformly from `scale` of the image's and an aspect ratio log-uniform in `ratio`, the first that
    fits placed uniformly; else the largest centre crop within `ratio`. The same distribution, but
    all the numbers come from one call to torch's generator and the arithmetic is Python's:
    torchvision's draw makes ~12 small tensors per image, ~90 us of a ~500 us load of a 160 px
    file (bench/data_pipeline.py measures the whole worker).
    """
    u = torch.rand(4 * CROP_TRIES + 1, dtype=torch.float64).tolist()
    flip = hflip and u[-1] < 0.5
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for k in range(0, 4 * CROP_TRIES, 4):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[k])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[k + 1])
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            # u * n is below n (u < 1, and n is far below 2**53): uniform over 0..n-1, like randint.
            return (int(u[k + 2] * (height - h + 1)), int(u[k + 3] * (width - w + 1)), h, w), flip
    in_ratio = width / height                      # torchvision's fallback: a centre crop
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return ((height - h) // 2, (width - w) // 2, h, w), flip


def _jpeg_crop(data: bytes, full_h: int, full_w: int, box: Box, size: int, flip: bool) -> torch.Tensor:
    """Decode reduced as far as the box allows, cut the box out, mirror it if `flip`, resize to
    `size` x `size`. (Mirroring before the resize gives the pixels of mirroring after it: torch's
    antialiased kernel is symmetric, which tests/bench/test_decode.py checks.)"""
    top, left, h, w = box
    s = draft_scale(w, h, size)
    small_h, small_w = -(-full_h // s), -(-full_w // s)   # libjpeg-turbo's 1/s scale: ceil(H / s) x ceil(W / s)
    sx, sy = small_w / full_w, small_h / full_h
    # Round outwards: the region never shrinks below `size`, and shifts by under one reduced pixel.
    y0, y1 = math.floor(top * sy), min(small_h, math.ceil((top + h) * sy))
    x0, x1 = math.floor(left * sx), min(small_w, math.ceil((left + w) * sx))
    if _jpegcrop is not None:
        # Only the box: the rows below it are never decoded, the columns beside it never
        # transformed (trainer/_jpegcrop.c); the same pixels as the whole-image path below.
        buffer = bytearray((y1 - y0) * (x1 - x0) * 3)
        _jpegcrop.decode_crop(data, buffer, s, x0, y0, x1 - x0, y1 - y0, flip)
        region = torch.frombuffer(buffer, dtype=torch.uint8).view(y1 - y0, x1 - x0, 3)
    else:
        # simplejpeg picks the smallest libjpeg-turbo scale whose output is at least this big: 1/s.
        hwc = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True,
                                     min_width=small_w, min_height=small_h)
        region = torch.from_numpy(np.ascontiguousarray(hwc[y0:y1, x0:x1]))
        region = region.flip(1) if flip else region
    return resize_hwc(region, size, size)


def resize_hwc(region: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Antialiased bilinear resize of a compact (H, W, 3) uint8 image to a (3, out_h, out_w) one.

    What torchvision's `v2.functional.resize` does for a uint8 channels_last image, called
    directly: torch's vectorised uint8 kernel (a strided view would take a slower path, then a
    transpose), with torchvision's restriding so the output is allocated channels_last too (that
    wrapper's checks cost about as much as the kernel on a 160 px crop). The output keeps the
    pixel-interleaved (H x W x 3) layout, which the collate stacks with one copy.
    """
    height, width, _ = region.shape
    x = region.as_strided((1, 3, height, width), (height * width * 3, 1, width * 3, 3))
    return torch.nn.functional.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False,
                                           antialias=True)[0]


def jpeg_decoder() -> str:
    """How training crops are decoded here, for the run's log."""
    if simplejpeg is None:
        return "by Pillow, whole images (simplejpeg is missing: pip install simplejpeg)"
    if _jpegcrop is None:
        return ("whole images by simplejpeg (trainer._jpegcrop is not built; with libjpeg's headers and a C "
                "compiler, e.g. apt-get install libjpeg-dev gcc, reinstalling the project builds it: 1.1-1.3x faster loading)")
    return "only the crop's part by libjpeg-turbo (trainer._jpegcrop)"


def draft_scale(box_width: float, box_height: float, size: int) -> int:
    """The largest DCT reduction (8, 4, 2 or 1) that keeps the box at least `size` px on each side."""
    room = min(box_width, box_height) / size
    return next(s for s in DCT_SCALES if s <= room) if room >= 1 else 1


def _jpeg_resize_center_crop(img: Image.Image, resize: int, crop: int) -> torch.Tensor:
    """`load_eval_crop` for an opened JPEG: reduced decode, then the resize and torchvision's centre crop.

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
    # The output size depends on the full-size image, as in the plain path (not on the reduced one).
    chw = resize_hwc(torch.from_numpy(np.array(img)), *_resized_size(full_w, full_h, resize))
    return hwc_layout(F2.center_crop(chw, [crop, crop]))


def hwc_layout(chw: torch.Tensor) -> torch.Tensor:
    """A compact copy of a (3, H, W) view whose memory is H x W x 3 (what every path returns)."""
    return chw.permute(1, 2, 0).contiguous().permute(2, 0, 1)


def _resized_size(w: int, h: int, resize: int) -> tuple[int, int]:
    """torchvision's rule (height, width): the short side becomes `resize`, the long one is truncated."""
    if w <= h:
        return int(resize * h / w), resize
    return resize, int(resize * w / h)
