"""Any folder of class folders (torchvision's ImageFolder layout), split into train/ and val/.

The layouts it takes:
  SOURCE/<class>/.../<image>                      one pool of images per class
  SOURCE/train/<class>/.../<image>                the same, under train/ (no val/ yet)
  SOURCE/train/<class>/... and SOURCE/val/<class>/...   already split: kept as it is
A pool is split per class: a seeded random --val-percent of each class's images goes to val/, so
every class keeps its share (Tiny ImageNet's train/ with --val-percent 30 gives the 70/30 split a
course asks for). The draw depends only on the seed, the class and its file names, so a rerun, or
a resumed run, picks the same images.

Images are found as torchvision's ImageFolder finds them: at any depth below the class folder,
links followed, by extension. Hidden files (macOS "._x.jpg", ".DS_Store") are skipped; other
files (Tiny ImageNet's *_boxes.txt) are counted in a note.

Links are followed even where they lead outside the source (unlike an extracted download, see
trees.DirTree): this is the user's own folder, often assembled from links to photos kept
elsewhere, as ImageFolder allows. What is read is only ever written under --dest, by a plain name.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator

from trainer.prepare.catalog import (IMAGE_EXTENSIONS, Entry, Event, Expect, Selection, Source, SourceError,
                                     class_folders, is_image, plain_name)
from trainer.prepare.members import file_bytes

DEFAULT_VAL_PERCENT = 10.0


def find_folder(source: Path, val_percent: float | None, seed: int, dest: Path | None = None) -> Source:
    """The folder's classes and images, with val/ drawn per class when the source has none.

    val_percent None means the default (10%) where a split is needed; it is refused for a source
    that is already split, rather than silently ignored.
    """
    source = Path(source)
    if not source.is_dir():
        raise SourceError(f"{source} is not a folder. Expected {source}/<class>/<images> (or train/<class>/ and "
                          f"val/<class>/); unpack an archive first.")
    if dest is not None and _inside(Path(dest), source):
        raise SourceError(f"--dest {dest} is inside --source {source}: its images would be read back as a class. "
                          f"Pick a --dest outside {source}.")
    if (source / "wnids.txt").is_file():  # Tiny ImageNet's own folder: its val/ is flat, labelled by a file
        raise SourceError(f"{source} is Tiny ImageNet's folder (it has wnids.txt). `trainer prepare tiny-imagenet "
                          f"--source {source}` reads its val/ labels; for a split of train/ alone, pass --source "
                          f"{source / 'train'} here.")
    split_layout = (source / "train").is_dir() and (source / "val").is_dir()
    pool_root = source / "train" if (source / "train").is_dir() and not split_layout else source
    if split_layout and val_percent is not None:
        raise SourceError(f"{source} is already split into train/ and val/, and is kept as it is; --val-percent "
                          f"{val_percent:g} would draw a new val/ only from a folder without one. Leave the flag out, "
                          f"or point --source at {source / 'train'} to split that alone.")
    if split_layout:
        classes = class_folders(source / "train")
        extra = sorted(set(class_folders(source / "val")) - set(classes))
        if extra:
            raise SourceError(f"{source / 'val'} has class folders that train/ lacks: {_first(extra)}. Every val "
                              f"class must be a train class. Nothing was written.")
    else:
        classes = class_folders(pool_root)
    if not classes:
        raise SourceError(f"No class folders in {pool_root}. Expected {pool_root}/<class>/<images>, one folder per "
                          f"class (torchvision's ImageFolder layout).")

    skipped: list[str] = []
    # split -> class -> {stored name: the file it is read from}
    splits: dict[str, dict[str, dict[str, Path]]] = {"train": {}, "val": {}}
    percent = DEFAULT_VAL_PERCENT if val_percent is None else val_percent
    for cls in classes:
        if split_layout:
            for split in ("train", "val"):
                splits[split][cls] = _images(source / split / cls, source, skipped)
        else:
            pool = _images(pool_root / cls, source, skipped)
            val = _draw_val(sorted(pool), percent, seed, cls)
            splits["train"][cls] = {n: p for n, p in pool.items() if n not in val}
            splits["val"][cls] = {n: p for n, p in pool.items() if n in val}
    _refuse_empty(splits, source, split_layout, percent)

    def entries(sel: Selection) -> Iterator[Event]:
        for cls in sorted(sel.classes):
            for split in ("train", "val"):
                if not sel.wants(split, cls):
                    continue
                files = splits[split][cls]
                picked = sel.pick(list(files))
                yield Expect(split, cls, tuple(picked))
                for name in picked:
                    yield Entry(split, cls, name, file_bytes(files[name]))

    notes = []
    if skipped:
        notes.append(f"{len(skipped):,} file(s) that are not images were left out (images end in "
                     f"{', '.join(IMAGE_EXTENSIONS)}): {_first(skipped)}")
    if not split_layout:
        notes.append(f"val/ holds a seeded {percent:g}% of each class's images (--val-percent, --seed {seed}); "
                     f"the same options draw the same split again")
    counts = (len(classes), *(sum(len(f) for f in splits[s].values()) for s in ("train", "val")))
    layout = "split-folders" if split_layout else "class-folders"
    recorded = {} if split_layout else {"val_split": {"percent": percent, "seed": seed}}
    return Source("folder", layout, tuple(classes), {c: c for c in classes}, (source,), entries,
                  listed_counts=counts, notes=tuple(notes), recorded=recorded)


def _draw_val(names: list[str], percent: float, seed: int, cls: str) -> set[str]:
    """A seeded `percent`% of one class's images (at least one, and never all of them)."""
    if len(names) < 2:
        return set()  # _refuse_empty names the class
    k = min(len(names) - 1, max(1, round(len(names) * percent / 100)))
    return set(random.Random(f"{seed}/{cls}").sample(names, k))


