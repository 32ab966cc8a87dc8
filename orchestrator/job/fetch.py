"""Bring files back from the machine: resumable SFTP downloads, checked against the trainer's `.sha256`.

    report = fetch_files(session, "/data/out/job1", ["checkpoints/best.pt", "metrics.jsonl"], Path("weights"))

Each file goes to `<dest>/<name>.part` first, appending to what an earlier attempt left. When the
machine has `<name>.sha256` (sha256sum format), the part is checked against it and only a match is
renamed into place, with the `.sha256` kept beside it (`sha256sum -c` works in that folder). A
mismatch deletes the part and raises; nothing already in place is touched. Files without a
`.sha256` (logs, metrics, plots) are downloaded whole each time, since a part cannot be checked.
Downloads run under `remote.LinkWatch`: a link that goes silent ends the fetch with `ConnectionLost`
(run it again: it resumes from the part) instead of hanging it.
"""
from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat
import re
from pathlib import Path
from typing import Iterable

from orchestrator.files import write_atomic
from orchestrator.records import FetchReport
from orchestrator.remote.base import TRANSPORT_ERRORS, ConnectionLost, RemoteError, Session
from orchestrator.remote.linkwatch import LinkWatch

_CHUNK = 1 << 20
_SHA_LINE = re.compile(r"^\s*([0-9a-fA-F]{64})\b")


class FetchError(RemoteError):
    """A download could not be completed or verified; the message says what was kept."""


