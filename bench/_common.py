"""Shared by the benchmarks: timing, interleaved repetitions, test photographs, printing.

Every benchmark compares against a baseline measured in the same run, with the repetitions of
baseline and ours interleaved (A B, B A, ...); each ratio is the median over repetitions of the
two rates measured back to back. On a shared or throttling machine the absolute figures drift,
such a ratio much less. Lines that start with `ratio ` are the result; tests look for them.
"""
from __future__ import annotations

import io
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # `python bench/x.py` from anywhere imports this checkout's trainer
    sys.path.insert(0, str(REPO))

# scikit-image ships these colour photographs (no download); they are the raw material for the
# ImageNet-like JPEGs. Some are small (chelsea is 451x300), so variety comes from crops and flips.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


# ---------------------------------------------------------------- devices and timing

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {name}: no CUDA GPU is visible (check nvidia-smi); use --device cpu.")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Seconds between start() and stop(): CUDA events on a GPU (the GPU's own clock, no host
    jitter, queued work included), perf_counter on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self._end.record()
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1000.0
        return time.perf_counter() - self._t0


def interleaved(runs: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Call each run once per repetition, alternating the order, and collect what each returns
    (a rate). Interleaving spreads a noisy neighbour or clock throttling over all candidates."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            results[name].append(runs[name]())
    return results


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> str:
    """Median and the min-max range, so a reader sees how noisy the run was."""
    if not values:
        return "n/a"
    return f"{median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"


# ---------------------------------------------------------------- printing

def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs visible, torch {torch.__version__}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}); " + text
    return text


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def paired_ratio(ours: list[float], baseline: list[float]) -> float:
    """The median over repetitions of ours/baseline within the same repetition: neighbouring
    measurements share the machine's state of the moment, so this is steadier than a ratio of
    medians when the machine is busy."""
    pairs = [o / b for o, b in zip(ours, baseline) if b > 0]
    return median(pairs) if pairs else float("nan")


def print_ratio(label: str, ratio: float, note: str = "") -> float:
    print(f"ratio {label}: {ratio:.2f}x" + (f"  ({note})" if note else ""))
    return ratio


# ---------------------------------------------------------------- test photographs

def photo_sources() -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)() for name in PHOTOS]


def imagenet_like(photo: np.ndarray, rng: random.Random, size: tuple[int, int] = (500, 375)) -> Image.Image:
    """A random crop (40-100% of the area) of `photo`, maybe mirrored, resized to about `size`
    (+-10%, a quarter of them portrait): the typical ImageNet photo is 500x375 or 375x500."""
    img = Image.fromarray(photo).convert("RGB")
    w, h = img.size
    area = rng.uniform(0.4, 1.0)
    cw, ch = max(16, int(w * area ** 0.5)), max(16, int(h * area ** 0.5))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    jitter = rng.uniform(0.9, 1.1)
    out_w, out_h = round(size[0] * jitter), round(size[1] * jitter)
    if rng.random() < 0.25:
        out_w, out_h = out_h, out_w
    return img.resize((out_w, out_h), Image.Resampling.BICUBIC)


def make_jpeg_folder(root: Path, images: int, classes: int = 4, size: tuple[int, int] = (500, 375),
                     quality: int = 90, seed: int = 0, val_per_class: int = 1) -> Path:
    """ROOT/train/<class>/*.jpg (+ a few in ROOT/val) made from the scikit-image photographs.
    Reused as is when ROOT already holds that many train images."""
    train = root / "train"
    if train.is_dir() and sum(1 for _ in train.glob("*/*.jpg")) >= images:
        return root
    rng = random.Random(seed)
    photos = photo_sources()
    for split, count in (("train", images), ("val", val_per_class * classes)):
        for i in range(count):
            folder = root / split / f"class{i % classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            imagenet_like(rng.choice(photos), rng, size).save(folder / f"{i:06d}.jpg", quality=quality)
    return root


def resize_short_copy(src: Path, dst: Path, short: int) -> Path:
    """What `trainer prepare --resize-short SHORT` stores, applied to a folder made above."""
    try:
        from trainer.prepare.shrink import shrink
    except ImportError:   # the prepare module is optional here: the same re-encode, inline
        shrink = _shrink
    files = sorted(src.glob("*/*/*.jpg"))
    if dst.is_dir() and sum(1 for _ in dst.glob("*/*/*.jpg")) >= len(files):
        return dst
    for path in files:
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(shrink(path.read_bytes(), short))
    return dst


def _shrink(data: bytes, short: int) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if min(w, h) <= short:
            return data
        img = img.convert("RGB").resize((round(w * short / min(w, h)), round(h * short / min(w, h))),
                                        Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()
