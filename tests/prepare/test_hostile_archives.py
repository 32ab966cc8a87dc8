"""Hostile downloads, in each real layout, through `trainer prepare`: refused with a message naming the
entry and the file it came from, nothing written outside --dest, no code run, no file outside the
source read into the dataset.

Each case starts from a miniature of the real download (miniature.py) and changes one thing: a class
id or file name that is a path ("../" or absolute), a link or device member, a pickle that calls
code, a member that inflates past the cap.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tracemalloc
import zipfile
from pathlib import Path
from typing import Callable

import pytest

from tests.prepare.helpers import trainer, tree_files
from tests.prepare.miniature import WNIDS, jpeg, make_cifar100, make_imagenet, make_tiny, meta_mat
from trainer.prepare import members

# From DEST/<split>/ a class named CLASS_ESCAPE, and from DEST/<split>/<class>/ a file named
# FILE_ESCAPE, would land in the test's tmp_path (DEST is tmp_path/work/out), next to the source.
CLASS_ESCAPE = "../../../escaped"
FILE_ESCAPE = "../../../../escaped.JPEG"
SECRET = b"SECRET-not-an-image-4f1c"
KAGGLE_ZIP = "imagenet-object-localization-challenge.zip"


# --- re-packing a miniature with one member changed -------------------------------------------------

def rewrite_tar(path: Path, changes: dict[str, bytes | tarfile.TarInfo | None]) -> None:
    """Re-pack the tar (gzipped if its name ends .gz): a name maps to its new bytes, to a TarInfo to
    store instead (a link, a device), or to None to drop it; names not yet there are appended."""
    with tarfile.open(path) as tar:
        old = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    kept = [(m.name, d if m.isfile() else m) for m, d in old if m.name not in changes]
    replaced = [(name, c) for name, c in changes.items() if c is not None]
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        for name, item in kept + replaced:
            if isinstance(item, tarfile.TarInfo):
                tar.addfile(item)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(item)
                tar.addfile(info, io.BytesIO(item))


def tar_bytes(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def link(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def rewrite_zip(path: Path, changes: dict[str, bytes | None]) -> None:
    with zipfile.ZipFile(path) as zf:
        old = {i.filename: zf.read(i) for i in zf.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in {**old, **changes}.items():
            if data is not None:
                zf.writestr(name, data)


def member(path: Path, name: str) -> bytes:
    with (zipfile.ZipFile(path) if path.suffix == ".zip" else tarfile.open(path)) as archive:
        return archive.read(name) if isinstance(archive, zipfile.ZipFile) else archive.extractfile(name).read()


# --- what "nothing outside --dest" means ------------------------------------------------------------

def outside(root: Path, dest: Path) -> dict[str, str]:
    """Every file, folder and link under `root` but not under `dest`: relative path -> what it holds."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if path == dest or dest in path.parents:
                continue
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                seen[rel] = "dir"
            else:
                seen[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return seen


def assert_refused(result, *phrases: str) -> None:
    """Exit 1 with a message (not a traceback) holding every phrase, terminal-safe."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "\x1b" not in result.output and "\x00" not in result.output, "control characters reach the terminal"
    for phrase in phrases:
        assert phrase in result.output, (phrase, result.output)


# --- the cases: each changes one thing in a real layout and returns (dataset, phrases) --------------

def official_devkit_class(tmp: Path, wnid: str) -> tuple[str, list[str]]:
    make_imagenet(tmp / "src", "archives")
    devkit = tmp / "src" / "ILSVRC2012_devkit_t12.tar.gz"
    rewrite_tar(devkit, {"ILSVRC2012_devkit_t12/data/meta.mat": meta_mat({WNIDS[0]: wnid})})
    return "imagenet", [repr(wnid), "data/meta.mat of", str(devkit), "Nothing was written"]


def official_val_member(tmp: Path, kind: bytes, target: str, what: str) -> tuple[str, list[str]]:
    make_imagenet(tmp / "src", "archives")
    val = tmp / "src" / "ILSVRC2012_img_val.tar"
    rewrite_tar(val, {"ILSVRC2012_val_00000001.JPEG": link("ILSVRC2012_val_00000001.JPEG", kind, target)})
    return "imagenet", [f"{val}: member 'ILSVRC2012_val_00000001.JPEG' is a {what}", "refused"]


def official_class_tar_name(tmp: Path, name: str) -> tuple[str, list[str]]:
    make_imagenet(tmp / "src", "archives")
    train = tmp / "src" / "ILSVRC2012_img_train.tar"
    rewrite_tar(train, {"n01440764.tar": tar_bytes({name: jpeg(1), "n01440764_1.JPEG": jpeg(2)})})
    return "imagenet", [repr(name), f"{train}: n01440764.tar", "refused"]


def extracted_val_link_out(tmp: Path) -> tuple[str, list[str]]:
    make_imagenet(tmp / "src", "extracted")
    image = tmp / "src" / "ILSVRC2012_img_val" / "ILSVRC2012_val_00000001.JPEG"
    image.unlink()
    image.symlink_to(tmp / "secret.JPEG")
    return "imagenet", [f"{image} leads outside", "not followed"]


def kaggle_zip(tmp: Path, changed: Callable[[bytes], dict[str, bytes | None]], read: str) -> Path:
    """The Kaggle zip with the members changed(bytes of member `read`) in place."""
    make_imagenet(tmp / "src", "kaggle-zip")
    path = tmp / "src" / KAGGLE_ZIP
    rewrite_zip(path, changed(member(path, read)))
    return path


def kaggle_val_image(tmp: Path, image_id: str) -> tuple[str, list[str]]:
    def swap(csv: bytes) -> dict[str, bytes]:
        return {"LOC_val_solution.csv": csv.replace(b"ILSVRC2012_val_00000001,", image_id.encode() + b",")}
    path = kaggle_zip(tmp, swap, "LOC_val_solution.csv")
    return "imagenet", [repr(image_id + ".JPEG"), f"LOC_val_solution.csv in {path}", "Nothing was written"]


def kaggle_class(tmp: Path, wnid: str) -> tuple[str, list[str]]:
    def swap(mapping: bytes) -> dict[str, bytes]:
        return {"LOC_synset_mapping.txt": mapping.replace(WNIDS[0].encode(), wnid.encode(), 1)}
    path = kaggle_zip(tmp, swap, "LOC_synset_mapping.txt")
    return "imagenet", [repr(wnid), f"LOC_synset_mapping.txt in {path}", "Nothing was written"]


def kaggle_member_dotdot(tmp: Path) -> tuple[str, list[str]]:
    folder = f"ILSVRC/Data/CLS-LOC/train/{WNIDS[0]}"
    path = kaggle_zip(tmp, lambda _: {f"{folder}/..": jpeg(3)}, "LOC_synset_mapping.txt")
    return "imagenet", ["'..'", f"{folder} in {path}", "refused"]


def tiny_val_name(tmp: Path, zipped: bool, name: str) -> tuple[str, list[str]]:
    make_tiny(tmp / "src", zipped)
    line = lambda text: text.replace(b"val_0.JPEG\t", name.encode() + b"\t")
    if zipped:
        path = tmp / "src" / "tiny-imagenet-200.zip"
        rewrite_zip(path, {"tiny-imagenet-200/val/val_annotations.txt":
                           line(member(path, "tiny-imagenet-200/val/val_annotations.txt"))})
        where = f"val/val_annotations.txt in {path}"
    else:
        path = tmp / "src" / "tiny-imagenet-200" / "val" / "val_annotations.txt"
        path.write_bytes(line(path.read_bytes()))
        where = str(path)
    return "tiny-imagenet", [repr(name), where, "Nothing was written"]


def tiny_zip_class(tmp: Path, wnid: str) -> tuple[str, list[str]]:
    make_tiny(tmp / "src", zipped=True)
    path = tmp / "src" / "tiny-imagenet-200.zip"
    rewrite_zip(path, {"tiny-imagenet-200/wnids.txt": member(path, "tiny-imagenet-200/wnids.txt") + wnid.encode()})
    return "tiny-imagenet", [repr(wnid), f"wnids.txt in {path}", "Nothing was written"]


def tiny_dir_link_out(tmp: Path) -> tuple[str, list[str]]:
    make_tiny(tmp / "src", zipped=False)
    image = tmp / "src" / "tiny-imagenet-200" / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_0.JPEG"
    image.unlink()
    image.symlink_to(tmp / "secret.JPEG")
    return "tiny-imagenet", [f"{image} leads outside", "not followed"]


class RunsCode:
    """Unpickled by plain pickle.load, this runs `call(*args)`."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def cifar_member(tmp: Path, name: str, change: Callable[[dict], object]) -> Path:
    """Replace cifar-100-python/<name> by the pickle of change(its dict)."""
    make_cifar100(tmp / "src")
    path = tmp / "src" / "cifar-100-python.tar.gz"
    blob = pickle.loads(member(path, f"cifar-100-python/{name}"))
    rewrite_tar(path, {f"cifar-100-python/{name}": pickle.dumps(change(blob))})
    return path


def cifar_runs_code(tmp: Path, name: str, call, what: str) -> tuple[str, list[str]]:
    command = f"touch {tmp / 'MARKER'}"
    code = command if call is os.system else f"__import__('os').system({command!r})"
    path = cifar_member(tmp, name, lambda d: {**d, "fine_labels": RunsCode(call, code)})
    return "cifar100", [f"{path}: member 'cifar-100-python/{name}' is a pickle that calls {what}",
                        "refused without running it"]


def cifar_name(tmp: Path, key: str, bad: str) -> tuple[str, list[str]]:
    name = "meta" if key == "fine_label_names" else "train"
    path = cifar_member(tmp, name, lambda d: {**d, key: [bad] + list(d[key])[1:]})
    return "cifar100", [repr(bad), f"'{key}' of {path}: member 'cifar-100-python/{name}'", "refused"]


def cifar_meta_link(tmp: Path) -> tuple[str, list[str]]:
    make_cifar100(tmp / "src")
    path = tmp / "src" / "cifar-100-python.tar.gz"
    rewrite_tar(path, {"cifar-100-python/meta": link("cifar-100-python/meta", tarfile.SYMTYPE, "/etc/passwd")})
    return "cifar100", ["member 'cifar-100-python/meta' is a symbolic link to '/etc/passwd'", "Nothing was written"]


CASES: dict[str, Callable[[Path], tuple[str, list[str]]]] = {
    "devkit-class-dotdot": lambda t: official_devkit_class(t, CLASS_ESCAPE),
    "devkit-class-absolute": lambda t: official_devkit_class(t, str(t / "abs-escaped")),
    "val-tar-symlink-out": lambda t: official_val_member(t, tarfile.SYMTYPE, str(t / "secret.JPEG"),
                                                         f"symbolic link to '{t / 'secret.JPEG'}'"),
    "val-tar-hardlink": lambda t: official_val_member(t, tarfile.LNKTYPE, "ILSVRC2012_val_00000002.JPEG",
                                                      "hard link to 'ILSVRC2012_val_00000002.JPEG'"),
    "val-tar-device": lambda t: official_val_member(t, tarfile.CHRTYPE, "", "device"),
    "class-tar-backslash": lambda t: official_class_tar_name(t, "..\\..\\..\\..\\escaped.JPEG"),
    "class-tar-terminal-escape": lambda t: official_class_tar_name(t, "x\x1b]0;pwned\x07.JPEG"),
    "extracted-val-link-out": extracted_val_link_out,
    "kaggle-csv-dotdot": lambda t: kaggle_val_image(t, FILE_ESCAPE.removesuffix(".JPEG")),
    "kaggle-csv-absolute": lambda t: kaggle_val_image(t, str(t / "abs-escaped")),
    "kaggle-class-dotdot": lambda t: kaggle_class(t, CLASS_ESCAPE),
    "kaggle-member-dotdot": kaggle_member_dotdot,
    "tiny-zip-val-dotdot": lambda t: tiny_val_name(t, True, FILE_ESCAPE),
    "tiny-dir-val-dotdot": lambda t: tiny_val_name(t, False, FILE_ESCAPE),
    "tiny-dir-val-absolute": lambda t: tiny_val_name(t, False, str(t / "abs-escaped.JPEG")),
    "tiny-zip-class-absolute": lambda t: tiny_zip_class(t, str(t / "abs-escaped")),
    "tiny-dir-link-out": tiny_dir_link_out,
    "cifar-meta-os-system": lambda t: cifar_runs_code(t, "meta", os.system, "posix.system"),
    "cifar-train-eval": lambda t: cifar_runs_code(t, "train", eval, "builtins.eval"),
    "cifar-class-dotdot": lambda t: cifar_name(t, "fine_label_names", CLASS_ESCAPE),
    "cifar-filename-absolute": lambda t: cifar_name(t, "filenames", str(t / "abs-escaped.png")),
    "cifar-meta-symlink": cifar_meta_link,
}


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_download_is_refused_naming_the_entry(tmp_path, case):
    (tmp_path / "secret.JPEG").write_bytes(SECRET)
    dataset, phrases = CASES[case](tmp_path)
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()   # --dest's parent is made with it; anything else new outside it is an escape
    before = outside(tmp_path, dest)
    result = trainer("prepare", dataset, "--source", tmp_path / "src", "--dest", dest, "--workers", "1")
    assert_refused(result, *phrases)
    assert outside(tmp_path, dest) == before, "something was written outside --dest"
    assert not (tmp_path / "MARKER").exists(), "the pickle's code ran"
    for path in dest.rglob("*") if dest.exists() else ():
        assert not path.is_file() or SECRET not in path.read_bytes(), f"{path} holds a file from outside the source"


# --- decompression bombs -------------------------------------------------------------------------------

def test_a_zip_bomb_image_is_refused_before_it_is_inflated(tmp_path):
    """A 1 MB member of the Kaggle zip that inflates past the cap (257 MiB of zeros) is refused from
    its declared size: memory stays far below what reading it whole would take."""
    make_imagenet(tmp_path / "src", "kaggle-zip")
    path = tmp_path / "src" / KAGGLE_ZIP
    bomb = f"ILSVRC/Data/CLS-LOC/train/{WNIDS[0]}/{WNIDS[0]}_1000.JPEG"
    rewrite_zip(path, {bomb: None})
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as zf, \
            zf.open(bomb, "w", force_zip64=True) as f:
        for _ in range(members.MAX_MEMBER_BYTES // 2**20 + 1):
            f.write(bytes(2**20))
    assert path.stat().st_size < 4 * 2**20
    dest = tmp_path / "work" / "out"
    tracemalloc.start()
    try:
        result = trainer("prepare", "imagenet", "--source", tmp_path / "src", "--dest", dest, "--workers", "1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_refused(result, f"{path}: member {bomb!r} is 269,484,032 bytes unpacked", "decompression bomb",
                   f"kept in {dest} (nothing was written outside it)")
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB allocated"


@pytest.mark.parametrize("layout", ["tiny-zip", "cifar-tgz"])
def test_a_member_past_the_cap_is_refused_naming_it(tmp_path, monkeypatch, layout):
    """The cap holds for label files and tar members too (lowered here, so the test stays small)."""
    monkeypatch.setattr(members, "MAX_MEMBER_BYTES", 16 * 2**10)
    if layout == "tiny-zip":
        make_tiny(tmp_path / "src", zipped=True)
        path, name, dataset = tmp_path / "src" / "tiny-imagenet-200.zip", "tiny-imagenet-200/words.txt", "tiny-imagenet"
        rewrite_zip(path, {name: member(path, name) + bytes(2**20)})   # 1 MiB of zeros: a ~1 KB member
    else:
        make_cifar100(tmp_path / "src")    # its train pickle (15 rows) is ~46 KB
        path, name, dataset = tmp_path / "src" / "cifar-100-python.tar.gz", "cifar-100-python/train", "cifar100"
    result = trainer("prepare", dataset, "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert_refused(result, f"{path}: member {name!r} is", "more than any file of a real download (16,384 at most)",
                   "Nothing was written")
    assert not (tmp_path / "out").exists()


def test_the_read_itself_is_capped_when_a_declared_size_lies(monkeypatch):
    # A file in /proc declares 0 bytes; a damaged header may declare fewer than come.
    monkeypatch.setattr(members, "MAX_MEMBER_BYTES", 10)
    with pytest.raises(members.HostileSource, match="'x' is over 11 bytes"):
        members._capped(io.BytesIO(bytes(1000)), declared=0, what="'x'")


# --- CIFAR-100 pickles: real variants still read, damaged ones are a message -----------------------

def test_cifar_pickles_with_bytes_keys_still_read(tmp_path):
    """Copies re-pickled from Python 3 with encoding="bytes" have b"fine_labels" keys and bytes names
    (protocol 2 writes them through _codecs.encode, which the unpickler allows)."""
    pixels, _ = make_cifar100(tmp_path / "src")
    path = tmp_path / "src" / "cifar-100-python.tar.gz"
    as_bytes = lambda v: [x.encode() for x in v] if isinstance(v, list) and v and isinstance(v[0], str) else v
    changes = {}
    for name in ("meta", "train", "test"):
        blob = pickle.loads(member(path, f"cifar-100-python/{name}"))
        changes[f"cifar-100-python/{name}"] = pickle.dumps({k.encode(): as_bytes(v) for k, v in blob.items()},
                                                           protocol=2)
    rewrite_tar(path, changes)
    result = trainer("prepare", "cifar100", "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert set(tree_files(tmp_path / "out")) == set(pixels)


@pytest.mark.parametrize("change, phrase", [
    (lambda d: {k: v for k, v in d.items() if k != "fine_labels"}, "lacks 'fine_labels'"),
    (lambda d: {**d, "fine_labels": [99] * len(d["fine_labels"])}, "has the fine label 99, but meta lists 5"),
    (lambda d: {**d, "data": d["data"][:, :100]}, "does not fit together"),
    (lambda d: {**d, "data": [[1, 2], [3]]}, "does not fit together: 15 file names, 15 labels, and pixel rows of a list"),
    (lambda d: ["not", "a", "dict"], "holds a list, not the dict"),
], ids=["missing-key", "label-out-of-range", "short-rows", "ragged-rows", "not-a-dict"])
def test_a_cifar_pickle_that_does_not_fit_is_a_message(tmp_path, change, phrase):
    path = cifar_member(tmp_path, "train", change)
    result = trainer("prepare", "cifar100", "--source", tmp_path / "src", "--dest", tmp_path / "out")
    assert_refused(result, f"{path}: member 'cifar-100-python/train' {phrase}")


# --- a folder of the user's own: a link loop ----------------------------------------------------------

def test_a_link_up_out_of_a_class_folder_lists_each_image_once(tmp_path):
    """cat/loop -> .. would walk the source again from the top: every class's images as cat's,
    and cat's own again through loop/cat (os.walk with links followed never ends on such a loop)."""
    made = {}
    for cls in ("cat", "dog"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for k in range(4):
            made[(cls, f"{cls}_{k}.jpg")] = data = jpeg(len(made))
            (tmp_path / "src" / cls / f"{cls}_{k}.jpg").write_bytes(data)
    (tmp_path / "src" / "cat" / "loop").symlink_to("..")
    (tmp_path / "src" / "cat" / "sub").mkdir()
    (tmp_path / "src" / "cat" / "sub" / "up").symlink_to("../..")
    result = trainer("prepare", "folder", "--source", tmp_path / "src", "--dest", tmp_path / "out",
                     "--val-percent", "50")
    assert result.exit_code == 0, result.output
    got = {(c, n): data for (_, c, n), data in tree_files(tmp_path / "out").items()}
    assert got == made


# --- damaged label files: a message, not a traceback ---------------------------------------------------

def damaged_ground_truth(tmp: Path) -> tuple[str, list[str]]:
    make_imagenet(tmp / "src", "archives")
    devkit = tmp / "src" / "ILSVRC2012_devkit_t12.tar.gz"
    rewrite_tar(devkit, {"ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": b"1\n9999\n"})
    return "imagenet", ["line 2 of the devkit's data/ILSVRC2012_validation_ground_truth.txt is '9999'"]


def damaged_meta_mat(tmp: Path) -> tuple[str, list[str]]:
    make_imagenet(tmp / "src", "archives")
    devkit = tmp / "src" / "ILSVRC2012_devkit_t12.tar.gz"
    rewrite_tar(devkit, {"ILSVRC2012_devkit_t12/data/meta.mat": b"not a MATLAB file"})
    return "imagenet", ["data/meta.mat is not the ILSVRC2012 one"]


def damaged_kaggle_csv(tmp: Path) -> tuple[str, list[str]]:
    kaggle_zip(tmp, lambda csv: {"LOC_val_solution.csv": csv.replace(b"ImageId", b"Image", 1)}, "LOC_val_solution.csv")
    return "imagenet", ["line 2 of LOC_val_solution.csv has no ImageId"]


def damaged_tiny_annotations(tmp: Path) -> tuple[str, list[str]]:
    make_tiny(tmp / "src", zipped=False)
    path = tmp / "src" / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    path.write_bytes(path.read_bytes() + b"val_9.JPEG n01440764 0 1 60 62\n")  # spaces where tabs belong
    return "tiny-imagenet", [str(path), "is not 'name<TAB>wnid<TAB>box'"]


DAMAGED = {"devkit-ground-truth": damaged_ground_truth, "devkit-meta-mat": damaged_meta_mat,
           "kaggle-csv-columns": damaged_kaggle_csv, "tiny-annotation-line": damaged_tiny_annotations}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_label_file_is_a_message_naming_the_line(tmp_path, case):
    dataset, phrases = DAMAGED[case](tmp_path)
    result = trainer("prepare", dataset, "--source", tmp_path / "src", "--dest", tmp_path / "out", "--workers", "1")
    assert_refused(result, *phrases)