class ChecksumMismatch(FetchError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()



def _read_remote_text(files, path: str) -> str | None:
    try:
        if not _regular(files, path):
            raise FetchError(f"{path} on the machine is not a plain file; nothing was downloaded for it")
        with files.open(path, "rb") as f:
            return f.read(4096).decode(errors="replace")  # a checksum line: never a whole file of the machine's
    except FileNotFoundError:
        return None


def _regular(files, path: str) -> bool:
    """Whether `path` is a plain file: opening a FIFO or a device the machine put there would block or never end."""
    mode = files.stat(path).st_mode
    return mode is None or stat.S_ISREG(mode)


def _expected_digest(files, path: str, name: str) -> str | None:
    text = _read_remote_text(files, path + ".sha256")
    if text is None:
        return None
    match = _SHA_LINE.match(text)
    if not match:
        raise FetchError(f"{path}.sha256 on the machine is not in sha256sum format (`<hex>  <file>`); "
                         f"{name} was not downloaded")
    return match.group(1).lower()


def _copy(files, remote: str, part: Path, offset: int, size: int, progress) -> int:
    """Append remote[offset:size] to `part`; return the bytes transferred."""
    got = 0
    with files.open(remote, "rb") as src, open(part, "ab") as dst:
        if offset:
            src.seek(offset)
        if hasattr(src, "prefetch"):  # paramiko: pipeline the reads, or SFTP crawls at one round trip per 32 KB
            src.prefetch(size)
        while got < size - offset:
            chunk = src.read(min(_CHUNK, size - offset - got))
            if not chunk:
                break
            dst.write(chunk)
            got += len(chunk)
            if progress:
                progress.advance(0, len(chunk))
        dst.flush()
        os.fsync(dst.fileno())
    return got


def _download_verified(files, remote: str, local: Path, name: str, expected: str, progress) -> int:
    part = local.with_name(local.name + ".part")
    size = files.stat(remote).st_size
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:  # a part of some longer, older file
        part.unlink()
        offset = 0
    moved = _copy(files, remote, part, offset, size, progress)
    actual = sha256_file(part)
    if actual != expected and offset > 0:
        # The part may be from an earlier version of the file (a checkpoint rewritten since): start over once.
        part.unlink()
        moved += _copy(files, remote, part, 0, files.stat(remote).st_size, progress)
        actual = sha256_file(part)
    if actual != expected:
        part.unlink()
        raise ChecksumMismatch(
            f"{name}: the downloaded file's sha256 {actual[:16]}... does not match the machine's "
            f"{name}.sha256 ({expected[:16]}...). The download was deleted and nothing was put in {local.parent}. "
            f"If the trainer was writing this checkpoint, wait for the next one and run `orch fetch-weights` "
            f"again; otherwise the file on the machine is damaged (check it there: sha256sum -c {name}.sha256)."
        )
    os.replace(part, local)
    return moved


def _download_whole(files, remote: str, local: Path, progress) -> int:
    part = local.with_name(local.name + ".part")
    part.unlink(missing_ok=True)
    moved = _copy(files, remote, part, 0, files.stat(remote).st_size, progress)
    os.replace(part, local)
    return moved


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    p = Progress(TextColumn("fetch"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                 console=Console(stderr=True))
    p.add_task("fetch", total=None)
    p.start()
    return p


def fetch_files(session: Session, remote_dir: str, names: Iterable[str], dest: Path | str, *,
                optional: Iterable[str] = (), progress: bool = False) -> FetchReport:
    """Download each of `names` (paths relative to `remote_dir`) to `dest/<name>`.

    A name in `optional` that the machine does not have is skipped; any other missing name raises.
    `FetchReport.files` lists what is now in `dest`, `verified` those checked against a `.sha256`,
    `bytes_downloaded` what actually crossed the network (a resumed part counts only its rest).
    """
    dest = Path(dest).expanduser()
    optional = set(optional)
    got: list[Path] = []
    verified: list[Path] = []
    moved = 0
    files = session.sftp()
    link = LinkWatch(session)
    bar = _progress(progress)
    try:
        for name in names:
            remote = posixpath.join(remote_dir, name)
            if remote.startswith("~/"):  # SFTP resolves relative paths from the home folder; it knows no `~`
                remote = remote[2:]
            local = dest / name
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                if not _regular(files, remote):
                    raise FetchError(f"{remote} on {session.where} is not a plain file (a FIFO, a device or a "
                                     "folder); nothing was downloaded for it")
            except FileNotFoundError:
                if name in optional:
                    continue
                raise FetchError(f"{remote} is not on {session.where}; nothing was downloaded for it. "
                                 "The trainer writes it once training reaches that point: check `orch status`.")
            except TRANSPORT_ERRORS as e:
                why = link.reason if link.lost.is_set() else f"{type(e).__name__}: {e}"
                raise ConnectionLost(f"the connection to {session.where} dropped before {name} was downloaded "
                                     f"({why}). Run `orch fetch-weights` again: what is in place is kept.") from e
            try:
                for attempt in range(2):
                    expected = _expected_digest(files, remote, name)
                    if expected is None:
                        moved += _download_whole(files, remote, local, bar)
                        break
                    if local.exists() and sha256_file(local) == expected:
                        pass  # already here and intact
                    else:
                        moved += _download_verified(files, remote, local, name, expected, bar)
                    # The trainer may have replaced the file and its .sha256 while we read: check once more.
                    if _expected_digest(files, remote, name) == expected:
                        write_atomic(local.with_name(local.name + ".sha256"), f"{expected}  {local.name}\n")
                        verified.append(local)
                        break
                else:
                    raise FetchError(f"{name} kept changing on {session.where} while downloading; "
                                     "run `orch fetch-weights` again after the next checkpoint is written.")
            except TRANSPORT_ERRORS as e:
                if isinstance(e, FileNotFoundError):
                    raise FetchError(f"{remote} disappeared from {session.where} while downloading") from e
                part = local.with_name(local.name + ".part")
                kept = part.stat().st_size if part.exists() else 0
                if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise FetchError(f"this machine's disk under {dest} is full while downloading {name}. "
                                     f"Kept: {kept} bytes in {part}; free space and run `orch fetch-weights` "
                                     "again to resume.") from e
                why = link.reason if link.lost.is_set() else f"{type(e).__name__}: {e}"
                raise ConnectionLost(
                    f"the download of {name} from {session.where} was cut ({why}). "
                    f"Kept: {kept} bytes in {part}; run `orch fetch-weights` again to resume from there."
                ) from e
            got.append(local)
    finally:
        link.stop()
        if bar:
            bar.stop()
        try:
            files.close()
        except (OSError, EOFError):
            pass
    return FetchReport(dest=dest, files=tuple(got), verified=tuple(verified), bytes_downloaded=moved)


TENSORBOARD_DIR = "tensorboard"  # the trainer's event files, under OUT
MAX_FOLDER_FILES = 1000
MAX_FOLDER_DEPTH = 3
_PLAIN_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,255}$")


def folder_files(session: Session, remote_dir: str, folder: str = TENSORBOARD_DIR) -> list[str]:
    """The plain files under `remote_dir`/`folder` (sub-folders up to MAX_FOLDER_DEPTH deep), as names relative to
    `remote_dir`, for `fetch_files`; [] when there is no such folder. The machine's names are data: one that is not
    a plain name (a `/`, `\\`, `..`, a control character) is left out, never made a path here."""
    root = remote_dir[2:] if remote_dir.startswith("~/") else remote_dir
    files = session.sftp()
    found: list[str] = []

    def walk(relative: str, depth: int) -> None:
        try:
            entries = sorted(files.listdir(posixpath.join(root, relative)))
        except OSError:  # no such folder (yet), or not one
            return
        for entry in entries:
            if len(found) >= MAX_FOLDER_FILES:
                return
            if entry in (".", "..") or not _PLAIN_NAME.match(entry):
                continue
            name = posixpath.join(relative, entry)
            try:
                mode = files.stat(posixpath.join(root, name)).st_mode or 0
            except OSError:
                continue
            if stat.S_ISDIR(mode) and depth < MAX_FOLDER_DEPTH:
                walk(name, depth + 1)
            elif stat.S_ISREG(mode):
                found.append(name)

    try:
        walk(folder, 1)
    finally:
        files.close()
    return found


def trainer_outputs(which: str) -> tuple[list[str], list[str]]:
    """The names under a trainer's output folder for `--which best|last|all`: (names, optional names)."""
    if which not in ("best", "last", "all"):
        raise FetchError(f"--which must be best, last or all, not {which!r}")
    weights = {"best": ["checkpoints/best.pt"], "last": ["checkpoints/last.pt"],
               "all": ["checkpoints/best.pt", "checkpoints/last.pt"]}[which]
    extras = ["metrics.jsonl", "train.log", "curves.png"]
    # best.pt only exists once an evaluation ran; with `all`, a missing best is not an error.
    optional = extras + (["checkpoints/best.pt"] if which == "all" else [])
    return weights + extras, optional
