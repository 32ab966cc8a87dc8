"""16-bit greyscale images (issue 21): PIL's convert("RGB") clips their values at 255, so a dataset of
16-bit PNGs trained on white squares. Every loader scales them to 8 bits, and `trainer verify` says
how many there are."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tests.trainer.conftest import cli
from trainer import decode
from trainer.pixels import to_rgb
from trainer.prepare.shrink import shrink
from trainer.prepare import verify

MID_GREY = 0x8000   # of 65535: 128 of 255 after scaling; 255 (white) when clipped


def grey_image(path, value: int, size: int = 16, fmt: str = "PNG", dtype=np.uint16) -> str:
    Image.fromarray(np.full((size, size), value, dtype)).save(path, format=fmt)
    return str(path)


@pytest.mark.parametrize("fmt, dtype, mode", [("PNG", np.uint16, "I;16"), ("TIFF", np.int32, "I")])
def test_every_loader_decodes_16_bit_mid_grey_as_mid_grey(tmp_path, fmt, dtype, mode):
    path = grey_image(tmp_path / f"grey.{fmt.lower()}", MID_GREY, fmt=fmt, dtype=dtype)
    with Image.open(path) as img:
        assert img.mode == mode and np.asarray(img.convert("RGB")).max() == 255   # what PIL alone gives
    crops = {
        "eval": decode.load_eval_crop(path, 16, 16),
        "train": decode.load_train_crop(path, 8, (0.5, 1.0)),
        "pad": decode.load_pad_crop(path, 16, 0),
    }
    for name, crop in crops.items():
        assert crop.dtype == torch.uint8 and crop.shape[0] == 3, name
        assert crop.min() == crop.max() == 128, (name, crop.min(), crop.max())


def test_the_full_16_bit_range_maps_onto_the_8_bit_one(tmp_path):
    levels = np.array([[0, 255, 256, 0x7FFF, 0x8000, 65535]], np.uint16).repeat(6, axis=0)
    path = tmp_path / "levels.png"
    Image.fromarray(levels).save(path)
    with Image.open(path) as img:
        rgb = np.asarray(to_rgb(img))
    assert rgb[0, :, 0].tolist() == [0, 0, 1, 127, 128, 255]
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_8_bit_images_are_unchanged(tmp_path):
    path = tmp_path / "rgb.png"
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    assert torch.equal(decode.load_eval_crop(path, 16, 16).permute(1, 2, 0), torch.from_numpy(pixels))


def test_verify_counts_16_bit_images(data_copy):
    victim = sorted((data_copy / "train").glob("*/*.jpg"))[5]
    victim.unlink()   # replaced, so the per-class counts still match dataset.json
    png = victim.with_suffix(".png")
    grey_image(png, MID_GREY)
    result = cli("verify", "--data", data_copy, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "1 images are 16-bit greyscale, which training scales to 8 bits" in result.output
    assert str(png.relative_to(data_copy)) in result.output


def test_resize_short_keeps_16_bit_greys(tmp_path):
    png = tmp_path / "grey.png"
    grey_image(png, MID_GREY, size=64)
    with Image.open(io.BytesIO(shrink(png.read_bytes(), 32, png=True))) as small:
        assert small.size == (32, 32) and set(np.asarray(small.convert("L")).ravel()) == {128}
