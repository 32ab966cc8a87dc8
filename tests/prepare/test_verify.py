"""`trainer verify`: passes on a good folder, fails with a clear report and exit 1 otherwise."""
from __future__ import annotations

import shutil

import pytest

from tests.prepare.helpers import trainer
from tests.prepare.miniature import make_imagenet


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


def test_verify_fails_on_class_mismatch(prepared):
    shutil.rmtree(prepared / "val" / "n01491361")
    result = trainer("verify", "--data", prepared)
    assert result.exit_code == 1
    assert "1 classes in train/ but not in val/: n01491361" in result.output
    assert "FAILED" in result.output


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
