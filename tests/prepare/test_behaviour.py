"""How `trainer prepare` behaves: resuming, subsets, limits, resizing, space, deleting the source."""
from __future__ import annotations

import io
import shutil
from collections import namedtuple

import pytest
from PIL import Image

from tests.prepare.helpers import dataset_json, digest, trainer, tree_files
from tests.prepare.miniature import make_imagenet
from trainer.prepare.writer import FAULT_ENV


@pytest.fixture
def official(tmp_path):
    return make_imagenet(tmp_path / "src", "archives")


def _prepare(tmp_path, *flags, env=None, dest="out"):
    return trainer("prepare", "imagenet", "--source", tmp_path / "src", "--dest", tmp_path / dest, *flags, env=env)


@pytest.mark.parametrize("flags", [(), ("--resize-short", "16", "--workers", "2")], ids=["copy", "resize-parallel"])
def test_interrupted_run_resumes_without_redoing_complete_classes(tmp_path, official, flags):
    first = _prepare(tmp_path, *flags, env={FAULT_ENV: "3"})
    assert first.exit_code != 0
    done_dir = tmp_path / "out" / ".prepare" / "done"
    done_before = sorted(p.relative_to(done_dir) for p in done_dir.rglob("*") if p.is_file())
    assert len(done_before) == 3
    assert list((tmp_path / "out").rglob("*.part")), "the fault leaves a half-written file, as a kill would"
    stamps = {p: p.stat().st_mtime_ns for d in done_before for p in (tmp_path / "out" / d).iterdir()}

    second = _prepare(tmp_path, *flags)
    assert second.exit_code == 0, second.output
    assert "3 class folders were already complete; 1 half-written files removed" in second.output
    assert not list((tmp_path / "out").rglob("*.part"))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "complete classes were rewritten"
    got = tree_files(tmp_path / "out")
    assert set(got) == set(official.images)
    if not flags:
        assert got == official.images
    assert dataset_json(tmp_path / "out")["counts"]["train"]["n01443537"] == 5


def test_subset_same_classes_in_both_splits_and_reproducible(tmp_path, official):
    def classes(dest, seed):
        result = _prepare(tmp_path, "--subset-percent", "50", "--seed", seed, dest=dest)
        assert result.exit_code == 0, result.output
        train = sorted(p.name for p in (tmp_path / dest / "train").iterdir())
        val = sorted(p.name for p in (tmp_path / dest / "val").iterdir())
        assert train == val == dataset_json(tmp_path / dest)["classes"]
        assert dataset_json(tmp_path / dest)["subset"] == {"percent": 50.0, "seed": int(seed)}
        return train

    a, again, other = classes("a", "1"), classes("b", "1"), classes("c", "2")
    assert len(a) == 3 and a == again and a != other
    got = tree_files(tmp_path / "a")
    assert got == {k: v for k, v in official.images.items() if k[1] in a}


def test_max_per_class_keeps_the_first_names(tmp_path, official):
    result = _prepare(tmp_path, "--max-per-class", "2")
    assert result.exit_code == 0, result.output
    got = tree_files(tmp_path / "out")
    for split in ("train", "val"):
        for cls in official.classes:
            names = sorted(n for s, c, n in official.images if (s, c) == (split, cls))[:2]
            assert sorted(n for s, c, n in got if (s, c) == (split, cls)) == names
    assert all(got[k] == official.images[k] for k in got)


def test_resize_short_stores_smaller_jpegs_in_parallel(tmp_path, official):
    result = _prepare(tmp_path, "--resize-short", "16", "--workers", "2")
    assert result.exit_code == 0, result.output
    got = tree_files(tmp_path / "out")
    assert set(got) == set(official.images)
    for key, data in got.items():
        with Image.open(io.BytesIO(data)) as img:
            # the CMYK JPEG and the PNG named .JPEG come out as RGB JPEGs too
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (21, 16)), key
    assert dataset_json(tmp_path / "out")["resize_short"] == 16
    check = trainer("verify", "--data", tmp_path / "out")
    assert check.exit_code == 0, check.output


