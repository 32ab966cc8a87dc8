"""One atomic write for everything orch keeps on disk: state, keys, records, checksums; and one lock
between the orch processes of this machine.

A reader never sees half a file: the text goes to a temporary file in the same folder, which is
created mode 600 (`tempfile.mkstemp`), flushed to disk, then renamed over the target.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def write_atomic(path: Path | str, data: str | bytes, *, private_dir: bool = False) -> None:
    """Write `data` to `path` atomically, mode 600 from its first byte.

    `private_dir`: make the folder mode 700 too (keys, known hosts: nobody else may list them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if private_dir:
        os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())  # on disk before it replaces anything: EC2 hands out a private key once
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path | str, value: object, indent: int = 1) -> None:
    write_atomic(path, json.dumps(value, indent=indent))


def read_json(path: Path | str) -> dict | None:
    """The JSON object in `path`; None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@contextlib.contextmanager
def locked(path: Path | str, waiting: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created mode 600) between orch processes on this machine.

    `waiting` is called once when another process holds it, before this one blocks. The lock goes with the
    process: a killed holder never leaves it taken. POSIX only; on Windows there is no lock (last writer wins).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl
        except ImportError:  # Windows
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
