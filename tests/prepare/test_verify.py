"""`trainer verify`: passes on a good folder, fails with a clear report and exit 1 otherwise."""
from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image

from tests.prepare.helpers import trainer
from tests.prepare.miniature import make_imagenet
from trainer.prepare.verify import IMAGE_EXTENSIONS, verify_dataset


@pytest.fixture
def prepared(tmp_path):
    make_imagenet(tmp_path / "src", "archives")
    result = trainer("prepare", "imagenet", "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert result.exit_code == 0, result.output
    return tmp_path / "out"


def test_verify_passes_and_reports_counts(prepared):
    result = trainer("verify", "--data", prepared, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output
    assert "24" in result.output and "14" in result.output   # train and val image counts in the table


def test_val_missing_a_train_class_is_a_warning_as_in_training(prepared):
    shutil.rmtree(prepared / "val" / "n01491361")
    result = trainer("verify", "--data", prepared, "--no-decode")
    assert "warning: val/ has no folder for 1 of the 6 train classes: n01491361." in result.output
    assert "measured over the other 5 classes" in result.output
    # A prepared folder still fails: it no longer holds what dataset.json says it does.
    assert result.exit_code == 1 and "classes in val/ whose image count differs from dataset.json" in result.output

    (prepared / "dataset.json").unlink()   # a hand-made folder: training takes it, so verify passes
    result = trainer("verify", "--data", prepared, "--no-decode")
    assert result.exit_code == 0, result.output
    assert "warning: val/ has no folder for 1 of the 6 train classes: n01491361." in result.output


def test_verify_fails_on_a_val_class_that_train_lacks(prepared):
    (prepared / "val" / "n01491361").rename(prepared / "val" / "n09999999")
    result = trainer("verify", "--data", prepared, "--no-decode")
    assert result.exit_code == 1
    assert "1 classes in val/ but not in train/: n09999999" in result.output
    assert "FAILED" in result.output


def test_non_image_files_are_noted_not_counted_or_decoded(prepared):
    cls = prepared / "train" / "n01440764"
    (cls / "notes.txt").write_text("where these came from")
    (cls / ".DS_Store").write_bytes(b"\0Bud1")
    (prepared / "val" / "n01443537" / "Thumbs.db").write_bytes(b"\xd0\xcf")
    result = trainer("verify", "--data", prepared, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "24" in result.output and "14" in result.output   # the image counts are unchanged
    assert ("note: 3 files that are not images, skipped here as in training (which reads only files ending in "
            ".jpg, .jpeg, .png") in result.output
    for name in ("train/n01440764/.DS_Store", "train/n01440764/notes.txt", "val/n01443537/Thumbs.db"):
        assert name in result.output
    assert "unreadable" not in result.output and "differs from dataset.json" not in result.output


def test_a_class_holding_only_non_images_is_empty_as_training_sees_it(prepared):
    cls = prepared / "val" / "n01440764"
    for image in cls.iterdir():
        image.unlink()
    (cls / "README.txt").write_text("images to follow")
    result = trainer("verify", "--data", prepared, "--no-decode")
    assert result.exit_code == 1
    assert "1 empty classes in val/: n01440764" in result.output and "val/n01440764/README.txt" in result.output


def test_verify_lists_the_images_training_lists(tmp_path):
    from trainer.data import load_dataset

    files = {"train/a/1.jpg": "jpeg", "train/a/2.JPEG": "jpeg", "train/a/sub/3.png": "png", "train/a/x.txt": "",
             "train/a/.DS_Store": "", "train/a/._1.jpg": "", "train/b/4.webp": "webp", "train/b/5.gif": "", "val/a/6.jpg": "jpeg",
             "val/b/7.bmp": "bmp", "val/b/7.bmp.part": ""}
    for name, fmt in files.items():
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt:
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), "red").save(buf, format=fmt)
            path.write_bytes(buf.getvalue())
        else:
            path.write_bytes(b"not an image")
    info = load_dataset(tmp_path / "data")
    report = verify_dataset(tmp_path / "data")
    for split, samples in (("train", info.train), ("val", info.val)):
        assert report.counts[split] == {c: sum(1 for _, i in samples if info.classes[i] == c) for c in info.classes}
    assert report.counts["train"] == {"a": 3, "b": 1}
    assert report.problems == (f"1 half-written files (rerun the same `trainer prepare` command to finish): "
                               f"{tmp_path / 'data' / 'val/b/7.bmp.part'}",)
    assert any("4 files that are not images" in note for note in report.notes), report.notes
    assert not any(path.endswith("._1.jpg") for path, _ in info.train), "a macOS metadata file is not an image"


def test_image_extensions_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert IMAGE_EXTENSIONS == IMG_EXTENSIONS


def test_verify_fails_on_unreadable_file(prepared):
    bad = prepared / "train" / "n01443537" / "n01443537_1007.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    result = trainer("verify", "--data", prepared)
    assert result.exit_code == 1
    assert "1 unreadable images" in result.output and "n01443537_1007.JPEG" in result.output


def test_verify_reports_half_written_files_and_count_drift(prepared):
    (prepared / "train" / "n01440764" / ".n01440764_1000.JPEG.part").write_bytes(b"half")
    (prepared / "val" / "n01440764" / "ILSVRC2012_val_00000001.JPEG").unlink()
    result = trainer("verify", "--data", prepared, "--no-decode")
    assert result.exit_code == 1
    assert "half-written files" in result.output and "rerun the same `trainer prepare` command" in result.output
    assert "classes in val/ whose image count differs from dataset.json: n01440764" in result.output


def test_expect_imagenet_fails_on_a_miniature_with_the_numbers(prepared):
    result = trainer("verify", "--data", prepared, "--expect", "imagenet")
    assert result.exit_code == 1
    assert ("--expect imagenet: wanted 1000 classes, 1,281,167 train and 50,000 val images; "
            "found 6 classes, 24 train and 14 val images.") in result.output


def test_expect_on_a_subset_explains_why(tmp_path):
    make_imagenet(tmp_path / "src", "kaggle-zip")
    assert trainer("prepare", "imagenet", "--source", tmp_path / "src", "--dest", tmp_path / "out",
                   "--subset-percent", "50").exit_code == 0
    result = trainer("verify", "--data", tmp_path / "out", "--expect", "imagenet")
    assert result.exit_code == 1 and "leave it out for a subset" in result.output


def test_verify_of_a_missing_folder_says_how_to_make_one(tmp_path):
    result = trainer("verify", "--data", tmp_path / "nothing")
    assert result.exit_code == 1 and "trainer prepare imagenet" in result.output
