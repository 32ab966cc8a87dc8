"""Find CIFAR-100 (cifar-100-python.tar.gz, or extracted) and write its images as PNG files.

The pickles hold raw pixels; PNG keeps them lossless. Folders are the fine label names, and each
image keeps the file name the pickle gives it (plus its row number where two rows of a class share
one). We read the pickles the way torchvision's CIFAR100 does (pickle.load, encoding="latin1"), but
straight from the archive: torchvision's class extracts the tar to disk and checks the MD5 of each
extracted file, which re-packed copies fail.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator

from trainer.prepare.catalog import Entry, Event, Expect, Selection, Source, SourceError, reading

TGZ = "cifar-100-python.tar.gz"
SPLIT_FILES = {"train": "train", "val": "test"}   # CIFAR's test set is the val split here


def _load(blob: bytes) -> dict:
    # The official archive is trusted input; this is the format it is distributed in.
    return pickle.load(io.BytesIO(blob), encoding="latin1")


def find_cifar100(source: Path) -> Source:
    source = Path(source)
    blobs: dict[str, bytes] = {}
    if (source / TGZ).is_file():
        path, layout = source / TGZ, "cifar100-python-tgz"
        with reading(path), tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.isfile() and Path(member.name).name in ("meta", "train", "test"):
                    blobs[Path(member.name).name] = tar.extractfile(member).read()
    else:
        path = next((p for p in (source / "cifar-100-python", source) if (p / "meta").is_file()), None)
        if path is None:
            raise SourceError(f"No CIFAR-100 in {source}: looked for {TGZ} or an extracted cifar-100-python/ "
                              f"(meta, train, test). Download https://www.cs.toronto.edu/~kriz/{TGZ}.")
        layout = "cifar100-python-extracted"
        blobs = {n: (path / n).read_bytes() for n in ("meta", "train", "test") if (path / n).is_file()}
    if set(blobs) != {"meta", "train", "test"}:
        raise SourceError(f"{path} lacks {sorted({'meta', 'train', 'test'} - set(blobs))}; it is not the "
                          f"python version of CIFAR-100 ({TGZ}).")
    labels = _load(blobs["meta"])["fine_label_names"]
    classes = tuple(sorted(labels))

    def entries(sel: Selection) -> Iterator[Event]:
        for split, file in SPLIT_FILES.items():
            batch = _load(blobs[file])
            rows: dict[str, list[int]] = defaultdict(list)
            for i, label in enumerate(batch["fine_labels"]):
                cls = labels[label]
                if sel.wants(split, cls):
                    rows[cls].append(i)
            for cls in sorted(rows):
                by_name = _unique_names(batch["filenames"], rows[cls])
                picked = sel.pick(list(by_name))
                yield Expect(split, cls, tuple(picked))
                for name in picked:
                    yield Entry(split, cls, name, _png(batch["data"][by_name[name]]))

    paths = (path,) if layout.endswith("tgz") else tuple(path / n for n in ("meta", "train", "test", "file.txt~") if (path / n).exists())
    return Source("cifar100", layout, classes, {c: c.replace("_", " ") for c in classes}, paths, entries,
                  (path,) if layout.endswith("tgz") else ())


def _unique_names(filenames: list[str], rows: list[int]) -> dict[str, int]:
    """{file name: row} for one class. A name the pickle gives to several rows of the class gets
    each row's index ("x_s_000001-row1234.png"), so none overwrites another; unique names stay."""
    seen = Counter(filenames[i] for i in rows)
    out = {}
    for i in rows:
        name = filenames[i]
        if seen[name] > 1:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}-row{i}.{ext}" if dot else f"{name}-row{i}"
        out[name] = i
    return out


def _png(row) -> bytes:
    """One CIFAR row (3072 bytes: 1024 red, 1024 green, 1024 blue, row-major 32x32) as PNG."""
    from PIL import Image

    raw = bytes(row)
    planes = [Image.frombytes("L", (32, 32), raw[i * 1024:(i + 1) * 1024]) for i in range(3)]
    out = io.BytesIO()
    Image.merge("RGB", planes).save(out, format="PNG")
    return out.getvalue()
