"""Put the dataset on the machine: a local folder as an incremental tar stream, or an s3:// URI
copied by the machine itself.

    report = sync_dataset(session, Path("~/data/imagenet"), "/opt/dlami/nvme/data")
    report = sync_s3(session, "s3://bucket/imagenet/", "/opt/dlami/nvme/data")

A file is sent when the machine lacks it or has it with another size or modification time (whole
seconds), so a second sync of an unchanged folder sends nothing, and an interrupted one resumes:
a half-written file differs in size, and tar sets a file's time only once it is complete. Files
on the machine that are not in the local folder are left alone. The end state is checked: every
local file must be there with its size and time, or the sync fails saying which.

Links are followed, to files and to folders (`train -> /mnt/big/train`, class folders linked into a
subset): the machine gets the files' contents as plain files. A broken link, or one to a folder it
sits in, is refused with its path, as is a file that cannot be read. The transfer runs under
`remote.LinkWatch`: a link that goes silent fails the sync (run it again: it resumes) instead of
hanging it.
"""
from __future__ import annotations

import collections
import os
import shlex
import stat
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator.remote.base import TRANSPORT_ERRORS, ConnectionLost, RemoteError, Session
from orchestrator.remote.linkwatch import LinkWatch

_BLOCK = 4096  # space is allocated in blocks; count whole ones when checking free space
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SyncReport:
    files_total: int
    files_sent: int
    bytes_sent: int
    bytes_total: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / 1e6 / self.seconds if self.seconds > 0 else 0.0


class SyncError(RemoteError):
    """The dataset could not be put on the machine; the message says what was kept and what to do."""


class DiskFull(SyncError):
    """The machine's disk cannot hold the dataset."""


Entry = tuple[int, int]  # (size in bytes, modification time in whole seconds)

# Where the Deep Learning AMI (and common images) mount an instance's NVMe instance store.
FAST_DISKS = ("/opt/dlami/nvme", "/mnt/nvme", "/local_disk0")


