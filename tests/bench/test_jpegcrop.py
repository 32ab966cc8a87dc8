"""trainer._jpegcrop: the partial JPEG decoder (trainer/_jpegcrop.c) against the whole-image one.

It must give exactly the pixels simplejpeg gives for the same scale and box (so which decoder
ran never changes a training crop), refuse what it cannot decode with a ValueError (the loader
then takes the PIL path or skips the file), and be built wherever the project's set-up ran
(`make test` installs libjpeg's headers and a compiler; under CI=true a missing build fails).
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

from tests.conftest import require
from trainer import decode

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def native():
    require(decode._jpegcrop is not None,
            "trainer._jpegcrop is not built (needs libjpeg's headers and a C compiler at install time: "
            "apt-get install libjpeg-dev gcc, then reinstall the project)")
    return decode._jpegcrop


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> dict[str, bytes]:
    """The kinds ImageNet holds: 4:2:0 colour (landscape, portrait, odd sizes), progressive,
    greyscale, 4:4:4 and 4:2:2, restart markers, and a large one for the 1/4 and 1/8 scales."""
    root = tmp_path_factory.mktemp("jpegcrop")
    astronaut = Image.fromarray(skimage_data.astronaut())
    out = {}

    def save(name, img, **kw):
        img.save(root / name, format="JPEG", **kw)
        out[name] = (root / name).read_bytes()

    save("landscape.jpg", astronaut.resize((500, 375)), quality=90)
    save("portrait.jpg", Image.fromarray(skimage_data.coffee()).resize((333, 500)), quality=90)
    save("odd.jpg", astronaut.resize((397, 251)), quality=85)
    save("progressive.jpg", astronaut.resize((500, 375)), quality=90, progressive=True)
    save("gray.jpg", astronaut.convert("L").resize((500, 375)), quality=90)
    save("444.jpg", astronaut.resize((450, 300)), quality=95, subsampling=0)
    save("422.jpg", astronaut.resize((451, 299)), quality=90, subsampling=1)
    save("restarts.jpg", astronaut.resize((500, 375)), quality=90, restart_marker_rows=1)
    save("big.jpg", Image.fromarray(skimage_data.hubble_deep_field()), quality=90)
    return out


def whole_image_crop(data: bytes, denom: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    """What decode.py does without the extension: decode all of it at 1/denom, then cut."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    hwc = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True,
                                 min_width=math.ceil(width / denom), min_height=math.ceil(height / denom))
    return hwc[y:y + h, x:x + w]


def partial_crop(native, data: bytes, denom: int, x: int, y: int, w: int, h: int, mirror=False) -> np.ndarray:
    out = bytearray(w * h * 3)
    native.decode_crop(data, out, denom, x, y, w, h, mirror)
    return np.frombuffer(out, np.uint8).reshape(h, w, 3)


@pytest.mark.parametrize("name", ["landscape.jpg", "portrait.jpg", "odd.jpg", "progressive.jpg", "gray.jpg",
                                  "444.jpg", "422.jpg", "restarts.jpg", "big.jpg"])
def test_any_box_at_any_scale_has_exactly_the_whole_image_decoders_pixels(native, jpegs, name):
    data = jpegs[name]
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    rng = random.Random(name)
    for denom in (1, 2, 4, 8):
        sh, sw = -(-height // denom), -(-width // denom)
        boxes = [(0, 0, sw, sh), (sw - 1, sh - 1, 1, 1), (0, sh - 3, sw, 3),   # whole, last pixel, last rows
                 (0, 1, min(16, sw), sh - 1)]                                 # one iMCU column: decoded in place
        for _ in range(25):   # odd offsets and sizes, off the 8 and 16 px block grid
            w, h = rng.randint(1, sw), rng.randint(1, sh)
            boxes.append((rng.randint(0, sw - w), rng.randint(0, sh - h), w, h))
        for x, y, w, h in boxes:
            ours = partial_crop(native, data, denom, x, y, w, h)
            ref = whole_image_crop(data, denom, x, y, w, h)
            assert np.array_equal(ours, ref), (denom, x, y, w, h)
            mirrored = partial_crop(native, data, denom, x, y, w, h, mirror=True)
            assert np.array_equal(mirrored, ref[:, ::-1]), ("mirror", denom, x, y, w, h)


def test_training_crops_are_the_same_with_and_without_the_extension(native, jpegs, tmp_path, monkeypatch):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpegs["landscape.jpg"])

    def crops():
        torch.manual_seed(3)
        return [decode.load_train_crop(path, size, hflip=True) for size in (64, 160, 224) for _ in range(8)]

    with_native = crops()
    monkeypatch.setattr(decode, "_jpegcrop", None)
    without = crops()
    assert all(torch.equal(a, b) for a, b in zip(with_native, without))


