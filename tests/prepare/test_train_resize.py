"""`--resize-short-train T`: train/ stored at short side T, val/ at --resize-short S (or as it came).

The miniature's images are 40x30 (the CMYK JPEG and the PNG named .JPEG too), so a short side of 16
or 24 shrinks them and 48 would upscale them (which prepare never does).
"""
from __future__ import annotations

import io
import json
import shutil
from collections import namedtuple

import pytest
from PIL import Image

from tests.prepare.helpers import dataset_json, digest, trainer, tree_files
from tests.prepare.miniature import make_imagenet
from trainer.data import load_dataset
from trainer.prepare.writer import FAULT_ENV


@pytest.fixture
def official(tmp_path):
    return make_imagenet(tmp_path / "src", "archives")


def _prepare(tmp_path, *flags, env=None, dest="out", command="imagenet", source="src"):
    return trainer("prepare", command, "--source", tmp_path / source, "--dest", tmp_path / dest, *flags, env=env)


def _sizes(files: dict) -> dict[str, set]:
    """{split: the set of (format, mode, size) of its images}."""
    out: dict[str, set] = {}
    for (split, _, _), data in files.items():
        with Image.open(io.BytesIO(data)) as img:
            out.setdefault(split, set()).add((img.format, img.mode, img.size))
    return out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_train_and_val_are_stored_at_their_own_short_sides(tmp_path, official, workers):
    result = _prepare(tmp_path, "--resize-short", "24", "--resize-short-train", "16", "--workers", workers)
    assert result.exit_code == 0, result.output
    got = tree_files(tmp_path / "out")
    assert set(got) == set(official.images)
    assert _sizes(got) == {"train": {("JPEG", "RGB", (21, 16))}, "val": {("JPEG", "RGB", (32, 24))}}
    meta = dataset_json(tmp_path / "out")
    assert (meta["resize_short"], meta["resize_short_train"]) == (24, 16)
    info = load_dataset(tmp_path / "out")    # what `trainer train` reads: val's side for its warning
    assert (info.resize_short, info.resize_short_train) == (24, 16)
    check = trainer("verify", "--data", tmp_path / "out")
    assert check.exit_code == 0, check.output


def test_without_resize_short_val_is_kept_as_it_came(tmp_path, official):
    result = _prepare(tmp_path, "--resize-short-train", "16", "--workers", "2")
    assert result.exit_code == 0, result.output
    got = tree_files(tmp_path / "out")
    assert {k: v for k, v in got.items() if k[0] == "val"} == {k: v for k, v in official.images.items()
                                                               if k[0] == "val"}
    assert _sizes(got)["train"] == {("JPEG", "RGB", (21, 16))}
    meta = dataset_json(tmp_path / "out")
    assert (meta["resize_short"], meta["resize_short_train"]) == (None, 16)
    info = load_dataset(tmp_path / "out")
    assert (info.resize_short, info.resize_short_train) == (None, 16)


def test_a_train_side_above_the_images_leaves_them_as_they_came(tmp_path, official):
    result = _prepare(tmp_path, "--resize-short", "16", "--resize-short-train", "48", "--workers", "2")
    assert result.exit_code == 0, result.output
    got = tree_files(tmp_path / "out")
    assert {k: v for k, v in got.items() if k[0] == "train"} == {k: v for k, v in official.images.items()
                                                                 if k[0] == "train"}, "never upscaled"
    assert _sizes(got)["val"] == {("JPEG", "RGB", (21, 16))}
    assert dataset_json(tmp_path / "out")["resize_short_train"] == 48


def test_a_drawn_val_split_gets_the_val_side(tmp_path):
    from tests.prepare.test_folder import make_pool

    make_pool(tmp_path / "pool")
    result = _prepare(tmp_path, "--val-percent", "25", "--resize-short", "24", "--resize-short-train", "16",
                      "--workers", "2", command="folder", source="pool")
    assert result.exit_code == 0, result.output
    assert _sizes(tree_files(tmp_path / "out")) == {"train": {("JPEG", "RGB", (21, 16))},
                                                    "val": {("JPEG", "RGB", (32, 24))}}