def shell_path(path: str) -> str:
    """Quote a remote path for the shell, leaving a leading `~/` for the shell to expand."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def data_root(session: Session, fallback: str = "~/orch-data") -> str:
    """The machine's fast local disk when it has a writable one mounted, else `fallback`.

    Instance store is lost when the instance stops; the sync is incremental, so a new disk is
    simply filled again.
    """
    candidates = " ".join(shlex.quote(d) for d in FAST_DISKS)
    result = session.run(f"for d in {candidates}; do if mountpoint -q \"$d\" && [ -w \"$d\" ]; then "
                         f"echo \"$d\"; exit 0; fi; done; exit 1", timeout=60)
    return result.stdout.strip() if result.ok and result.stdout.strip() else fallback


# -- manifests ----------------------------------------------------------------------------------------
def local_manifest(root: Path) -> dict[str, Entry]:
    """Every regular file under `root`, keyed by its relative POSIX path; links to files and folders followed.

    A folder is identified by (st_dev, st_ino), so a link back to a folder it sits in is refused
    rather than followed forever; a broken link is refused too (a disk that is not mounted).
    """
    out: dict[str, Entry] = {}
    top = os.stat(root)
    stack: list[tuple[str, frozenset]] = [("", frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        rel_dir, parents = stack.pop()
        folder = root / rel_dir if rel_dir else root
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            raise SyncError(f"could not list {folder} on this machine ({e.strerror or e}); nothing was sent. "
                            f"Make it readable (chmod a+rx {shlex.quote(str(folder))}) or move it out of {root}, "
                            "then run the same command again.") from None
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as e:
                if not entry.is_symlink():
                    continue  # removed while listing: not part of the dataset any more
                raise SyncError(f"{entry.path} is a link to {os.readlink(entry.path)}, which "
                                f"{'does not exist' if isinstance(e, FileNotFoundError) else f'cannot be read ({e.strerror})'}"
                                " (is its disk mounted?). Nothing was sent. Fix the link or remove it, then run the "
                                "same command again.") from None
            if stat.S_ISDIR(st.st_mode):
                folder_id = (st.st_dev, st.st_ino)
                if folder_id in parents:
                    raise SyncError(f"{entry.path} links back to {os.path.realpath(entry.path)}, a folder it is in: "
                                    "the dataset would never end. Nothing was sent. Remove that link, then run the "
                                    "same command again.")
                stack.append((rel, parents | {folder_id}))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = (st.st_size, int(st.st_mtime))
    return out


def remote_manifest(session: Session, remote_dir: str) -> dict[str, Entry]:
    """The same listing on the machine (GNU find), creating `remote_dir` if it is missing."""
    q = shell_path(remote_dir)
    stream = session.exec_stream(f"mkdir -p -- {q} && cd -- {q} && find . -type f -printf '%s %T@ %P\\0'")
    try:
        raw = stream.stdout.read()
        err = stream.stderr.read()
        code = stream.wait(300)
    except TRANSPORT_ERRORS as e:
        raise ConnectionLost(f"the connection to {session.where} dropped while listing {remote_dir} ({e})") from e
    finally:
        stream.close()
    if code != 0:
        raise SyncError(f"could not list {remote_dir} on {session.where} (exit {code}): "
                        f"{err.decode(errors='replace').strip()[-500:]}")
    out: dict[str, Entry] = {}
    for record in raw.split(b"\0"):
        if not record:
            continue
        size, mtime, name = record.split(b" ", 2)
        out[os.fsdecode(name)] = (int(size), int(mtime.split(b".")[0]))
    return out


def remote_free_bytes(session: Session, remote_dir: str) -> int:
    result = session.run(f"df -Pk -- {shell_path(remote_dir)}", timeout=60)
    try:
        return int(result.stdout.splitlines()[1].split()[3]) * 1024
    except (IndexError, ValueError) as e:
        raise SyncError(f"could not read free space of {remote_dir} on {session.where}: "
                        f"{(result.stderr or result.stdout).strip()[-300:]}") from e


def _blocks(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _gb(n: int) -> str:
    """A size for a message: GB for datasets, MB or kB when that is all there is."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale / 10:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 1e3:.0f} kB"


# -- the transfer -------------------------------------------------------------------------------------
class _Unreadable(Exception):
    """A local file could not be read (a problem here, not with the connection)."""

    def __init__(self, rel: str, why: str, missing: bool = False):
        super().__init__(why)
        self.rel, self.why, self.missing = rel, why, missing


class _Counted:
    """A file wrapper that reports bytes as tarfile reads them, and local read failures as `_Unreadable`."""

    def __init__(self, f, advance: Callable[[int], None], rel: str, size: int):
        self._f, self._advance, self._rel, self._left = f, advance, rel, size

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._f.read(n)
        except OSError as e:
            raise _Unreadable(self._rel, e.strerror or str(e)) from e
        self._left -= len(data)
        if 0 <= len(data) < n and self._left > 0:  # tarfile asks for exactly what the header promised
            raise _Unreadable(self._rel, f"it shrank by {self._left} bytes while being sent")
        self._advance(len(data))
        return data


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    progress = Progress(TextColumn("sync"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True))
    progress.start()
    progress.add_task("sync", total=total)
    return progress


