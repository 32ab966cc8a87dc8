"""Checkpoints: atomic writes with a `.sha256` beside each file, and a fallback on corruption.

Saving `last.pt` first moves the previous one to `last.prev.pt`, so a checkpoint that is torn or
corrupted later (disk full, a killed copy) still leaves one good file to resume from.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainer.errors import EXIT_BAD_INPUT, EXIT_DISK, TrainerError

log = logging.getLogger("trainer")

FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(payload: dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """Write `payload` to `path` atomically with `path.sha256` ("<hex>  <name>\\n", sha256sum format).

    keep_previous: move the current file (and its digest) to `<stem>.prev.pt` first.
    A file and its digest are replaced as a pair: the old digest is removed before the file is
    renamed, and the new one written after it, so a kill at any point leaves each file either with
    its own digest or with none (which `verify` accepts), never beside another file's.
    On a write error (disk full) the previous files are left as they were and TrainerError(EXIT_DISK)
    is raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    sha_path = _sha_path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            old_digest = _read_digest(sha_path) if path.exists() else ""
            if keep_previous:
                _sha_path(previous_path(path)).unlink(missing_ok=True)
            sha_path.unlink(missing_ok=True)
            if keep_previous and path.exists():
                prev = previous_path(path)
                os.replace(path, prev)
                if old_digest:
                    _write_atomic(_sha_path(prev), f"{old_digest}  {prev.name}\n".encode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _write_atomic(sha_path, f"{digest}  {path.name}\n".encode())
    except OSError as exc:
        raise TrainerError(
            f"could not write checkpoint {path}: {exc.strerror or exc}. The previous checkpoint in {path.parent} "
            f"was kept. Free disk space (df -h {path.parent}) and resume with `trainer train ... --resume auto`.",
            EXIT_DISK,
        ) from exc


def _sha_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_digest(sha_path: Path) -> str:
    """The hex digest in a .sha256 file; "" when there is none."""
    try:
        text = sha_path.read_text().split()
    except FileNotFoundError:
        return ""
    return text[0] if text else ""


def previous_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def verify(path: Path) -> str | None:
    """None when `path` matches its .sha256 (or has none); otherwise why it does not."""
    sha_path = _sha_path(path)
    if not sha_path.exists():
        return None
    expected = _read_digest(sha_path)
    actual = sha256_file(path)
    return None if actual == expected else f"sha256 mismatch (file {actual[:12]}..., {sha_path.name} {expected[:12]}...)"


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check one checkpoint file; TrainerError if it is missing, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise TrainerError(f"checkpoint {path} does not exist. Training writes OUT/checkpoints/last.pt and best.pt.")
    problem = verify(path)
    if problem:
        raise TrainerError(f"checkpoint {path} is corrupt: {problem}.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a torn file
        raise TrainerError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(payload, dict) or "model" not in payload or "classes" not in payload:
        raise TrainerError(f"{path} is not a trainer checkpoint (no model state and class list).")
    return payload


def load_latest(checkpoint_dir: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
    """The newest good checkpoint among last.pt and last.prev.pt; None when there is none at all.

    A corrupt last.pt is reported and skipped (its bytes are kept as last.pt.corrupt for a post-mortem).
    """
    candidates = [checkpoint_dir / "last.pt", previous_path(checkpoint_dir / "last.pt")]
    existing = [p for p in candidates if p.exists()]
    if not existing:
        return None
    problems = []
    for path in existing:
        try:
            return load(path, map_location), path
        except TrainerError as exc:
            problems.append(exc.message)
            # Move it aside so the next save does not rotate it over the good previous file.
            corrupt = path.with_name(path.name + ".corrupt")
            os.replace(path, corrupt)
            log.warning("%s Moved it to %s; falling back to the previous checkpoint.", exc.message, corrupt.name)
    raise TrainerError(
        "no usable checkpoint in " + str(checkpoint_dir) + ": " + " ".join(problems)
        + " Start over with a new --out directory, or with `--resume none` to overwrite this one.",
        EXIT_BAD_INPUT,
    )


def check_compatible(payload: dict[str, Any], arch: str, classes: list[str], source: Path) -> None:
    """A checkpoint from another architecture or class list cannot be resumed or evaluated."""
    got_arch = payload.get("config", {}).get("arch")
    if got_arch != arch:
        raise TrainerError(
            f"checkpoint {source} is for arch {got_arch!r}, not {arch!r}. Pass --arch {got_arch} to resume it, "
            f"or use a new --out directory to train {arch}."
        )
    if list(payload["classes"]) != list(classes):
        theirs, ours = list(payload["classes"]), list(classes)
        diff = sorted(set(theirs) ^ set(ours))[:5]
        raise TrainerError(
            f"checkpoint {source} was trained on {len(theirs)} classes but the data has {len(ours)}"
            + (f" (differing: {', '.join(diff)})" if diff else " (same names, different order)")
            + ". Use the dataset it was trained on, or a new --out directory."
        )
