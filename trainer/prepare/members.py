"""Read one file of a source whole: a tar member, a zip member, or a file of an extracted folder.

Every image and label file the readers take goes through here, so what no real download holds is
refused in one place, naming the member: anything larger than MAX_MEMBER_BYTES (a decompression
bomb: a 0.7 MB zip member inflates to 1.4 GiB), and a link, device or FIFO where a file belongs (a
tar link is never followed; a FIFO would block the read forever).
"""
from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import BinaryIO

from trainer.prepare.catalog import HostileSource

# Far above any real file: the largest is CIFAR-100's train pickle (~155 MB); ImageNet's largest
# image is ~15 MB. Read at call time, so a test can lower it.
MAX_MEMBER_BYTES = 256 * 2**20


def tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path | str) -> bytes:
    """The bytes of a regular-file member; HostileSource for a link, device or oversized member."""
    what = f"{archive}: member {member.name!r}"
    if not member.isfile():
        raise HostileSource(f"{what} is a {_kind(member)}, not a file; links and devices in an archive are never "
                            f"followed, so the source was refused. Download it again from the official source.")
    return _capped(tar.extractfile(member), member.size, what)


def zip_member(zf: zipfile.ZipFile, name: str, archive: Path | str) -> bytes:
    info = zf.getinfo(name)
    what = f"{archive}: member {name!r}"
    _refuse_size(info.file_size, what)   # before inflating a byte
    with zf.open(info) as f:
        return _capped(f, info.file_size, what)


def file_bytes(path: Path) -> bytes:
    """A regular file's bytes (links to one are followed; the callers decide which links may be)."""
    # O_NONBLOCK: opening a FIFO would otherwise wait for a writer; on a regular file it does nothing.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HostileSource(f"{path} is not a regular file (a device, FIFO or socket), so it was not read and the "
                                f"source was refused. Remove it from the source.")
        return _capped(f, st.st_size, str(path))


def _capped(f: BinaryIO, declared: int, what: str) -> bytes:
    # Both the size the archive declares and the bytes that actually come: a declared size can lie
    # (and a file in /proc declares 0), so at most one byte past the cap is ever read.
    _refuse_size(declared, what)
    data = f.read(MAX_MEMBER_BYTES + 1)
    _refuse_size(len(data), what)
    return data


def _refuse_size(size: int, what: str) -> None:
    if size > MAX_MEMBER_BYTES:
        raise HostileSource(f"{what} is {'over ' if size == MAX_MEMBER_BYTES + 1 else ''}{size:,} bytes unpacked, more "
                            f"than any file of a real download ({MAX_MEMBER_BYTES:,} at most): a decompression bomb, "
                            f"or a damaged archive. It was not read and the source was refused; download it again "
                            f"from the official source.")


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"hard link to {member.linkname!r}"
    if member.isdir():
        return "folder"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "FIFO"
    return "special member"