def test_refuses_when_free_space_is_short(tmp_path, official, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**6, 10**6 - 1000, 1000))
    result = _prepare(tmp_path)
    assert result.exit_code == 1
    # 256, not less: the recipes evaluate at resize 256, and --resize-short shrinks val as well.
    assert "Not enough free space" in result.output and "--resize-short 256" in result.output
    assert not (tmp_path / "out").exists()


def test_help_suggests_a_resize_that_keeps_the_standard_evaluation():
    result = trainer("prepare", "imagenet", "--help", env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    assert "--resize-short 256" in result.output and "--resize-short 160" not in result.output


def test_rerun_with_other_options_is_refused_and_keeps_files(tmp_path, official):
    assert _prepare(tmp_path, "--max-per-class", "2").exit_code == 0
    before = digest(tmp_path / "out")
    result = _prepare(tmp_path, "--max-per-class", "3")
    assert result.exit_code == 1 and "max_per_class" in result.output and "same options" in result.output
    assert digest(tmp_path / "out") == before


def test_refuses_a_foreign_non_empty_dest(tmp_path, official):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("keep me")
    result = _prepare(tmp_path)
    assert result.exit_code == 1 and "not empty" in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["thesis.tex"]


def test_delete_source_only_after_the_result_verifies(tmp_path):
    make_imagenet(tmp_path / "src", "extracted")
    broken = tmp_path / "src" / "ILSVRC2012_img_val" / "ILSVRC2012_val_00000002.JPEG"
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 3])   # truncated in the download
    result = _prepare(tmp_path, "--delete-source")
    assert result.exit_code == 1
    assert "kept the source" in result.output and "ILSVRC2012_val_00000002.JPEG" in result.output
    assert (tmp_path / "src" / "ILSVRC2012_img_train").is_dir()

    broken.write_bytes(good)
    shutil.rmtree(tmp_path / "out")
    result = _prepare(tmp_path, "--delete-source")
    assert result.exit_code == 0, result.output
    assert "deleted the source" in result.output
    assert list((tmp_path / "src").iterdir()) == []
    assert trainer("verify", "--data", tmp_path / "out").exit_code == 0


def test_missing_source_images_fail_and_keep_complete_classes(tmp_path):
    truth = make_imagenet(tmp_path / "src", "extracted")
    (tmp_path / "src" / "ILSVRC2012_img_val" / "ILSVRC2012_val_00000003.JPEG").unlink()
    result = _prepare(tmp_path)
    assert result.exit_code == 1
    assert "val/n01484850: 1 images not found in the source" in result.output
    assert "rerun the same command" in result.output
    assert (tmp_path / "out" / "train" / "n01484850").is_dir()


def test_verify_checksums_rejects_a_repacked_copy(tmp_path, official):
    result = _prepare(tmp_path, "--verify-checksums")
    assert result.exit_code == 1
    assert "ILSVRC2012_img_train.tar: md5" in result.output and "without --verify-checksums" in result.output
    assert not (tmp_path / "out").exists()


def test_kaggle_class_without_train_images_is_reported(tmp_path):
    make_imagenet(tmp_path / "src", "kaggle-dir")
    shutil.rmtree(tmp_path / "src" / "ILSVRC" / "Data" / "CLS-LOC" / "train" / "n01494475")
    result = _prepare(tmp_path)
    assert result.exit_code == 1
    assert "train/n01494475: no images in the source" in result.output
    assert "The 11 complete ones are kept" in result.output


@pytest.mark.parametrize("partial", [("--subset-percent", "34"), ("--max-per-class", "2")], ids=["subset", "max"])
def test_delete_source_with_only_part_of_the_download_is_refused(tmp_path, official, partial):
    before = digest(tmp_path / "src")
    result = _prepare(tmp_path, *partial, "--delete-source")
    assert result.exit_code == 2, result.output
    assert "--delete-source removes the whole download" in result.output and partial[0] in result.output
    assert "Nothing was written" in result.output
    assert digest(tmp_path / "src") == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,value", [("--subset-percent", "150"), ("--subset-percent", "0"),
                                        ("--subset-percent", "-5"), ("--subset-percent", "nan"),
                                        ("--max-per-class", "0"), ("--max-per-class", "-3")])
