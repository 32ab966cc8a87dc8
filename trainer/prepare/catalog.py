"""What a source offers and what a run asks of it: the records shared by every dataset reader.

A reader (imagenet.py, tiny.py, cifar.py) turns the files as distributed into a `Source`; the
writer consumes the `Expect` / `Entry` events that `Source.entries(selection)` yields. Keeping the
readers to this one shape is what lets the writer, the journal and the progress bar be shared.
"""
from __future__ import annotations

import os
import random
import re
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Union

from trainer.prepare.shrink import PART

SPLITS = ("train", "val")

# torchvision's IMG_EXTENSIONS, which training lists images with (compared case-insensitively).
# Copied, not imported, so that `trainer verify` and `trainer prepare` need no torch;
# tests/prepare/test_verify.py checks that the two agree.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image(path: str) -> bool:
    """Whether training reads this file (and verify checks it): an image ending whose name is not
    hidden. Hidden files are never images: macOS copies add "._x.jpg" metadata next to each x.jpg,
    which torchvision's rule alone would take for an image that then fails to decode."""
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def class_folders(split_dir: Path) -> list[str]:
    """The class folders of a split (or of any ImageFolder root), sorted: hidden ones are not classes.
    Training, verify and `prepare folder` list them alike."""
    return sorted(e.name for e in split_dir.iterdir() if e.is_dir() and not e.name.startswith("."))


# Full-size counts (classes, train images, val images) that `trainer verify --expect` checks.
FULL_COUNTS: dict[str, tuple[int, int, int]] = {
    "imagenet": (1000, 1_281_167, 50_000),
    "tiny-imagenet": (200, 100_000, 10_000),
    "cifar100": (100, 50_000, 10_000),
}


def typical_per_class(counts: tuple[int, int, int], max_per_class: int | None = None) -> dict[str, float]:
    """Images per class and split in the full dataset (`counts`: classes, train and val images;
    ImageNet: ~1281 train, 50 val per class), capped by --max-per-class: the progress bar's
    estimate for classes not yet opened."""
    classes, train, val = counts
    per = {"train": train / classes, "val": val / classes}
    return {s: min(n, max_per_class) if max_per_class else n for s, n in per.items()}


@dataclass(frozen=True)
class Selection:
    """Which classes to write, how many images each at most, and which (split, class) are done."""

    classes: frozenset[str]
    max_per_class: int | None = None
    done: frozenset[tuple[str, str]] = frozenset()

    def wants(self, split: str, cls: str) -> bool:
        return cls in self.classes and (split, cls) not in self.done

    def pick(self, names: list[str]) -> list[str]:
        """The images kept for one class: the first N by name, so a rerun picks the same ones."""
        # Hidden names are never images: macOS re-packs add "._x.JPEG" metadata files.
        names = sorted(n for n in names if not n.startswith(".") and n not in ("", ".."))
        return names if self.max_per_class is None else names[: self.max_per_class]


@dataclass(frozen=True)
class Expect:
    """The full list of images one (split, class) will get; it is complete when all are written."""

    split: str
    cls: str
    names: tuple[str, ...]

    def __post_init__(self):
        # The backstop: readers check names where they read them, naming the file; whatever
        # slips past a reader is still never joined to --dest (writer.py: dest/split/cls/name).
        plain_name(self.cls, "The source")
        for name in self.names:
            plain_name(name, "The source")


@dataclass(frozen=True)
class Entry:
    """One image: where it goes and its bytes as stored in the source (or encoded, for CIFAR)."""

    split: str
    cls: str
    name: str
    data: bytes

    def __post_init__(self):
        plain_name(self.cls, "The source")
        plain_name(self.name, "The source")


Event = Union[Expect, Entry]


