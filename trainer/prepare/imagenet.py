"""Find ImageNet-1k in the layout it was downloaded in, and read it class by class.

Layouts (each part is found on its own, so a mix such as the train tar plus an extracted devkit
works too):
  official archives  ILSVRC2012_img_train.tar (one nXXXXXXXX.tar per class inside),
                     ILSVRC2012_img_val.tar (50,000 flat images), ILSVRC2012_devkit_t12.tar.gz
  official extracted ILSVRC2012_img_train/ (class tars or class folders), ILSVRC2012_img_val/,
                     ILSVRC2012_devkit_t12/
  Kaggle             imagenet-object-localization-challenge.zip, or its extracted folder:
                     ILSVRC/Data/CLS-LOC/{train,val}, LOC_synset_mapping.txt, LOC_val_solution.csv

Nothing is extracted to disk: the nested tars are read member by member from the outer one, and
zips by their central directory; each image's bytes go straight to the writer.
"""
from __future__ import annotations

import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

from trainer.prepare.catalog import (Entry, Event, Expect, Selection, Source, SourceError, plain_name, plain_names,
                                     reading)
from trainer.prepare.devkit import Labels, devkit_labels, kaggle_labels
from trainer.prepare.members import tar_member
from trainer.prepare.trees import DirTree, Tree, ZipTree, zip_prefix

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT_TGZ = "ILSVRC2012_devkit_t12.tar.gz"
KAGGLE_ZIP = "imagenet-object-localization-challenge.zip"
KAGGLE_DATA = "ILSVRC/Data/CLS-LOC"
META_MAT = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"

LOOKED_FOR = (
    f"the official archives ({TRAIN_TAR}, {VAL_TAR}, {DEVKIT_TGZ}) or their extracted folders "
    f"(ILSVRC2012_img_train/, ILSVRC2012_img_val/, ILSVRC2012_devkit_t12/), or the Kaggle "
    f"download ({KAGGLE_ZIP}, or its extracted {KAGGLE_DATA}/ with LOC_synset_mapping.txt and "
    f"LOC_val_solution.csv)"
)


def find_imagenet(source: Path) -> Source:
    """Detect the layout under `source`; SourceError says what was looked for and found."""
    source = Path(source)
    if not source.is_dir():
        raise SourceError(f"--source {source} is not a folder. Point it at the folder holding the ImageNet download.")
    kaggle = _find_kaggle(source)
    if kaggle is not None:
        return kaggle
    return _find_official(source)


# ---------------------------------------------------------------- official ILSVRC2012 layout

def _first(source: Path, *names: str) -> Path | None:
    for name in names:
        if (source / name).exists():
            return source / name
    return None


def _find_official(source: Path) -> Source:
    train = _first(source, TRAIN_TAR, "ILSVRC2012_img_train", "train")
    val = _first(source, VAL_TAR, "ILSVRC2012_img_val", "val")
    devkit = _first(source, DEVKIT_TGZ, "ILSVRC2012_devkit_t12")
    missing = [what for what, p in (("train images", train), ("val images", val), ("devkit", devkit)) if p is None]
    if len(missing) == 3:
        found = ", ".join(sorted(p.name for p in source.iterdir())[:12]) or "nothing"
        raise SourceError(f"No ImageNet files in {source}. Looked for {LOOKED_FOR}. Found: {found}.")
    if missing:
        raise SourceError(
            f"{source} has only part of ImageNet: missing {', '.join(missing)}. Looked for {LOOKED_FOR}. "
            f"Put the missing file next to the others (nothing was written)."
        )
    labels = _read_devkit(devkit)
    classes = tuple(sorted(labels.names))
    layout = "ilsvrc2012-archives" if train.is_file() and val.is_file() else "ilsvrc2012-extracted"

    def entries(sel: Selection) -> Iterator[Event]:
        yield from _train_entries(train, sel)
        if val.is_dir() and _sorted_val(DirTree(val), "", classes):
            yield from _sorted_val_entries(DirTree(val), "", sel)
        else:
            yield from _flat_val_entries(labels, sel, _val_reader(val))

    canonical = tuple(p for p in (train, val, devkit) if p.is_file())
    return Source("imagenet", layout, classes, labels.names, (train, val, devkit), entries, canonical)


