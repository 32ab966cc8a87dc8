"""`trainer prepare folder`: any ImageFolder-style folder, with val/ drawn per class when it has none.

What a user with their own photos (or Tiny ImageNet's train/ for a 70/30 split) expects: every
image lands in exactly one split, each class keeps its share in val/, the same seed draws the same
split (and a resumed run the same images), an already split folder is kept as it is, nested and
non-image files are handled as ImageFolder handles them, and a source that can't be split is
refused before anything is written.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prepare.helpers import dataset_json, digest, trainer, tree_files
from tests.prepare.miniature import jpeg, make_tiny
from trainer.prepare.writer import FAULT_ENV

PER_CLASS = {"cat": 20, "dog": 10, "owl": 7}


def make_pool(root: Path, per_class: dict[str, int] = PER_CLASS) -> dict[str, dict[str, bytes]]:
    """root/<class>/<class>_<k>.jpg; returns {class: {name: bytes}}."""
    made: dict[str, dict[str, bytes]] = {}
    seed = 0
    for cls, n in per_class.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            seed += 1
            name = f"{cls}_{k:02d}.jpg"
            data = jpeg(seed)
            (root / cls / name).write_bytes(data)
            made.setdefault(cls, {})[name] = data
    return made


def prepare(source, dest, *flags, env=None):
    return trainer("prepare", "folder", "--source", source, "--dest", dest, *flags, env=env)


def split_of(out: Path) -> dict[str, dict[str, set[str]]]:
    got = tree_files(out)
    return {s: {c: {n for (s2, c2, n) in got if s2 == s and c2 == c} for c in PER_CLASS} for s in ("train", "val")}


def test_a_flat_folder_is_split_per_class_every_image_once(tmp_path):
    made = make_pool(tmp_path / "src")
    r = prepare(tmp_path / "src", tmp_path / "out", "--val-percent", "30")
    assert r.exit_code == 0, r.output
    got = tree_files(tmp_path / "out")
    for cls, images in made.items():
        train = {n for (s, c, n) in got if s == "train" and c == cls}
        val = {n for (s, c, n) in got if s == "val" and c == cls}
        assert not train & val and train | val == set(images), cls
        assert len(val) == round(len(images) * 0.3), cls   # stratified: each class keeps its share
    assert all(data == made[c][n] for (s, c, n), data in got.items()), "images are stored as they came"
    meta = dataset_json(tmp_path / "out")
    assert meta["dataset"] == "folder" and meta["classes"] == sorted(PER_CLASS)
    assert meta["val_split"] == {"percent": 30.0, "seed": 0}
    assert meta["counts"]["val"] == {"cat": 6, "dog": 3, "owl": 2}
    assert "seeded 30% of each class's images" in r.output
    sha1 = {f"{c}/{n}": hashlib.sha1(d).hexdigest() for c, imgs in made.items() for n, d in imgs.items()}
    assert digest(tmp_path / "src") == sha1, "the source is untouched"


def test_the_same_seed_draws_the_same_split_and_another_seed_another(tmp_path):
    make_pool(tmp_path / "src")
    for dest, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert prepare(tmp_path / "src", tmp_path / dest, "--seed", seed).exit_code == 0
    a, b, c = (split_of(tmp_path / d) for d in "abc")
    assert a == b
    assert a["val"] != c["val"]
    assert {k: len(v) for k, v in a["val"].items()} == {"cat": 2, "dog": 1, "owl": 1}   # the default 10%, at least 1


def test_an_interrupted_split_resumes_with_the_same_draw(tmp_path):
    make_pool(tmp_path / "src")
    whole = prepare(tmp_path / "src", tmp_path / "whole", "--val-percent", "25")
    assert whole.exit_code == 0, whole.output
    first = prepare(tmp_path / "src", tmp_path / "out", "--val-percent", "25", env={FAULT_ENV: "2"})
    assert first.exit_code != 0
    second = prepare(tmp_path / "src", tmp_path / "out", "--val-percent", "25")
    assert second.exit_code == 0, second.output
    assert "2 class folders were already complete" in second.output
    assert tree_files(tmp_path / "out") == tree_files(tmp_path / "whole")
    other = prepare(tmp_path / "src", tmp_path / "out", "--val-percent", "40")
    assert other.exit_code == 1 and "val_split" in other.output, other.output


def test_a_train_only_folder_gets_its_val_drawn_and_resized(tmp_path):
    made = make_pool(tmp_path / "src" / "train")
    r = prepare(tmp_path / "src", tmp_path / "out", "--resize-short", "16", "--workers", "2")
    assert r.exit_code == 0, r.output
    got = tree_files(tmp_path / "out")
    assert {(c, n) for (_, c, n) in got} == {(c, n) for c, imgs in made.items() for n in imgs}
    from PIL import Image

    path = next((tmp_path / "out" / "val" / "cat").iterdir())
    assert min(Image.open(path).size) == 16


def test_an_already_split_folder_is_kept_as_it_is(tmp_path):
    train = make_pool(tmp_path / "src" / "train")
    val = make_pool(tmp_path / "src" / "val", {"cat": 2, "dog": 1, "owl": 1})
    r = prepare(tmp_path / "src", tmp_path / "out")
    assert r.exit_code == 0, r.output
    got = tree_files(tmp_path / "out")
    expected = {("train", c, n): d for c, imgs in train.items() for n, d in imgs.items()}
    expected |= {("val", c, n): d for c, imgs in val.items() for n, d in imgs.items()}
    assert got == expected
    assert "val_split" not in dataset_json(tmp_path / "out")
    refused = prepare(tmp_path / "src", tmp_path / "out2", "--val-percent", "20")
    assert refused.exit_code == 1 and "already split into train/ and val/" in refused.output, refused.output
    assert not (tmp_path / "out2").exists()


def test_tiny_imagenets_train_folder_splits_70_30_as_a_course_asks(tmp_path):
    """Nested images (train/<wnid>/images/*.JPEG) are found as ImageFolder finds them; the boxes
    files are left out and counted; hidden macOS files are skipped."""
    truth = make_tiny(tmp_path / "dl", zipped=False)
    train = tmp_path / "dl" / "tiny-imagenet-200" / "train"
    (train / truth.classes[0] / "images" / "._n0_0.JPEG").write_bytes(b"\0\5\26\7 AppleDouble")
    r = prepare(train, tmp_path / "out", "--val-percent", "30")
    assert r.exit_code == 0, r.output
    got = tree_files(tmp_path / "out")
    originals = {(c, n): d for (s, c, n), d in truth.images.items() if s == "train"}
    assert {(c, n): d for (_, c, n), d in got.items()} == originals
    assert all(sum(1 for (s, c2, _) in got if s == "val" and c2 == c) == 1 for c in truth.classes)  # 30% of 3
    assert f"{len(truth.classes)} file(s) that are not images were left out" in r.output
    assert "_boxes.txt" in r.output and "._n0_0" not in r.output
    verified = trainer("verify", "--data", tmp_path / "out")
    assert verified.exit_code == 0, verified.output


def test_the_same_file_name_in_two_subfolders_keeps_both(tmp_path):
    seed = 0
    for sub in ("day", "night"):
        for cls in ("a", "b"):
            (tmp_path / "src" / cls / sub).mkdir(parents=True, exist_ok=True)
            for k in range(3):
                seed += 1
                (tmp_path / "src" / cls / sub / f"{k}.jpg").write_bytes(jpeg(seed))
    r = prepare(tmp_path / "src", tmp_path / "out", "--val-percent", "50")
    assert r.exit_code == 0, r.output
    names = {n for (_, c, n) in tree_files(tmp_path / "out") if c == "a"}
    assert names == {f"{sub}__{k}.jpg" for sub in ("day", "night") for k in range(3)}


def test_a_link_back_up_the_tree_is_walked_once(tmp_path):
    make_pool(tmp_path / "src")
    os.symlink(tmp_path / "src" / "cat", tmp_path / "src" / "cat" / "again")   # cat/again -> cat
    os.symlink(tmp_path / "src" / "owl", tmp_path / "src" / "dog" / "owls")     # another class's images: ImageFolder's rule
    r = prepare(tmp_path / "src", tmp_path / "out", "--val-percent", "50")
    assert r.exit_code == 0, r.output
    got = tree_files(tmp_path / "out")
    assert sum(1 for (_, c, _) in got if c == "cat") == PER_CLASS["cat"]
    assert sum(1 for (_, c, _) in got if c == "dog") == PER_CLASS["dog"] + PER_CLASS["owl"]


@pytest.mark.parametrize("case, why", [
    ("one-image", "fewer than 2 images, too few to split"),
    ("no-classes", "No class folders in"),
    ("dest-inside", "is inside --source"),
    ("empty-val-class", "hold no images: val/owl"),
    ("val-only-class", "has class folders that train/ lacks: fox"),
    ("tiny-imagenet-root", "prepare tiny-imagenet"),
])
def test_a_source_that_cannot_be_split_is_refused_before_anything_is_written(tmp_path, case, why):
    src, dest = tmp_path / "src", tmp_path / "out"
    if case == "one-image":
        make_pool(src, {"cat": 5, "dog": 1})
    elif case == "no-classes":
        src.mkdir()
        (src / "loose.jpg").write_bytes(jpeg(1))
    elif case == "tiny-imagenet-root":
        make_tiny(tmp_path / "dl", zipped=False)
        src = tmp_path / "dl" / "tiny-imagenet-200"
    elif case == "dest-inside":
        make_pool(src)
        dest = src / "prepared"
    else:
        make_pool(src / "train")
        make_pool(src / "val", {"cat": 1, "dog": 1, "owl": 0} if case == "empty-val-class"
                  else {"cat": 1, "dog": 1, "owl": 1, "fox": 1})
    before = digest(src)
    r = prepare(src, dest)
    assert r.exit_code == 1 and why in r.output, r.output
    assert "Traceback" not in r.output
    assert not dest.exists() and digest(src) == before


@pytest.mark.parametrize("value", ["0", "100", "-5", "nan"])
def test_an_out_of_range_val_percent_is_a_usage_error(tmp_path, value):
    make_pool(tmp_path / "src")
    r = prepare(tmp_path / "src", tmp_path / "out", "--val-percent", value)
    assert r.exit_code == 2 and "--val-percent" in r.output and "out of range" in r.output, r.output
    assert not (tmp_path / "out").exists()


def test_the_prepared_folder_trains(tmp_path):
    """The point of it: `trainer train` runs on what `prepare folder` wrote (one tiny epoch, CPU)."""
    make_pool(tmp_path / "src")
    assert prepare(tmp_path / "src", tmp_path / "data", "--val-percent", "20").exit_code == 0
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run(
        [sys.executable, "-m", "trainer", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
         "--arch", "simple_cnn", "--epochs", "1", "--batch-size", "8", "--workers", "0",
         "--set", "train_res=32", "--set", "eval_res=32", "--set", "eval_resize=32"],
        capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert "on 3 classes" in r.stdout + r.stderr
