"""CIFAR's pad-and-crop augmentation (`crop_pad`) and the CIFAR-100 and Tiny ImageNet recipes."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F2

from tests.prepare.miniature import make_cifar100, make_tiny
from tests.trainer.conftest import cli
from trainer import decode
from trainer.config import resolve, recipe_hint
from trainer.data import ImageFiles, TrainTransform
from trainer.errors import TrainerError


def coded_image(size: int) -> np.ndarray:
    """Every pixel non-zero and telling its place: R = 10 + row, G = 10 + column."""
    rows, cols = np.mgrid[0:size, 0:size]
    return np.stack([10 + rows, 10 + cols, np.full_like(rows, 200)], axis=-1).astype(np.uint8)


def offset_of(out: torch.Tensor) -> tuple[int, int, bool]:
    """(dy, dx, flipped) read back from a pad-crop of `coded_image`."""
    hwc = out.permute(1, 2, 0).numpy().astype(int)
    filled = np.argwhere(hwc[..., 2] > 0)
    (r0, c0), (_, c1) = filled.min(axis=0), filled.max(axis=0)
    row_value = hwc[r0, c0, 0] - 10
    flipped = hwc[r0, c0, 1] > hwc[r0, c1, 1]
    left_col = c1 if flipped else c0
    col_value = hwc[r0, left_col, 1] - 10
    size = hwc.shape[1]
    dx_col = (size - 1 - left_col) if flipped else left_col
    return (row_value if r0 == 0 else -r0), (col_value if dx_col == 0 else -dx_col), bool(flipped)


@pytest.mark.parametrize("flip", [False, True])
def test_pad_crop_equals_torchvision_pad_then_crop_for_every_offset(flip):
    pad, size = 4, 32
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    chw = image.permute(2, 0, 1)
    padded = F2.pad(chw, [pad])                                   # RandomCrop(32, padding=4): zeros
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            want = F2.crop(padded, dy + pad, dx + pad, size, size)
            want = F2.horizontal_flip(want) if flip else want
            got = decode.pad_crop(image, dy, dx, flip)
            assert torch.equal(got, want), (dy, dx, flip)
            assert got.permute(1, 2, 0).is_contiguous()            # pixel-interleaved, as every loader returns


def test_pad_crop_draws_every_offset_and_flip_evenly_and_reproducibly(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(coded_image(32)).save(path)
    seen = Counter()
    for seed in range(2000):
        torch.manual_seed(seed)
        out = decode.load_pad_crop(path, 32, 4, hflip=True)
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
        seen[offset_of(out)] += 1
    assert len(seen) == 9 * 9 * 2                                 # every offset, mirrored and not
    assert max(seen.values()) < 3 * 2000 / 162                   # none far more likely (expected ~12 each)
    dataset = ImageFiles([(str(path), 0)], TrainTransform((0.25, 1), (0.75, 1.33), True, pad=4))
    a, b = dataset[(0, 32, 12345)], dataset[(0, 32, 12345)]
    assert torch.equal(a[0], b[0])                                # a pure function of the seed (resume)


def test_pad_crop_of_another_size_resizes_first(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(path)
    torch.manual_seed(0)
    out = decode.load_pad_crop(path, 32, 4)
    assert out.shape == (3, 32, 32)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(gray)
    assert decode.load_pad_crop(gray, 32, 0).shape == (3, 32, 32)


@pytest.mark.parametrize("value", ["-1", "17"])
def test_crop_pad_out_of_range_is_refused(value):
    with pytest.raises(TrainerError, match="crop_pad"):
        resolve(None, {"train_res": 32, "crop_pad": value})


def test_recipe_hint_names_the_datasets_recipe_only_when_the_settings_miss():
    defaults = resolve()
    assert "--recipe t4-cifar100-rn18" in recipe_hint("cifar100", defaults)
    assert "30x the compute" in recipe_hint("cifar100", defaults)          # (176 / 32) ** 2
    assert "--recipe t4-tiny-rn18" in recipe_hint("tiny-imagenet", defaults)
    assert "--recipe t4-rn18-fast" in recipe_hint("imagenet", defaults)
    assert recipe_hint("cifar100", resolve("t4-cifar100-rn18")) == ""
    assert recipe_hint("cifar100", resolve(None, {"train_res": 32})) == ""  # the user chose their own
    assert recipe_hint("imagenet", resolve(None, {"arch": "resnet18"})) == ""
    assert recipe_hint("my-photos", defaults) == ""


@pytest.mark.parametrize("dataset,recipe,pad", [("cifar100", "t4-cifar100-rn18", 4), ("tiny", "t4-tiny-rn18", 8)])
def test_the_recipes_train_on_what_prepare_makes(tmp_path, dataset, recipe, pad):
    """`trainer prepare` then `trainer train --recipe`: PNGs (CIFAR) or JPEGs (Tiny) through the pad
    crop at the images' own size. A tiny model and one epoch on the CPU: the recipe's data settings
    are what is tested, not its accuracy (that needs a GPU and the real data)."""
    source, data, out = tmp_path / "src", tmp_path / "data", tmp_path / "run"
    if dataset == "cifar100":
        make_cifar100(source)
    else:
        make_tiny(source, zipped=True)
    prepared = cli("prepare", "cifar100" if dataset == "cifar100" else "tiny-imagenet", "--source", source,
                   "--dest", data)
    assert prepared.exit_code == 0, prepared.output
    result = cli("train", "--data", data, "--out", out, "--recipe", recipe, "--epochs", "1", "--device", "cpu",
                 "--arch", "resnet_small", "--width", "8", "--set", "depths=1,1", "--batch-size", "4",
                 "--workers", "0")
    assert result.exit_code == 0, result.output
    log = (out / "train.log").read_text()
    assert f"train crops: zero-pad {pad} px, random window, mirrored half the time" in log
    assert "no --recipe" not in log
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["crop_pad"] == pad if "config" in config else config["crop_pad"] == pad
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def test_narrow_models_train_channels_first_on_cpu():
    """oneDNN (torch 2.14, AVX-512) segfaults in the weight gradient of a 1x1 stride-2 convolution
    with under 16 input channels at 48 px and up: such a model must not go channels_last on CPU."""
    from trainer.engine import effective_channels_last
    from trainer.models import build_model
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    narrow = build_model("resnet_small", 4, width=8, depths=(1, 1), stem="small")
    wide = build_model("resnet_small", 4, width=16, depths=(1, 1), stem="small")
    assert not effective_channels_last(cpu, True, 4, narrow)
    assert effective_channels_last(cpu, True, 4, wide)
    assert effective_channels_last(cuda, True, 4, narrow)
    assert not effective_channels_last(cpu, True, 5, wide)          # odd batches: the older oneDNN crash
    assert effective_channels_last(cpu, True, 4, build_model("resnet18", 10, stem="small"))