def _read_devkit(devkit: Path) -> Labels:
    if devkit.is_dir():
        tree = DirTree(devkit)
        labels = devkit_labels(tree.read(META_MAT), tree.read(GROUND_TRUTH))
    else:
        found: dict[str, bytes] = {}
        with reading(devkit), tarfile.open(devkit, "r:gz") as tar:
            for member in tar:
                for want in (META_MAT, GROUND_TRUTH):
                    if not member.isdir() and member.name.endswith(want):
                        found[want] = tar_member(tar, member, devkit)
        if len(found) < 2:
            raise SourceError(f"{devkit} lacks {META_MAT} or {GROUND_TRUTH}; it does not look like the ILSVRC2012 "
                              f"devkit.")
        labels = devkit_labels(found[META_MAT], found[GROUND_TRUTH])
    return _checked(labels, f"{META_MAT} of {devkit}", f"{GROUND_TRUTH} of {devkit}")


def _checked(labels: Labels, classes_from: str, val_from: str) -> Labels:
    """`labels` if every class and val image name in them is a plain name (they become folders and
    files under --dest); HostileSource naming the entry and the file it came from otherwise."""
    plain_names(labels.names, classes_from)
    for name, cls in labels.val.items():
        plain_name(name, val_from)
        plain_name(cls, val_from)
    return labels


def _train_entries(train: Path, sel: Selection) -> Iterator[Event]:
    if train.is_file():
        # Random-access mode on the plain outer tar: iterating reads one header per class and
        # seeks over the data, so a rerun skips completed classes without reading their bytes
        # (stream mode "r|" would have to read through them). Nothing is extracted to disk.
        with reading(train), tarfile.open(train, "r:") as outer:
            for member in outer:
                cls = Path(member.name).name.removesuffix(".tar")
                if member.isfile() and sel.wants("train", cls):
                    # The class tar is streamed, never read whole: each image in it is capped.
                    yield from _class_tar_entries(outer.extractfile(member), cls, sel, f"{train}: {member.name}")
        return
    for child in sorted(train.iterdir()):
        cls = child.name.removesuffix(".tar")
        if not sel.wants("train", cls):
            continue
        if child.is_file() and child.suffix == ".tar":
            with reading(child), child.open("rb") as f:
                yield from _class_tar_entries(f, cls, sel, str(child))
        elif child.is_dir():
            yield from _tree_class_entries(DirTree(child), "", "train", cls, sel)


def _class_tar_entries(fileobj, cls: str, sel: Selection, origin: str) -> Iterator[Event]:
    with tarfile.open(fileobj=fileobj, mode="r:") as inner:
        # Folders are skipped; a link or device named like an image is refused when it is read.
        members = [m for m in inner.getmembers() if not m.isdir()]
        keep = set(sel.pick(plain_names([Path(m.name).name for m in members], origin)))
        yield Expect("train", cls, tuple(sorted(keep)))
        for m in members:  # archive order: sequential reads
            name = Path(m.name).name
            if name in keep:
                yield Entry("train", cls, name, tar_member(inner, m, origin))


def _tree_class_entries(tree: Tree, folder: str, split: str, cls: str, sel: Selection) -> Iterator[Event]:
    names = sel.pick(plain_names(tree.files(folder), tree.where(folder)))
    yield Expect(split, cls, tuple(names))
    for name in names:
        yield Entry(split, cls, name, tree.read(f"{folder}/{name}" if folder else name))


def _sorted_val(tree: Tree, folder: str, classes: Iterable[str]) -> bool:
    """Whether the val images were already moved into class folders (val/<wnid>/*.JPEG, as the
    widely used valprep.sh leaves them) instead of sitting in one flat folder."""
    return any(tree.exists(f"{folder}/{cls}" if folder else cls) for cls in classes)


