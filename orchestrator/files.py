"""One atomic write for everything orch keeps on disk: state, keys, records, checksums.

A reader never sees half a file: the text goes to a temporary file in the same folder, which is
created mode 600 (`tempfile.mkstemp`), flushed to disk, then renamed over the target.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


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
