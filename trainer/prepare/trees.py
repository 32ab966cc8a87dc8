"""A folder or a zip file seen the same way: list the files in one directory, read one file.

Zip files have a central directory, so listing and reading single members is random access and
nothing is extracted to disk; the Kaggle and Tiny ImageNet readers work on either form unchanged.
"""
from __future__ import annotations

import os
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Protocol

from trainer.prepare.catalog import reading


class Tree(Protocol):
    def files(self, folder: str) -> list[str]:
        """Names of the plain files directly inside `folder` ("" is the root); [] if absent."""

    def read(self, path: str) -> bytes: ...

    def exists(self, path: str) -> bool: ...


class DirTree:
    def __init__(self, root: Path):
        self.root = Path(root)

    def files(self, folder: str) -> list[str]:
        try:
            with os.scandir(self.root / folder) as it:
                return [e.name for e in it if e.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def exists(self, path: str) -> bool:
        return (self.root / path).exists()


class ZipTree:
    """Members of a zip, optionally below a prefix (the zip's own top folder)."""

    def __init__(self, path: Path, prefix: str = ""):
        self.path = Path(path)
        with reading(self.path):
            self.zip = zipfile.ZipFile(path)
        self.prefix = prefix
        self._dirs: dict[str, list[str]] = defaultdict(list)
        self._folders: set[str] = set()
        for info in self.zip.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            folder, _, name = info.filename[len(prefix):].rpartition("/")
            self._dirs[folder].append(name)
            if folder not in self._folders:
                parts = folder.split("/")
                self._folders.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))

    def files(self, folder: str) -> list[str]:
        return list(self._dirs.get(folder.strip("/"), []))

    def read(self, path: str) -> bytes:
        with reading(self.path):
            return self.zip.read(self.prefix + path)

    def exists(self, path: str) -> bool:
        folder, _, name = path.strip("/").rpartition("/")
        return name in self._dirs.get(folder, []) or path.strip("/") in self._folders


def zip_prefix(path: Path, marker: str) -> str | None:
    """The folder prefix under which `marker` (e.g. "wnids.txt") sits in the zip, or None."""
    with reading(path), zipfile.ZipFile(path) as zf:
        hits = [n for n in zf.namelist() if n == marker or n.endswith("/" + marker)]
    # The shallowest one: a data folder deeper down may hold a file of the same name.
    return min((h[: len(h) - len(marker)] for h in hits), key=len, default=None)