def _sorted_val_entries(tree: Tree, folder: str, sel: Selection) -> Iterator[Event]:
    """Val already sorted into class folders: read each like a train class folder."""
    for cls in sorted(sel.classes):
        if sel.wants("val", cls):
            yield from _tree_class_entries(tree, f"{folder}/{cls}" if folder else cls, "val", cls, sel)


ValReader = Callable[[set[str]], Iterable[tuple[str, bytes]]]


def _val_reader(val: Path) -> ValReader:
    """A function giving (name, bytes) of the wanted val images, in the source's own order."""
    if val.is_dir():
        tree = DirTree(val)
        return lambda wanted: ((n, tree.read(n)) for n in sorted(wanted & set(tree.files(""))))

    def from_tar(wanted: set[str]) -> Iterator[tuple[str, bytes]]:
        with reading(val), tarfile.open(val, "r:") as tar:
            for member in tar:
                name = Path(member.name).name
                if not member.isdir() and name in wanted:
                    yield name, tar_member(tar, member, val)

    return from_tar


def _flat_val_entries(labels: Labels, sel: Selection, read: ValReader) -> Iterator[Event]:
    """Val images sit in one flat folder; their classes come from the labels."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for name, cls in labels.val.items():
        if sel.wants("val", cls):
            by_class[cls].append(name)
    wanted: dict[str, str] = {}
    for cls in sorted(by_class):
        names = sel.pick(by_class[cls])
        yield Expect("val", cls, tuple(names))
        wanted.update((n, cls) for n in names)
    for name, data in read(set(wanted)):
        yield Entry("val", wanted[name], name, data)


# ---------------------------------------------------------------- Kaggle layout

def _find_kaggle(source: Path) -> Source | None:
    tree: Tree | None = None
    path: Path | None = None
    for candidate in sorted(source.glob("*.zip")):
        prefix = zip_prefix(candidate, "LOC_synset_mapping.txt")
        if prefix is not None:
            tree, path, layout = ZipTree(candidate, prefix), candidate, "kaggle-zip"
            break
    if tree is None:
        for root in (source, source / "imagenet-object-localization-challenge"):
            if (root / "LOC_synset_mapping.txt").is_file():
                tree, path, layout = DirTree(root), root, "kaggle-extracted"
                break
    if tree is None:
        return None
    for need in ("LOC_val_solution.csv", f"{KAGGLE_DATA}/train", f"{KAGGLE_DATA}/val"):
        if not tree.exists(need):
            raise SourceError(f"{path} looks like the Kaggle ImageNet download but lacks {need}; "
                              f"download it again with `kaggle competitions download -c imagenet-object-localization-challenge`.")
    labels = _checked(kaggle_labels(tree.read("LOC_synset_mapping.txt"), tree.read("LOC_val_solution.csv")),
                      tree.where("LOC_synset_mapping.txt"), tree.where("LOC_val_solution.csv"))

    def entries(sel: Selection) -> Iterator[Event]:
        for cls in sorted(sel.classes):
            if sel.wants("train", cls):
                yield from _tree_class_entries(tree, f"{KAGGLE_DATA}/train/{cls}", "train", cls, sel)
        if _sorted_val(tree, f"{KAGGLE_DATA}/val", labels.names):
            yield from _sorted_val_entries(tree, f"{KAGGLE_DATA}/val", sel)
            return
        present = set(tree.files(f"{KAGGLE_DATA}/val"))
        read = lambda wanted: ((n, tree.read(f"{KAGGLE_DATA}/val/{n}")) for n in sorted(wanted & present))
        yield from _flat_val_entries(labels, sel, read)

    if layout == "kaggle-zip":
        paths = (path,)
    else:
        paths = tuple(p for p in (path / "ILSVRC", path / "LOC_synset_mapping.txt", path / "LOC_val_solution.csv",
                                  path / "LOC_train_solution.csv", path / "LOC_sample_submission.csv") if p.exists())
    return Source("imagenet", layout, tuple(sorted(labels.names)), labels.names, paths, entries)
