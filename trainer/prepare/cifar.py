"""Find CIFAR-100 (cifar-100-python.tar.gz, or extracted) and write its images as PNG files.

The pickles hold raw pixels; PNG keeps them lossless. Folders are the fine label names, and each
image keeps the file name the pickle gives it (plus its row number where two rows of a class share
one). We read the pickles as torchvision's CIFAR100 does (encoding="latin1"), but straight from the
archive (torchvision's class extracts the tar to disk and checks the MD5 of each extracted file, which
re-packed copies fail), and with an unpickler that builds only what the real files hold: a download
is untrusted, and a plain pickle.load runs whatever code the file names.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from trainer.prepare.catalog import (Entry, Event, Expect, HostileSource, Selection, Source, SourceError,
                                     plain_names, reading)
from trainer.prepare.members import tar_member
from trainer.prepare.trees import DirTree

if TYPE_CHECKING:
    import numpy as np

TGZ = "cifar-100-python.tar.gz"
SPLIT_FILES = {"train": "train", "val": "test"}   # CIFAR's test set is the val split here
ROW_BYTES = 3 * 32 * 32

# The only globals the real pickles name (besides dicts, lists, str, bytes and ints, which need
# none): numpy's array reconstruction, under numpy.core before numpy 2 and numpy._core since, and
# _codecs.encode, which Python 3 writes for bytes at protocol 2 (re-pickled copies).
_ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    """Refuses every global but _ALLOWED_GLOBALS, so a pickle built to run code (os.system,
    builtins.eval) is refused before anything of it runs."""

    def __init__(self, blob: bytes, origin: str):
        super().__init__(io.BytesIO(blob), encoding="latin1")
        self.origin = origin

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise HostileSource(f"{self.origin} is a pickle that calls {module}.{name}, which no CIFAR-100 file does; "
                                f"it was refused without running it. Download {TGZ} again from "
                                f"https://www.cs.toronto.edu/~kriz/{TGZ}.")
        if module.endswith("multiarray"):
            return _reconstruct()
        return super().find_class(module, name)


def _reconstruct():
    # numpy's own function, by whichever module name the installed numpy has: importing
    # numpy.core under numpy 2 is deprecated.
    try:
        from numpy._core.multiarray import _reconstruct as rebuild
    except ImportError:
        from numpy.core.multiarray import _reconstruct as rebuild
    return rebuild


def _load(blob: bytes, origin: str) -> dict[str, object]:
    """The dict a CIFAR-100 pickle holds, its keys as str (re-pickled copies have bytes keys)."""
    try:
        obj = _CifarUnpickler(blob, origin).load()
    except SourceError:
        raise
    except Exception as exc:   # noqa: BLE001 - damaged bytes make the unpickler raise almost anything
        raise SourceError(f"{origin} is not a CIFAR-100 pickle ({type(exc).__name__}: {exc}). Download {TGZ} "
                          f"again.") from None
    if not isinstance(obj, dict):
        raise SourceError(f"{origin} holds a {type(obj).__name__}, not the dict of a CIFAR-100 pickle. Download "
                          f"{TGZ} again.")
    return {_text(k): v for k, v in obj.items()}


def _text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value


def _field(batch: dict[str, object], key: str, origin: str) -> list:
    """batch[key], a list (or array) in every real file."""
    import numpy as np

    if key not in batch:
        held = ", ".join(sorted(map(repr, batch))[:8]) or "nothing"
        raise SourceError(f"{origin} lacks {key!r} (it holds {held}); it is not the python version of CIFAR-100. "
                          f"Download {TGZ} again.")
    value = batch[key]
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise SourceError(f"{origin}: {key!r} is a {type(value).__name__}, not a list; it is not the python version "
                          f"of CIFAR-100. Download {TGZ} again.")
    return value


def find_cifar100(source: Path) -> Source:
    source = Path(source)
    blobs: dict[str, bytes] = {}
    origins: dict[str, str] = {}   # "train" -> where it was read, for messages
    if (source / TGZ).is_file():
        path, layout = source / TGZ, "cifar100-python-tgz"
        with reading(path), tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = Path(member.name).name
                if not member.isdir() and name in ("meta", "train", "test"):
                    blobs[name] = tar_member(tar, member, path)
                    origins[name] = f"{path}: member {member.name!r}"
    else:
        path = next((p for p in (source / "cifar-100-python", source) if (p / "meta").is_file()), None)
        if path is None:
            raise SourceError(f"No CIFAR-100 in {source}: looked for {TGZ} or an extracted cifar-100-python/ "
                              f"(meta, train, test). Download https://www.cs.toronto.edu/~kriz/{TGZ}.")
        layout = "cifar100-python-extracted"
        tree = DirTree(path)
        blobs = {n: tree.read(n) for n in ("meta", "train", "test") if (path / n).is_file()}
        origins = {n: tree.where(n) for n in blobs}
    if set(blobs) != {"meta", "train", "test"}:
        raise SourceError(f"{path} lacks {sorted({'meta', 'train', 'test'} - set(blobs))}; it is not the "
                          f"python version of CIFAR-100 ({TGZ}).")
    meta = _load(blobs["meta"], origins["meta"])
    labels = plain_names([_text(n) for n in _field(meta, "fine_label_names", origins["meta"])],
                         f"'fine_label_names' of {origins['meta']}")
    classes = tuple(sorted(labels))

    def entries(sel: Selection) -> Iterator[Event]:
        for split, file in SPLIT_FILES.items():
            filenames, fine_labels, data = _batch(blobs[file], origins[file], len(labels))
            rows: dict[str, list[int]] = defaultdict(list)
            for i, label in enumerate(fine_labels):
                cls = labels[label]
                if sel.wants(split, cls):
                    rows[cls].append(i)
            for cls in sorted(rows):
                by_name = _unique_names(filenames, rows[cls])
                picked = sel.pick(list(by_name))
                yield Expect(split, cls, tuple(picked))
                for name in picked:
                    yield Entry(split, cls, name, _png(data[by_name[name]]))

    paths = (path,) if layout.endswith("tgz") else tuple(path / n for n in ("meta", "train", "test", "file.txt~") if (path / n).exists())
    return Source("cifar100", layout, classes, {c: c.replace("_", " ") for c in classes}, paths, entries,
                  (path,) if layout.endswith("tgz") else ())


def _batch(blob: bytes, origin: str, classes: int) -> tuple[list[str], list[int], "np.ndarray"]:
    """(file names, fine labels, pixel rows) of a train or test pickle, checked to fit together."""
    import numpy as np

    batch = _load(blob, origin)
    filenames = plain_names([_text(n) for n in _field(batch, "filenames", origin)], f"'filenames' of {origin}")
    fine_labels = list(_field(batch, "fine_labels", origin))
    data = _field(batch, "data", origin)
    rows = len(filenames)
    array = isinstance(data, np.ndarray)
    if not (array and data.dtype == np.uint8 and data.shape == (rows, ROW_BYTES)) or len(fine_labels) != rows:
        got = f"shape {data.shape}, {data.dtype}" if array else f"a {type(data).__name__}"
        raise SourceError(f"{origin} does not fit together: {rows} file names, {len(fine_labels)} labels, and pixel "
                          f"rows of {got} (want shape {(rows, ROW_BYTES)}, uint8). Download {TGZ} again.")
    # A negative label would silently index from the end of the class list.
    bad = next((x for x in fine_labels if not isinstance(x, (int, np.integer)) or not 0 <= x < classes), None)
    if bad is not None:
        raise SourceError(f"{origin} has the fine label {bad!r}, but meta lists {classes} classes (0 to "
                          f"{classes - 1}). Download {TGZ} again.")
    return filenames, [int(x) for x in fine_labels], data


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
