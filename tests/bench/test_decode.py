"""trainer.decode: the fast JPEG path against the plain decode it replaces.

The plain path (decode the whole image with PIL, then torchvision's crop and resize of the box
`decode.crop_box` draws) is the reference; the fast path (libjpeg-turbo, reduced-size decoding of
the crop's part, torch's uint8 resize) must give a (3, size, size) uint8 tensor, the same crop for
the same torch seed, and nearly the same pixels. `crop_box` itself must draw RandomResizedCrop's
distribution.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms import functional as F

from trainer import decode

skimage_data = pytest.importorskip("skimage.data")


# ---------------------------------------------------------------- reference: the plain path

def plain_train_crop(path, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=False) -> Image.Image:
    with Image.open(path) as img:
        img = img.convert("RGB")
    (top, left, h, w), flip = decode.crop_box(img.height, img.width, scale, ratio, hflip)
    out = F.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True)
    return F.hflip(out) if flip else out


def plain_eval_crop(path, resize, crop) -> Image.Image:
    with Image.open(path) as img:
        img = img.convert("RGB")
    return F.center_crop(F.resize(img, resize, InterpolationMode.BILINEAR, antialias=True), [crop, crop])


def hwc(img) -> np.ndarray:
    """A PIL image or a (3, H, W) tensor as an H x W x 3 float array."""
    if isinstance(img, torch.Tensor):
        return img.permute(1, 2, 0).numpy().astype(np.float64)
    return np.asarray(img, dtype=np.float64)


def is_rgb_uint8(out, size: int) -> bool:
    return isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and tuple(out.shape) == (3, size, size)


def psnr(a, b) -> float:
    x, y = hwc(a), hwc(b)
    mse = ((x - y) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def mean_abs_diff(a, b) -> float:
    return float(np.abs(hwc(a) - hwc(b)).mean())


# ---------------------------------------------------------------- images

@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """ImageNet-like photographs in the formats and modes ImageNet actually holds."""
    root = tmp_path_factory.mktemp("decode")
    astronaut = Image.fromarray(skimage_data.astronaut()).resize((500, 375), Image.Resampling.BICUBIC)
    coffee = Image.fromarray(skimage_data.coffee()).resize((375, 500), Image.Resampling.BICUBIC)
    big = Image.fromarray(skimage_data.hubble_deep_field())      # 1000x872: DCT reductions of 4 and 8
    paths = {}

    def save(name, img, **kw):
        paths[name] = str(root / name)
        img.save(paths[name], **kw)

    save("photo.jpg", astronaut, quality=90)
    save("portrait.jpg", coffee, quality=90)
    save("progressive.jpg", astronaut, quality=90, progressive=True)
    save("big.jpg", big, quality=90)
    save("gray.jpg", astronaut.convert("L"), quality=90)
    save("cmyk.jpg", astronaut.convert("CMYK"), quality=90)
    save("photo.png", astronaut)
    save("palette.png", astronaut.convert("P"))
    save("tiny.jpg", astronaut.resize((7, 5)), quality=90)
    save("png_named.jpg", astronaut, format="PNG")     # ImageNet has a PNG with a .JPEG name
    return paths


ALL = ["photo.jpg", "portrait.jpg", "progressive.jpg", "big.jpg", "gray.jpg", "cmyk.jpg", "photo.png",
       "palette.png", "tiny.jpg", "png_named.jpg"]


# ---------------------------------------------------------------- train crop

@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [32, 160, 224])
def test_train_crop_has_the_exact_size_and_is_rgb(images, name, size):
    for seed in range(5):
        torch.manual_seed(seed)
        out = decode.load_train_crop(images[name], size)
        assert is_rgb_uint8(out, size), (out.dtype, out.shape)


@pytest.mark.parametrize("name", ["photo.jpg", "portrait.jpg", "big.jpg", "gray.jpg", "cmyk.jpg", "progressive.jpg"])
def test_train_crop_matches_the_plain_decode_of_the_same_region(images, name):
    scores, exact = [], []
    for seed in range(60):      # enough crops for a steady median (20 gave 29.7-32 dB by the draw)
        for size in (64, 160):
            torch.manual_seed(seed)
            ref = plain_train_crop(images[name], size)
            torch.manual_seed(seed)
            ours = decode.load_train_crop(images[name], size)
            scores.append(psnr(ref, ours))
            # Which crops decoded at full size? Those must be the plain path's pixels up to rounding.
            torch.manual_seed(seed)
            with Image.open(images[name]) as img:
                (_, _, h, w), _ = decode.crop_box(img.height, img.width, (0.08, 1.0), (3 / 4, 4 / 3))
            if decode.draft_scale(w, h, size) == 1:
                exact.append(mean_abs_diff(ref, ours))
    # A reduced decode filters differently from PIL's bilinear (it is a little sharper), so a
    # crop may differ at edges; the same region and colours keep every crop above 22 dB.
    assert min(scores) > 22, scores
    assert np.median(scores) > 30, scores
    # Full-scale crops differ only by libjpeg-turbo's fast integer IDCT and chroma upsampling, and
    # rounding: about a grey level (up to ~1.8 where a ~130 px crop of fine detail is enlarged).
    assert exact and np.median(exact) < 1.2 and max(exact) < 2.0, exact


def test_the_same_seed_gives_the_same_crop_and_the_same_draws_as_the_plain_path(images):
    path = images["photo.jpg"]
    torch.manual_seed(123)
    a = decode.load_train_crop(path, 96, hflip=True).numpy()
    after_ours = torch.rand(4)
    torch.manual_seed(123)
    b = decode.load_train_crop(path, 96, hflip=True).numpy()
    torch.manual_seed(123)
    plain_train_crop(path, 96, hflip=True)
    after_plain = torch.rand(4)
    assert np.array_equal(a, b)
    # Same number of draws from torch's generator: what follows is the same, whichever path ran.
    assert torch.equal(after_ours, after_plain)
    torch.manual_seed(124)
    assert not np.array_equal(a, decode.load_train_crop(path, 96).numpy())


def test_hflip_mirrors_half_the_crops_and_nothing_else(images):
    """With `hflip` a crop is the same crop mirrored or not, about half of each."""
    path = images["portrait.jpg"]
    mirrored = 0
    for seed in range(40):
        torch.manual_seed(seed)
        plain = decode.load_train_crop(path, 64)
        torch.manual_seed(seed)
        maybe = decode.load_train_crop(path, 64, hflip=True)
        assert maybe.permute(1, 2, 0).is_contiguous()           # still pixel-interleaved
        if torch.equal(maybe, plain.flip(-1)) and not torch.equal(maybe, plain):
            mirrored += 1
        else:
            assert torch.equal(maybe, plain), seed
    assert 10 <= mirrored <= 30, mirrored


def test_mirroring_before_the_resize_gives_the_pixels_of_mirroring_after():
    """The decoder mirrors the region it decodes (rows written right to left, for free), not the
    resized crop; that gives the same crop because torch's antialiased uint8 kernel is symmetric."""
    g = torch.Generator().manual_seed(0)
    for h, w, size in [(37, 211, 160), (375, 500, 64), (130, 141, 160), (160, 160, 224), (401, 99, 96)]:
        x = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g)
        mirrored_first = decode.resize_hwc(x.flip(1).contiguous(), size, size)
        assert torch.equal(mirrored_first, decode.resize_hwc(x, size, size).flip(-1)), (h, w, size)
        assert mirrored_first.shape == (3, size, size) and mirrored_first.permute(1, 2, 0).is_contiguous()


