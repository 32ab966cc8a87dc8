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

from trainer.prepare.catalog import HostileSource, reading
from trainer.prepare.members import file_bytes, zip_member


class Tree(Protocol):
    def files(self, folder: str) -> list[str]:
        """Names of the plain files directly inside `folder` ("" is the root); [] if absent."""

    def read(self, path: str) -> bytes: ...

    def exists(self, path: str) -> bool: ...

    def where(self, path: str) -> str:
        """`path` as a user finds it, for messages."""


class DirTree:
    """An extracted download. Reads stay inside it: a link whose target is outside the folder is
    refused, not followed. Tar restores the links an archive carries, and following one would copy
    any file the user can read (~/.ssh/id_rsa named n01440764_1.JPEG) into the prepared dataset.
    The folder itself may be a link (a download kept on another disk): its target is the bound.
    (`prepare folder` is the user's own folder and follows links, as ImageFolder does: see folder.py.)
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._real_root = self.root.resolve()

    def files(self, folder: str) -> list[str]:
        try:
            with os.scandir(self.root / folder) as it:
                return [e.name for e in it if e.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read(self, path: str) -> bytes:
        real = (self.root / path).resolve()
        if not real.is_relative_to(self._real_root):
            raise HostileSource(f"{self.root / path} leads outside {self.root} (to {real}); links out of an extracted "
                                f"download are not followed, so the source was refused. Extract the archive again, "
                                f"or replace the link with the file.")
        return file_bytes(real)

    def exists(self, path: str) -> bool:
        return (self.root / path).exists()

    def where(self, path: str) -> str:
        return str(self.root / path)


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
            return zip_member(self.zip, self.prefix + path, self.path)

    def exists(self, path: str) -> bool:
        folder, _, name = path.strip("/").rpartition("/")
        return name in self._dirs.get(folder, []) or path.strip("/") in self._folders

    def where(self, path: str) -> str:
        return f"{self.prefix + path} in {self.path}"


def zip_prefix(path: Path, marker: str) -> str | None:
    """The folder prefix under which `marker` (e.g. "wnids.txt") sits in the zip, or None."""
    with reading(path), zipfile.ZipFile(path) as zf:
        hits = [n for n in zf.namelist() if n == marker or n.endswith("/" + marker)]
    # The shallowest one: a data folder deeper down may hold a file of the same name.
    return min((h[: len(h) - len(marker)] for h in hits), key=len, default=None)
