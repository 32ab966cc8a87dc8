"""What a source offers and what a run asks of it: the records shared by every dataset reader.

A reader (imagenet.py, tiny.py, cifar.py) turns the files as distributed into a `Source`; the
writer consumes the `Expect` / `Entry` events that `Source.entries(selection)` yields. Keeping the
readers to this one shape is what lets the writer, the journal and the progress bar be shared.
"""
from __future__ import annotations

import os
import random
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Union

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


@dataclass(frozen=True)
class Entry:
    """One image: where it goes and its bytes as stored in the source (or encoded, for CIFAR)."""

    split: str
    cls: str
    name: str
    data: bytes


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