def test_a_truncated_file_is_refused_when_the_box_reaches_the_missing_part(native, jpegs):
    data = jpegs["landscape.jpg"]
    cut = data[: len(data) * 2 // 3]
    with pytest.raises(ValueError, match=r"(?i)premature end|corrupt|suspend|truncat"):
        partial_crop(native, cut, 1, 0, 300, 500, 75)      # the bottom rows are not in the file
    assert partial_crop(native, cut, 1, 0, 0, 500, 40).shape == (40, 500, 3)   # the top rows are


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff\xe0not a jpeg at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 64])
def test_bytes_that_are_not_a_jpeg_raise_value_error(native, data):
    with pytest.raises(ValueError):
        partial_crop(native, data, 1, 0, 0, 4, 4)


@pytest.mark.parametrize("denom,x,y,w,h,out_len", [
    (3, 0, 0, 4, 4, 48),          # not a libjpeg-turbo SIMD scale
    (1, 0, 0, 0, 4, 48),          # empty box
    (1, -1, 0, 4, 4, 48),         # negative offset
    (1, 0, 0, 4, 4, 47),          # buffer one byte short
    (1, 490, 0, 20, 4, 240),      # past the right edge (500 px wide)
    (2, 0, 180, 4, 20, 240),      # past the bottom at 1/2 scale (188 rows)
])
def test_a_bad_request_raises_value_error_and_writes_nothing_outside_the_buffer(native, jpegs, denom, x, y, w, h,
                                                                                 out_len):
    out = bytearray(out_len)
    with pytest.raises(ValueError):
        native.decode_crop(jpegs["landscape.jpg"], out, denom, x, y, w, h)
    assert len(out) == out_len


def test_a_read_only_buffer_is_refused(native, jpegs):
    with pytest.raises(TypeError):
        native.decode_crop(jpegs["landscape.jpg"], bytes(48), 1, 0, 0, 4, 4)


def test_damaged_files_give_pixels_or_value_error_never_a_crash(native, jpegs):
    """Flipped bytes, cut files and spliced garbage at random boxes and scales: each call either
    decodes or raises ValueError (a crash would take the DataLoader worker down with it). The same
    loop ran 40,000 times, and 6,000 under AddressSanitizer, while the extension was written."""
    rng = random.Random(0)
    sources = [jpegs["landscape.jpg"], jpegs["progressive.jpg"]]
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(1500):
        data = bytearray(rng.choice(sources))
        kind = rng.random()
        if kind < 0.4:
            for _ in range(rng.randint(1, 10)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind < 0.7:
            data = data[:rng.randrange(len(data))]
        else:
            at = rng.randrange(len(data))
            data[at:at + rng.randint(1, 50)] = rng.randbytes(rng.randint(0, 50))
        denom = rng.choice([1, 2, 4, 8])
        sw, sh = -(-500 // denom), -(-375 // denom)
        w, h = rng.randint(1, sw), rng.randint(1, sh)
        try:
            partial_crop(native, bytes(data), denom, rng.randint(0, sw - w), rng.randint(0, sh - h), w, h,
                         mirror=rng.random() < 0.5)
            outcomes["decoded"] += 1
        except ValueError:
            outcomes["refused"] += 1
    assert outcomes["decoded"] > 100 and outcomes["refused"] > 100, outcomes