@pytest.mark.parametrize("height,width,scale,ratio", [
    (375, 500, (0.08, 1.0), (3 / 4, 4 / 3)),      # ImageNet-like, the recipes' defaults
    (500, 375, (0.25, 1.0), (3 / 4, 4 / 3)),      # portrait, the recipes' crop scale
    (160, 213, (0.35, 1.0), (1.0, 1.0)),          # a square-only crop of a resize-short-160 file
    (100, 1000, (0.08, 1.0), (3 / 4, 4 / 3)),     # a panorama: many tries fail, some fall back
])
def test_crop_box_draws_random_resized_crops_distribution(height, width, scale, ratio):
    """Our one-call draw against torchvision's `RandomResizedCrop.get_params`: every box fits, and
    over 4,000 draws each the area fraction, aspect ratio, position and fallback rate agree."""
    n = 4000
    torch.manual_seed(0)
    ours = [decode.crop_box(height, width, scale, ratio)[0] for _ in range(n)]
    shape = torch.empty((3, height, width), device="meta")
    theirs = [tuple(RandomResizedCrop.get_params(shape, list(scale), list(ratio))) for _ in range(n)]
    for top, left, h, w in ours:
        assert 0 < h and 0 < w and 0 <= top <= height - h and 0 <= left <= width - w, (top, left, h, w)

    def stats(boxes):
        b = np.array(boxes, dtype=np.float64)
        top, left, h, w = b.T
        full = (h == height) & (w == width) | (top == (height - h) // 2) & (left == (width - w) // 2) & (
            (h == height) | (w == width))
        return {
            "area": (h * w / (height * width)).mean(),
            "log aspect": np.log(w / h).mean(),
            "log aspect spread": np.log(w / h).std(),
            "centre x": ((left + w / 2) / width).mean(),
            "centre y": ((top + h / 2) / height).mean(),
            "fallback": full.mean(),
        }

    a, b = stats(ours), stats(theirs)
    for key in a:
        assert abs(a[key] - b[key]) < 0.03, (key, a[key], b[key])


def test_crop_box_falls_back_to_torchvisions_centre_crop():
    """An image no try fits (a 1-pixel-high strip) gets the centre crop torchvision would give."""
    shape = torch.empty((3, 1, 400), device="meta")
    box, flip = decode.crop_box(1, 400, (0.9, 1.0), (3 / 4, 4 / 3))
    assert box == tuple(RandomResizedCrop.get_params(shape, [0.9, 1.0], [3 / 4, 4 / 3])) and not flip
    for h, w in [(300, 300), (10, 5), (5, 10)]:
        shape = torch.empty((3, h, w), device="meta")
        assert decode.crop_box(h, w, (2.0, 3.0), (3 / 4, 4 / 3))[0] == tuple(
            RandomResizedCrop.get_params(shape, [2.0, 3.0], [3 / 4, 4 / 3]))