def test_the_single_option_stores_both_splits_as_before(tmp_path, official):
    first = _prepare(tmp_path, "--resize-short", "16", env={FAULT_ENV: "3"})
    assert first.exit_code != 0
    # What the journal holds is what a run before --resize-short-train existed wrote: it resumes.
    options = json.loads((tmp_path / "out" / ".prepare" / "options.json").read_text())
    assert "resize_short_train" not in options and options["resize_short"] == 16
    second = _prepare(tmp_path, "--resize-short", "16")
    assert second.exit_code == 0, second.output
    assert _sizes(tree_files(tmp_path / "out")) == {s: {("JPEG", "RGB", (21, 16))} for s in ("train", "val")}
    meta = dataset_json(tmp_path / "out")
    assert (meta["resize_short"], meta["resize_short_train"]) == (16, None)
    info = load_dataset(tmp_path / "out")
    assert (info.resize_short, info.resize_short_train) == (16, 16)


def test_an_older_dataset_json_means_one_side_for_both(tmp_path, official):
    assert _prepare(tmp_path, "--resize-short", "16").exit_code == 0
    meta = dataset_json(tmp_path / "out")
    del meta["resize_short_train"]
    (tmp_path / "out" / "dataset.json").write_text(json.dumps(meta))
    info = load_dataset(tmp_path / "out")
    assert (info.resize_short, info.resize_short_train) == (16, 16)


def test_a_train_side_equal_to_resize_short_is_the_same_run(tmp_path, official):
    first = _prepare(tmp_path, "--resize-short", "16", env={FAULT_ENV: "3"})
    assert first.exit_code != 0
    second = _prepare(tmp_path, "--resize-short", "16", "--resize-short-train", "16")
    assert second.exit_code == 0, second.output
    assert "3 class folders were already complete" in second.output
    assert dataset_json(tmp_path / "out")["resize_short_train"] is None


@pytest.mark.parametrize("other", [("--resize-short-train", "20"), ()], ids=["another-T", "without-T"])
def test_resuming_with_another_train_side_is_refused_and_keeps_files(tmp_path, official, other):
    first = _prepare(tmp_path, "--resize-short", "24", "--resize-short-train", "16", env={FAULT_ENV: "3"})
    assert first.exit_code != 0
    before = digest(tmp_path / "out")
    result = _prepare(tmp_path, "--resize-short", "24", *other)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "other options (resize_short_train differ)" in text and "same options" in text
    assert digest(tmp_path / "out") == before
    again = _prepare(tmp_path, "--resize-short", "24", "--resize-short-train", "16")
    assert again.exit_code == 0, again.output
    assert "3 class folders were already complete" in again.output


def test_the_space_check_counts_train_at_its_own_side(tmp_path, official, monkeypatch):
    source_bytes = sum((tmp_path / "src" / name).stat().st_size for name in digest(tmp_path / "src"))
    Usage = namedtuple("Usage", "total used free")
    # Half the source free: 256 px for both splits needs ~80% of it; train (96% of ImageNet's images)
    # at 160 px brings that to ~33%.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, source_bytes // 2))
    refused = _prepare(tmp_path, "--resize-short", "256", dest="both")
    assert refused.exit_code == 1 and "Not enough free space" in refused.output
    fits = _prepare(tmp_path, "--resize-short", "256", "--resize-short-train", "160", dest="train-smaller")
    assert fits.exit_code == 0, fits.output


@pytest.mark.parametrize("command", ["imagenet", "tiny-imagenet", "folder"])
def test_help_says_what_the_train_side_costs(command):
    result = trainer("prepare", command, "--help", env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--resize-short-train" in text and "val/ keeps --resize-short S" in text
    assert "upsampled to the largest train resolution R" in text


def test_make_dataset_passes_the_train_side_on(tmp_path, official):
    """`trainer make-dataset` (what `orch data prepare --target aws` runs on its instance): prepare, verify, pack."""
    result = trainer("make-dataset", "imagenet", "--source", tmp_path / "src", "--work", tmp_path / "work",
                     "--out", tmp_path / "shards", "--resize-short", "24", "--resize-short-train", "16")
    assert result.exit_code == 0, result.output
    meta = dataset_json(tmp_path / "work")
    assert (meta["resize_short"], meta["resize_short_train"]) == (24, 16)
    assert _sizes(tree_files(tmp_path / "work"))["train"] == {("JPEG", "RGB", (21, 16))}
    assert (tmp_path / "shards" / "manifest.json").is_file()
