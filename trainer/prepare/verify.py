"""`trainer verify`: does a prepared folder hold what training expects?

Lists the images per class as training does (trainer/data.py: every file under the class folder
whose name ends in one of torchvision's image extensions; other files are named in a note),
compares train and val classes, compares the folders with dataset.json, decodes every image (JPEG
at 1/8 scale via Image.draft: the whole entropy-coded stream is still read, so truncated files
fail, at a fraction of the cost), and with --expect compares the counts with the full dataset's.
It fails where training would refuse the folder and warns where training would warn; a note counts
the 16-bit greyscale images, which training scales to 8 bits (trainer.pixels.to_rgb).
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trainer.prepare.catalog import FULL_COUNTS, IMAGE_EXTENSIONS, SPLITS, class_folders, is_image
from trainer.pixels import SIXTEEN_BIT_MODES
from trainer.prepare.shrink import PART

SHOW = 10   # problems of one kind listed by name before "... and N more"


@dataclass(frozen=True)
class VerifyReport:
    data: Path
    counts: dict[str, dict[str, int]]       # split -> class -> images
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()          # what training would warn about too; not a failure

    @property
    def ok(self) -> bool:
        return not self.problems

    def images(self, split: str) -> int:
        return sum(self.counts.get(split, {}).values())


def _listed(items, what: str, show: int = SHOW) -> str:
    items = sorted(items)
    more = f" ... and {len(items) - show} more" if len(items) > show else ""
    return f"{len(items)} {what}: {', '.join(map(str, items[:show]))}{more}"


def _class_files(cls_dir: Path) -> list[str]:
    """Every file under a class folder, subfolders included, as torchvision's make_dataset walks it."""
    return [os.path.join(root, name) for root, _, names in os.walk(cls_dir, followlinks=True) for name in names]


def check_image(path: str) -> tuple[str | None, bool]:
    """(None if the image decodes, else 'path: why'; whether it is 16-bit greyscale)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
            return None, img.mode in SIXTEEN_BIT_MODES
    except Exception as exc:  # any decoder error means the trainer would fail on this file
        return f"{path}: {type(exc).__name__}: {exc}", False


def verify_dataset(data: Path, expect: str | None = None, workers: int = 1, decode: bool = True,
                   on_checked: Callable[[int], None] = lambda n: None,
                   on_total: Callable[[int], None] = lambda n: None) -> VerifyReport:
    data = Path(data)
    problems: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    files: list[str] = []
    partial: list[str] = []
    ignored: list[str] = []
    for split in SPLITS:
        split_dir = data / split
        if not split_dir.is_dir():
            problems.append(f"missing folder {split_dir}")
            continue
        counts[split] = {}
        for cls_dir in (split_dir / name for name in class_folders(split_dir)):
            paths = _class_files(cls_dir)
            images = [p for p in paths if is_image(p)]
            partial += [p for p in paths if p.endswith(PART)]
            ignored += [os.path.relpath(p, data) for p in paths if not is_image(p) and not p.endswith(PART)]
            counts[split][cls_dir.name] = len(images)
            files += images
        if not counts[split]:
            problems.append(f"{split_dir} has no class folders; training expects {split_dir}/<class>/<images>")
    if partial:
        problems.append(_listed(partial, "half-written files (rerun the same `trainer prepare` command to finish)"))
    if ignored:
        notes.append(_listed(ignored, f"files that are not images, skipped here as in training (which reads only "
                                      f"files ending in {', '.join(IMAGE_EXTENSIONS)} whose names are not hidden)",
                             show=5))
    if counts.get("train") and counts.get("val"):
        train, val = set(counts["train"]), set(counts["val"])
        if train - val:  # training accepts it and warns: say the same here, as a warning
            warnings.append(missing_val_classes(sorted(train - val), len(train)))
        if val - train:
            problems.append(_listed(val - train, "classes in val/ but not in train/"))
    for split, per_class in counts.items():
        empty = [c for c, n in per_class.items() if n == 0]
        if empty:
            problems.append(_listed(empty, f"empty classes in {split}/"))

    meta = _check_metadata(data, counts, problems, notes)
    if expect is not None:
        _check_expected(expect, counts, meta, problems)

    if decode and files:
        on_total(len(files))
        bad, wide = [], []
        for path, (why, sixteen_bit) in zip(files, _decode_all(files, workers, on_checked)):
            if why:
                bad.append(why)
            elif sixteen_bit:
                wide.append(os.path.relpath(path, data))
        if bad:
            problems.append(_listed(bad, "unreadable images"))
        if wide:
            notes.append(_listed(wide, "images are 16-bit greyscale, which training scales to 8 bits (the high byte "
                                       "of each pixel)", show=5))
    return VerifyReport(data, counts, tuple(problems), tuple(notes), tuple(warnings))


def missing_val_classes(missing: list[str], classes: int) -> str:
    """The warning for a val/ without some train classes: verify's, and training's (trainer.data.load_dataset)."""
    shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
    return (f"val/ has no folder for {len(missing)} of the {classes} train classes: {shown}. Val top-1 is then "
            f"measured over the other {classes - len(missing)} classes while the model predicts all {classes}; "
            f"for a comparable figure add val/<class>/ with a few images of each.")


def _check_metadata(data: Path, counts, problems: list[str], notes: list[str]) -> dict:
    path = data / "dataset.json"
    if not path.is_file():
        notes.append(f"no {path}: the trainer then takes class names from the folder names")
        return {}
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:
        problems.append(f"{path} is not valid JSON ({exc}); rerun `trainer prepare` to rewrite it")
        return {}
    if "train" in counts and list(meta.get("classes", [])) != sorted(counts["train"]):
        problems.append(f"{path} lists {len(meta.get('classes', []))} classes but train/ has "
                        f"{len(counts['train'])} class folders (or other names)")
    for split, per_class in counts.items():
        want = meta.get("counts", {}).get(split)
        if want is not None and want != per_class:
            off = sorted(c for c in set(want) | set(per_class) if want.get(c) != per_class.get(c))
            problems.append(_listed(off, f"classes in {split}/ whose image count differs from {path.name}"))
    return meta


def _check_expected(expect: str, counts, meta: dict, problems: list[str]) -> None:
    classes, train, val = FULL_COUNTS[expect]
    got = (len(counts.get("train", {})), sum(counts.get("train", {}).values()), sum(counts.get("val", {}).values()))
    if got == (classes, train, val):
        return
    why = ""
    if meta.get("subset") or meta.get("max_per_class"):
        why = (f" This folder was prepared with subset={meta.get('subset')}, max_per_class={meta.get('max_per_class')}: "
               f"--expect checks the full dataset, so leave it out for a subset.")
    problems.append(f"--expect {expect}: wanted {classes} classes, {train:,} train and {val:,} val images; "
                    f"found {got[0]} classes, {got[1]:,} train and {got[2]:,} val images.{why}")


def _decode_all(files: list[str], workers: int, on_checked: Callable[[int], None]):
    if workers <= 1 or len(files) < 64:
        for f in files:
            yield check_image(f)
            on_checked(1)
        return
    with ProcessPoolExecutor(workers) as pool:
        for result in pool.map(check_image, files, chunksize=64):
            yield result
            on_checked(1)