@dataclass(frozen=True)
class Source:
    """A dataset found on disk: its classes, names, the files it came from, and a reader."""

    dataset: str                       # "imagenet" | "tiny-imagenet" | "cifar100" | "folder"
    layout: str                        # e.g. "ilsvrc2012-archives", "kaggle-zip"
    classes: tuple[str, ...]           # sorted folder names; index = position
    names: Mapping[str, str]           # folder -> human-readable name
    paths: tuple[Path, ...]            # the files/folders read (what --delete-source removes)
    entries: Callable[[Selection], Iterator[Event]] = field(repr=False)
    # The archives as distributed, whose published MD5 --verify-checksums compares (checksums.py).
    canonical: tuple[Path, ...] = ()
    # Classes, train and val images, for a source listed in full before anything is read (a
    # folder); the others have their published FULL_COUNTS.
    listed_counts: tuple[int, int, int] | None = None
    notes: tuple[str, ...] = ()        # what the reader left out or decided, for the summary
    # Choices the reader made that a rerun must make again (a folder's val/ draw): recorded with the
    # run's options, so a rerun that would choose otherwise is refused, and in dataset.json.
    recorded: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        for cls in self.classes:
            plain_name(cls, f"The {self.layout} source ({', '.join(str(p) for p in self.paths)})")

    @property
    def full_counts(self) -> tuple[int, int, int]:
        return self.listed_counts or FULL_COUNTS[self.dataset]

    @property
    def size_bytes(self) -> int:
        return sum(_size(p) for p in self.paths)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def subset_classes(classes: tuple[str, ...], percent: float | None, seed: int) -> tuple[str, ...]:
    """A seeded random `percent`% of the classes (at least one), sorted; all of them when None."""
    if percent is None or percent >= 100:
        return tuple(sorted(classes))
    if not 0 < percent:
        raise ValueError(f"--subset-percent must be in (0, 100], got {percent}")
    k = max(1, round(len(classes) * percent / 100))
    return tuple(sorted(random.Random(seed).sample(sorted(classes), k)))


class SourceError(Exception):
    """The source folder does not hold what the command needs; the message says what to do."""


class HostileSource(SourceError):
    """The source holds what no real download does: a name that is a path, a member larger than any
    real file, a link where a file belongs, a pickle that calls code. Refused, never followed."""


# Longest file name Linux file systems take (ext4, xfs, btrfs: 255 bytes), less what the writer adds
# to an image's name for its temp file (".<name>.part", shrink.write_atomic).
NAME_MAX_BYTES = 255 - len("." + PART)
# Either separator: a "\\" name is a path once the folder is copied to Windows or read by a tool that
# takes both. Control characters are Unicode's Cc (C0, DEL, C1): no real name has one.
_SEPARATOR = re.compile(r"[/\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain_name(name: object, origin: str) -> str:
    """`name` unchanged if it is one plain path component, else HostileSource naming it and `origin`
    (the file it was read from).

    Every class id and file name read from a source passes here before it is joined to --dest or to
    the source folder: "../x" or "/etc/x" would write or read outside them, and a control character
    would end up in a terminal and in every tool that lists the folder.
    """
    why = _why_not_plain(name)
    if why is None:
        return name
    shown = repr(name) if len(repr(name)) <= 200 else repr(name)[:197] + "..."   # repr escapes control characters
    # The origin is a path of the source, whose folders may carry control characters too.
    origin = _CONTROL.sub(lambda m: repr(m.group())[1:-1], origin)
    raise HostileSource(f"{origin} holds the name {shown}, which {why}. A class or image name must be one plain file "
                        f"name (no '/', '\\', '..' or control characters), so the source was refused. Download it "
                        f"again from the official source (or rename the entry, in a folder of your own).")


def plain_names(names, origin: str) -> list[str]:
    return [plain_name(n, origin) for n in names]


def _why_not_plain(name: object) -> str | None:
    if not isinstance(name, str):
        return f"is not text ({type(name).__name__})"
    if name in ("", ".", ".."):
        return "is not a file name"
    if _SEPARATOR.search(name):
        return "is a path (it holds '/' or '\\'), not one name"
    if _CONTROL.search(name):
        return "holds a control character"
    try:
        size = len(name.encode())
    except UnicodeEncodeError:   # a lone surrogate: no file system stores it as UTF-8
        return "is not valid text"
    if size > NAME_MAX_BYTES:
        return f"is longer than a file name may be ({size} bytes; {NAME_MAX_BYTES} at most)"
    return None


# What a truncated or corrupted tar, gzip or zip raises while it is read (not OSError: a failing
# disk is another matter, and run.py says so).
ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error)


class DamagedArchive(SourceError):
    """An archive in the source ends early or is corrupt; `path` names it."""

    def __init__(self, path: Path, cause: BaseException):
        self.path = Path(path)
        super().__init__(f"{self.path} is damaged or incomplete ({type(cause).__name__}: {cause}). "
                         f"Download it again.")


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn the errors of a damaged archive read inside the block into DamagedArchive(path)."""
    try:
        yield
    except ARCHIVE_ERRORS as exc:
        raise DamagedArchive(path, exc) from exc
