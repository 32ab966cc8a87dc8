"""Convert Debian's dataset-fashion-mnist (IDX files) to the trainer's folder layout (PNG files).

train/ gets the 60,000 training images, val/ the 10,000 test images; dataset.json names the classes.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat", "5_sandal", "6_shirt", "7_sneaker", "8_bag",
           "9_ankle_boot"]
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """IDX: big-endian magic (dtype code, ndim), then the dimensions, then the data."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


def convert(dest: Path, source: Path = SOURCE) -> Path:
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        for name in CLASSES:
            (dest / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image, "L").save(dest / split / CLASSES[label] / f"{i:05d}.png", compress_level=1)
    (dest / "dataset.json").write_text(json.dumps({"schema": 1, "dataset": "fashion-mnist", "classes": CLASSES,
                                                   "names": dict(zip(CLASSES, NAMES))}))
    return dest
