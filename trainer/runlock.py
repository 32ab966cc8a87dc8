"""One trainer per run folder.

A second `trainer train` on the same --out (a restarted container while the old one still runs,
a command pasted twice) would interleave metrics.jsonl and overwrite the other's checkpoints. The
first holds an advisory lock on OUT/.lock; the kernel releases it when that process ends, even
by SIGKILL or OOM, so a lock is never stale and nothing needs cleaning up.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator

from trainer.errors import TrainerError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not guarded
    fcntl = None


@contextlib.contextmanager
def held(out: Path) -> Iterator[None]:
    """`out` locked for the duration of the block (released on return and on any exception)."""
    out.mkdir(parents=True, exist_ok=True)
    handle = hold(out)
    try:
        yield
    finally:
        if handle is not None:
            handle.close()


def hold(out: Path) -> IO | None:
    """Lock `out` for this process (keep the returned file open for as long as the run lasts)."""
    if fcntl is None:
        return None
    handle = open(out / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise TrainerError(f"another trainer (pid {holder}) is training into {out}. Nothing was changed. "
                           f"Wait for it to finish, stop it, or give this run another --out.") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