def _images(cls_dir: Path, source: Path, skipped: list[str]) -> dict[str, Path]:
    """{stored name: path} of the images below one class folder. A name is the file's own where
    that is unique in the class, else its path below the class folder with "/" as "__"."""
    found: list[Path] = []
    # Folders already walked, by real path: a link back to one would list its images again. A link
    # to the class folder's parent or above (loop -> ..) would also list every other class's images
    # as this one's, and then this class again, so it is not walked at all.
    real_cls = Path(os.path.realpath(cls_dir))
    seen: set[Path] = set()
    for folder, dirs, names in os.walk(cls_dir, followlinks=True):
        real = Path(os.path.realpath(folder))
        if real in seen or (real != real_cls and real_cls.is_relative_to(real)):
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue   # hidden: never an image, and not worth a note
            path = Path(folder) / name
            if is_image(name):
                found.append(path)
            else:
                skipped.append(str(path.relative_to(source)))
    bases = [p.name for p in found]
    unique = len(set(bases)) == len(bases)
    named = {plain_name(p.name if unique else "__".join(p.relative_to(cls_dir).parts), str(p.parent)): p for p in found}
    if len(named) < len(found):
        raise SourceError(f"Images in {cls_dir} would be stored under the same name (their paths joined by \"__\" "
                          f"clash with a file's own name). Nothing was written; rename one of them.")
    return named


def _refuse_empty(splits: dict[str, dict[str, dict[str, Path]]], source: Path, split_layout: bool, percent: float) -> None:
    if split_layout:
        empty = [f"{s}/{c}" for s in ("train", "val") for c, f in splits[s].items() if not f]
        if empty:
            raise SourceError(f"{len(empty)} class folder(s) in {source} hold no images: {_first(empty)}. Every class "
                              f"needs images in both train/ and val/. Nothing was written; add images or remove "
                              f"those classes.")
        return
    few = [c for c in splits["train"] if not splits["val"][c]]
    if few:
        raise SourceError(f"{len(few)} class(es) have fewer than 2 images, too few to split into train and val "
                          f"({percent:g}% to val): {_first(few)}. Nothing was written; add images or remove those "
                          f"class folders.")


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _first(items: list[str], show: int = 5) -> str:
    return ", ".join(items[:show]) + (f" (+{len(items) - show} more)" if len(items) > show else "")