def _send(session: Session, local_dir: Path, remote_dir: str, names: list[str], total: int,
          progress: bool) -> int:
    """Stream `names` as one tar into `tar -x` on the machine; return how many were fully handed over."""
    q = shell_path(remote_dir)
    stream = session.exec_stream(f"mkdir -p -- {q} && exec tar -x -f - -C {q} --no-same-owner")
    stderr_tail: collections.deque[bytes] = collections.deque(maxlen=64)

    def drain_stderr():  # tar's errors must be read, or a flood of them would stall the channel
        try:
            for line in stream.stderr:
                stderr_tail.append(line)
        except (OSError, EOFError, ValueError):
            pass

    drainer = threading.Thread(target=drain_stderr, daemon=True)
    drainer.start()
    bar = _progress_bar(total, progress)
    advance = (lambda n: bar.advance(0, n)) if bar else (lambda n: None)
    handed = 0
    broken: Exception | None = None
    unreadable: list[_Unreadable] = []  # skipped (could not be opened), then at most one cut mid-file
    cut_mid_file = False
    try:
        with tarfile.open(fileobj=stream.stdin, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_CHUNK) as tar:
            for rel in names:
                try:  # the manifest followed links: so do stat and open, and the contents are sent
                    f = open(local_dir / rel, "rb")
                    st = os.fstat(f.fileno())
                except OSError as e:  # skipped before its header: the archive stays whole, the rest is sent
                    unreadable.append(_Unreadable(rel, e.strerror or str(e), missing=isinstance(e, FileNotFoundError)))
                    continue
                with f:
                    info = tarfile.TarInfo(rel)
                    info.size, info.mtime, info.mode = st.st_size, st.st_mtime, st.st_mode & 0o777
                    tar.addfile(info, _Counted(f, advance, rel, st.st_size))
                handed += 1
        stream.close_stdin()
        code = stream.wait(600)
    except _Unreadable as e:  # mid-file: the machine's tar sees a cut archive; that file is resent next time
        unreadable.append(e)
        code, cut_mid_file = None, True
        try:
            stream.close_stdin()
            stream.wait(60)
        except (*TRANSPORT_ERRORS, ConnectionLost, TimeoutError):
            pass
    except (*TRANSPORT_ERRORS, tarfile.TarError, ConnectionLost) as e:
        broken, code = e, None
    finally:
        if bar:
            bar.stop()
    drainer.join(timeout=10)
    stream.close()
    errors = b"".join(stderr_tail).decode(errors="replace").strip()
    if "No space left on device" in errors or "Disk quota exceeded" in errors:
        raise DiskFull(f"the disk under {remote_dir} on {session.where} filled up during the sync "
                       f"({handed} of {len(names)} files handed over). Kept: the files that arrived stay, so the "
                       "next sync sends only the rest. Fix: free space there or use a larger volume, then run "
                       "the same command again.")
    if broken is not None:
        raise ConnectionLost(f"the sync to {session.where}:{remote_dir} was cut after {handed} of {len(names)} "
                             f"files ({type(broken).__name__}: {broken}). Kept: the files that arrived; run the "
                             "same command again and it sends only what is missing." + (f"\n{errors}" if errors else ""))
    if unreadable:
        listed = "; ".join(f"{local_dir / u.rel} ({u.why})" for u in unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
        stopped = " The sync stopped at the last one." if cut_mid_file else ""
        first = local_dir / unreadable[0].rel
        fix = ("they were deleted or moved after the sync listed the folder: run the same command again"
               if all(u.missing for u in unreadable) else
               f"make them readable (e.g. chmod a+r {shlex.quote(str(first))}, or fix their owner) or move them out "
               f"of {local_dir}, then run the same command again")
        raise SyncError(f"could not read {len(unreadable)} local file(s) on this machine: {listed}.{stopped} Kept: the "
                        f"{handed} files sent arrived and are not sent again. Fix: {fix}.")
    if code != 0:
        raise SyncError(f"tar on {session.where} failed (exit {code}) extracting into {remote_dir}: {errors[-1000:]}. "
                        "Kept: the files that arrived; run the same command again to resend the rest.")
    return handed


# -- the entry points ---------------------------------------------------------------------------------
def sync_dataset(session: Session, local_dir: Path | str, remote_dir: str, progress: bool = True) -> SyncReport:
    """Make `remote_dir` on the machine hold every file of `local_dir` (same size and time); send only changes."""
    start = time.monotonic()
    local_dir = Path(local_dir).expanduser()
    if not local_dir.is_dir():
        raise SyncError(f"the data folder {local_dir} does not exist or is not a folder; nothing was sent. "
                        "Pass --data with an existing folder, an s3:// URI, or `demo`.")
    local = local_manifest(local_dir)
    with LinkWatch(session):
        return _sync(session, local_dir, local, remote_dir, progress, start)


def _sync(session: Session, local_dir: Path, local: dict[str, Entry], remote_dir: str, progress: bool,
          start: float) -> SyncReport:
    remote = remote_manifest(session, remote_dir)
    todo = sorted(rel for rel, entry in local.items() if remote.get(rel) != entry)
    bytes_total = sum(size for size, _ in local.values())
    bytes_todo = sum(local[rel][0] for rel in todo)

    needed = sum(_blocks(local[rel][0]) - _blocks(remote[rel][0] if rel in remote else 0) for rel in todo)
    if todo and needed > 0:
        free = remote_free_bytes(session, remote_dir)
        if needed > free:
            raise DiskFull(f"{remote_dir} on {session.where} has {_gb(free)} free but the dataset needs "
                           f"{_gb(needed)} more ({len(todo)} files). Nothing was sent. Fix: free space there, "
                           "or launch with a larger volume or a smaller --data folder.")
    if todo:
        _send(session, local_dir, remote_dir, todo, bytes_todo, progress)

    after = remote_manifest(session, remote_dir)
    wrong = [rel for rel, entry in local.items() if after.get(rel) != entry]
    if wrong:
        sample = ", ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else "")
        raise SyncError(f"after the sync, {len(wrong)} of {len(local)} files differ on {session.where} under "
                        f"{remote_dir} (size or time): {sample}. Kept: everything that arrived; run the same "
                        "command again to resend them (a file changing locally during the sync also causes this).")
    got_bytes = sum(after[rel][0] for rel in local)
    if got_bytes != bytes_total:  # cannot happen when every entry matched; a guard against a logic slip
        raise SyncError(f"byte count on the machine ({got_bytes}) differs from local ({bytes_total})")
    return SyncReport(files_total=len(local), files_sent=len(todo), bytes_sent=bytes_todo,
                      bytes_total=bytes_total, seconds=time.monotonic() - start)


def sync_s3(session: Session, uri: str, remote_dir: str) -> SyncReport:
    """`aws s3 sync` run ON the machine with its instance profile.

    The command is built from `uri` and `remote_dir` only; no local credential or AWS_* variable is
    ever sent (the SSH session forwards no environment).
    """
    start = time.monotonic()
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise SyncError(f"{uri!r} is not an s3:// URI (expected s3://bucket/prefix/)")
    before = remote_manifest(session, remote_dir)
    cmd = f"aws s3 sync {shlex.quote(uri)} {shell_path(remote_dir)} --only-show-errors --no-progress"
    with LinkWatch(session):  # an hour-long copy: a silent link must not hang it for good
        try:
            result = session.run(cmd)
        except ConnectionLost as e:
            raise ConnectionLost(f"{e}. `aws s3 sync` resumes: run the same command again.") from e
    if result.exit_code == 127:
        raise SyncError(f"the AWS CLI is not installed on {session.where}; the Deep Learning AMI ships it. "
                        "Install it there (`sudo snap install aws-cli --classic`) or sync a local folder instead.")
    if result.exit_code != 0:
        text = (result.stderr or result.stdout).strip()[-1500:]
        if "No space left on device" in text:
            raise DiskFull(f"the disk under {remote_dir} on {session.where} filled up copying {uri}. Kept: the "
                           "files that arrived; free space or use a larger volume, then run the same command again.")
        raise SyncError(f"`aws s3 sync` on {session.where} failed (exit {result.exit_code}): {text}\n"
                        "It runs with the instance's role, never your local credentials: check the role allows "
                        f"s3:ListBucket and s3:GetObject on {uri} (see infra/).")
    after = remote_manifest(session, remote_dir)
    changed = [rel for rel, entry in after.items() if before.get(rel) != entry]
    return SyncReport(files_total=len(after), files_sent=len(changed), bytes_sent=sum(after[r][0] for r in changed),
                      bytes_total=sum(size for size, _ in after.values()), seconds=time.monotonic() - start)