def test_out_of_range_subset_or_limit_is_a_usage_error(tmp_path, official, flag, value):
    result = _prepare(tmp_path, flag, value)
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output
    if flag == "--subset-percent":
        assert "is out of range" in result.output and "more than 0 and at most 100" in result.output
    assert not (tmp_path / "out").exists()


def test_out_of_range_options_are_refused_by_the_library_too(tmp_path, official):
    from trainer.prepare.run import PrepareError, PrepareOptions, prepare

    for bad in (dict(subset_percent=150.0), dict(max_per_class=0)):
        with pytest.raises(PrepareError, match="is out of range"):
            prepare(PrepareOptions("imagenet", tmp_path / "src", tmp_path / "out", **bad))
    assert not (tmp_path / "out").exists()


def test_delete_source_with_a_full_subset_percent_is_allowed(tmp_path, official):
    result = _prepare(tmp_path, "--subset-percent", "100", "--delete-source")
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "src").iterdir()) == []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_damaged_image_with_resize_short_is_kept_and_named(tmp_path, workers):
    truth = make_imagenet(tmp_path / "src", "extracted")
    broken = tmp_path / "src" / "ILSVRC2012_img_val" / "ILSVRC2012_val_00000002.JPEG"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])   # truncated in the download
    result = _prepare(tmp_path, "--resize-short", "16", "--workers", workers)
    assert result.exit_code == 0, result.output
    assert "did not decode" in result.output and "val/n01443537/ILSVRC2012_val_00000002.JPEG" in result.output
    assert "download the archive that holds them again" in result.output
    got = tree_files(tmp_path / "out")
    assert set(got) == set(truth.images)
    assert got[("val", "n01443537", "ILSVRC2012_val_00000002.JPEG")] == broken.read_bytes()
    check = trainer("verify", "--data", tmp_path / "out")
    assert check.exit_code == 1 and "ILSVRC2012_val_00000002.JPEG" in check.output


def test_a_truncated_archive_is_named_and_complete_classes_are_kept(tmp_path, official):
    tar = tmp_path / "src" / "ILSVRC2012_img_train.tar"
    whole = tar.read_bytes()
    tar.write_bytes(whole[: len(whole) // 2])   # the download stopped half-way
    result = _prepare(tmp_path)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = " ".join(result.output.split())
    assert "ILSVRC2012_img_train.tar is damaged or incomplete" in text and "Download it again" in text
    assert "already complete are kept" in text and "rerun the same command" in text

    tar.write_bytes(whole)
    again = _prepare(tmp_path)
    assert again.exit_code == 0, again.output
    assert tree_files(tmp_path / "out") == official.images


@pytest.mark.parametrize("layout", ["kaggle-zip", "tiny", "cifar"])
def test_a_truncated_download_is_refused_before_writing(tmp_path, layout):
    from tests.prepare.miniature import make_cifar100, make_tiny

    if layout == "kaggle-zip":
        make_imagenet(tmp_path / "src", layout)
        archive, command = tmp_path / "src" / "imagenet-object-localization-challenge.zip", "imagenet"
    elif layout == "tiny":
        make_tiny(tmp_path / "src", zipped=True)
        archive, command = tmp_path / "src" / "tiny-imagenet-200.zip", "tiny-imagenet"
    else:
        make_cifar100(tmp_path / "src")
        archive, command = tmp_path / "src" / "cifar-100-python.tar.gz", "cifar100"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    result = trainer("prepare", command, "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = " ".join(result.output.split())
    assert f"{archive.name} is damaged or incomplete" in text and "Download it again" in text
    assert not (tmp_path / "out").exists()
