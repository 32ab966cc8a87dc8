"""A small generated image dataset a small model learns in seconds on a CPU.

Each class is a (shape, colour) pair - circle, square, triangle, cross, stripes... in a palette
of hues - drawn at a random position, size and rotation over a noisy background. JPEG files in
DEST/train/<class>/ and DEST/val/<class>/, plus DEST/dataset.json.
"""
from __future__ import annotations

import colorsys
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trainer.errors import TrainerError

SHAPES = ("circle", "square", "triangle", "cross", "stripes", "ring", "diamond", "dots")


@dataclass(frozen=True)
class DemoSummary:
    dest: Path
    classes: list[str]
    train_images: int
    val_images: int


def class_spec(index: int, num_classes: int) -> tuple[str, tuple[int, int, int]]:
    """Every class its own hue and, cycling, a shape: colour alone separates a few classes at a glance,
    shape is needed when there are many."""
    shape = SHAPES[index % len(SHAPES)]
    hue = index / num_classes + 0.07
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, 0.85, 0.95)
    return shape, (int(r * 255), int(g * 255), int(b * 255))


def draw(shape: str, colour: tuple[int, int, int], size: int, rng: np.random.Generator) -> Image.Image:
    noise = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(noise + np.uint8(rng.integers(0, 60)), "RGB")
    d = ImageDraw.Draw(img)
    r = size * rng.uniform(0.22, 0.38)
    cx, cy = size * rng.uniform(0.35, 0.65, 2)
    box = [cx - r, cy - r, cx + r, cy + r]
    w = max(2, int(r / 3))
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "cross":
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
    elif shape == "stripes":
        for k in range(-2, 3):
            d.rectangle([cx - r, cy + k * 2 * w - w / 2, cx + r, cy + k * 2 * w + w / 2], fill=colour)
    elif shape == "ring":
        d.ellipse(box, outline=colour, width=w)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    else:
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                x, y = cx + dx * r * 0.7, cy + dy * r * 0.7
                d.ellipse([x - w, y - w, x + w, y + w], fill=colour)
    return img.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)


def generate(dest: str | Path, classes: int = 8, per_class: int = 60, val_per_class: int = 0, size: int = 32,
             seed: int = 0) -> DemoSummary:
    """Write the dataset; `val_per_class` 0 means a fifth of `per_class` (at least 4)."""
    dest = Path(dest)
    _make_room(dest)
    val_per_class = val_per_class or max(4, per_class // 5)
    names = [f"c{i:03d}_{class_spec(i, classes)[0]}" for i in range(classes)]
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for i, name in enumerate(names):
            folder = dest / split / name
            folder.mkdir(parents=True, exist_ok=True)
            shape, colour = class_spec(i, classes)
            for k in range(n):
                draw(shape, colour, size, rng).save(folder / f"{name}_{k:05d}.jpg", quality=90)
    meta = {"schema": 1, "dataset": "demo", "classes": names,
            "names": {n: f"{class_spec(i, classes)[0]} #{i}" for i, n in enumerate(names)},
            "counts": {"train": {n: per_class for n in names}, "val": {n: val_per_class for n in names}}}
    tmp = dest / ".dataset.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, dest / "dataset.json")
    return DemoSummary(dest, names, per_class * classes, val_per_class * classes)


def _make_room(dest: Path) -> None:
    """A demo set may replace an earlier demo set (`make demo` writes the same folder each time),
    never anything else: a prepared dataset's folders would get demo classes mixed in."""
    if not dest.exists() or not any(dest.iterdir()):
        return
    try:
        previous = json.loads((dest / "dataset.json").read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous != "demo":
        raise TrainerError(f"{dest} is not empty and is not an earlier demo set: nothing was written. Give "
                           f"`--dest` a new or empty folder.")
    for split in ("train", "val"):
        shutil.rmtree(dest / split, ignore_errors=True)
