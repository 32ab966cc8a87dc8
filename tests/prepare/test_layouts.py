"""Each download layout, prepared through the CLI, gives exactly the expected files, byte for byte."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.prepare.helpers import dataset_json, digest, trainer, tree_files
from tests.prepare.miniature import make_cifar100, make_imagenet, make_tiny


@pytest.mark.parametrize("layout", ["archives", "extracted", "kaggle-zip", "kaggle-dir"])
def test_imagenet_layout_gives_every_image_in_its_class(tmp_path, layout):
    truth = make_imagenet(tmp_path / "src", layout)
    before = digest(tmp_path / "src")
    result = trainer("prepare", "imagenet", "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert tree_files(tmp_path / "out") == truth.images
    meta = dataset_json(tmp_path / "out")
    assert meta["schema"] == 1 and meta["dataset"] == "imagenet"
    assert meta["classes"] == truth.classes
    assert meta["names"] == truth.names
    assert meta["counts"]["val"]["n01440764"] == 3 and sum(meta["counts"]["train"].values()) == 24
    assert digest(tmp_path / "src") == before, "the source must not change"
    assert "14 val images" in result.output


@pytest.mark.parametrize("zipped", [True, False])
def test_tiny_imagenet_gives_every_image_in_its_class(tmp_path, zipped):
    truth = make_tiny(tmp_path / "src", zipped)
    result = trainer("prepare", "tiny-imagenet", "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert tree_files(tmp_path / "out") == truth.images
    meta = dataset_json(tmp_path / "out")
    assert meta["classes"] == truth.classes and meta["names"] == truth.names


def test_cifar100_writes_lossless_png_in_fine_label_folders(tmp_path):
    pixels, classes = make_cifar100(tmp_path / "src")
    result = trainer("prepare", "cifar100", "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert result.exit_code == 0, result.output
    got = tree_files(tmp_path / "out")
    assert set(got) == set(pixels)
    for key, data in got.items():
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG"
            assert np.array_equal(np.asarray(img.convert("RGB")), pixels[key]), key
    assert dataset_json(tmp_path / "out")["classes"] == sorted(classes)


def test_cifar100_rows_sharing_a_file_name_are_all_kept(tmp_path):
    from tests.prepare.miniature import CIFAR_CLASSES

    # Rows 0 and len(classes) have the same class; give them one name, as the pickle may.
    twin = len(CIFAR_CLASSES)
    pixels, _ = make_cifar100(tmp_path / "src", same_names={0: "twin_s_000001.png", twin: "twin_s_000001.png"})
    result = trainer("prepare", "cifar100", "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert result.exit_code == 0, result.output
    got = tree_files(tmp_path / "out")
    assert set(got) == set(pixels)
    assert ("train", CIFAR_CLASSES[0], f"twin_s_000001-row{twin}.png") in got
    for key, data in got.items():
        with Image.open(io.BytesIO(data)) as img:
            assert np.array_equal(np.asarray(img.convert("RGB")), pixels[key]), key
    assert trainer("verify", "--data", tmp_path / "out", "--no-decode").exit_code == 0


def test_source_without_imagenet_says_what_it_looked_for(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("x")
    result = trainer("prepare", "imagenet", "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert result.exit_code == 1
    assert "ILSVRC2012_img_train.tar" in result.output and "imagenet-object-localization-challenge.zip" in result.output
    assert "notes.txt" in result.output
    assert not (tmp_path / "out").exists()


def test_partial_official_download_names_the_missing_part(tmp_path):
    make_imagenet(tmp_path / "src", "archives")
    (tmp_path / "src" / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    result = trainer("prepare", "imagenet", "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert result.exit_code == 1 and "missing devkit" in result.output


@pytest.mark.parametrize("layout", ["extracted", "kaggle-dir"])
def test_imagenet_val_already_sorted_into_class_folders(tmp_path, layout):
    # valprep.sh (the usual ImageNet recipe) moves each val image into val/<wnid>/.
    truth = make_imagenet(tmp_path / "src", layout)
    val = tmp_path / "src" / ("ILSVRC2012_img_val" if layout == "extracted" else "ILSVRC/Data/CLS-LOC/val")
    for split, cls, name in truth.images:
        if split == "val":
            (val / cls).mkdir(exist_ok=True)
            (val / name).rename(val / cls / name)
    result = trainer("prepare", "imagenet", "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert tree_files(tmp_path / "out") == truth.images