def test_a_worker_generator_makes_crops_reproducible(images):
    """DataLoader seeds each worker's torch generator; the crop depends on nothing else."""
    path = images["big.jpg"]

    def crops(seed):
        torch.manual_seed(seed)
        return [decode.load_train_crop(path, 64, (0.25, 1.0)).numpy() for _ in range(4)]

    assert all(np.array_equal(x, y) for x, y in zip(crops(7), crops(7)))


def test_reduced_decoding_keeps_at_least_the_output_resolution():
    for box_w, box_h, size in [(500, 375, 160), (330, 321, 160), (319, 400, 160), (1000, 900, 112), (50, 40, 160)]:
        s = decode.draft_scale(box_w, box_h, size)
        assert s in (1, 2, 4, 8)
        assert s == 1 or min(box_w, box_h) / s >= size
        assert s == 8 or min(box_w, box_h) / (2 * s) < size   # and it is the largest such reduction


def test_a_large_crop_is_decoded_reduced(images, monkeypatch):
    """The point of the module: a crop several times the output asks libjpeg-turbo for a reduced
    decode, and what comes back is the reduced image (1000x872 at 1/8 scale is 125x109)."""
    import simplejpeg

    shapes, denoms = [], []
    original = simplejpeg.decode_jpeg

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        shapes.append(out.shape[:2])
        return out

    native = decode._jpegcrop

    class NativeSpy:
        @staticmethod
        def decode_crop(data, out, denom, *box):
            denoms.append(denom)
            return native.decode_crop(data, out, denom, *box)

    monkeypatch.setattr(decode.simplejpeg, "decode_jpeg", spy)
    if decode._jpegcrop is not None:
        monkeypatch.setattr(decode, "_jpegcrop", NativeSpy)
    torch.manual_seed(0)
    out = decode.load_train_crop(images["big.jpg"], 64, scale=(0.9, 1.0))
    assert is_rgb_uint8(out, 64)
    if denoms:      # the partial decoder asked for 1/4 or 1/8 scale
        assert denoms[0] >= 4, denoms
    else:           # the whole-image decoder returned the reduced image
        assert shapes and shapes[0][1] <= 1000 // 4, shapes


def test_a_jpeg_the_fast_decoder_rejects_takes_the_plain_path_with_the_same_crop(images, monkeypatch):
    """A file libjpeg-turbo's binding refuses is decoded by PIL, from the crop box already drawn:
    which decoder ran never changes the crop, nor the draws that follow (the flip)."""
    def refuse(*args, **kwargs):
        raise ValueError("simulated: unsupported JPEG")

    torch.manual_seed(5)
    ref = plain_train_crop(images["photo.jpg"], 96, hflip=True)
    after_plain = torch.rand(2)
    monkeypatch.setattr(decode.simplejpeg, "decode_jpeg", refuse)
    monkeypatch.setattr(decode, "_jpegcrop", type("Refusing", (), {"decode_crop": staticmethod(refuse)}))
    torch.manual_seed(5)
    ours = decode.load_train_crop(images["photo.jpg"], 96, hflip=True)
    assert torch.equal(torch.rand(2), after_plain)
    assert mean_abs_diff(ref, ours) == 0.0


# ---------------------------------------------------------------- eval crop

@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("resize,crop", [(256, 224), (183, 160), (160, 160), (64, 96)])
def test_eval_crop_has_the_exact_size(images, name, resize, crop):
    out = decode.load_eval_crop(images[name], resize, crop)
    assert is_rgb_uint8(out, crop), (out.dtype, out.shape)


@pytest.mark.parametrize("name", ["photo.jpg", "portrait.jpg", "gray.jpg", "cmyk.jpg"])
@pytest.mark.parametrize("resize,crop", [(256, 224), (183, 160), (292, 256)])
def test_eval_crop_equals_the_plain_path_on_imagenet_sized_images(images, name, resize, crop):
    """Validation images (~500x375) are never reduced: the reported top-1 uses the standard pixels."""
    ref, ours = plain_eval_crop(images[name], resize, crop), decode.load_eval_crop(images[name], resize, crop)
    assert mean_abs_diff(ref, ours) < 0.5


def test_eval_crop_of_a_large_image_is_close_to_the_plain_path(images):
    ref, ours = plain_eval_crop(images["big.jpg"], 146, 128), decode.load_eval_crop(images["big.jpg"], 146, 128)
    assert psnr(ref, ours) > 30


def test_eval_crop_larger_than_the_resized_image_is_padded_like_the_plain_path(images):
    ref, ours = plain_eval_crop(images["photo.jpg"], 64, 96), decode.load_eval_crop(images["photo.jpg"], 64, 96)
    assert is_rgb_uint8(ours, 96)
    assert psnr(ref, ours) > 30
