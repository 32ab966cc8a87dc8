"""A prepared dataset as a few hundred large tar shards and a manifest, and back: how a dataset is kept
in a bucket and restored onto a new machine fast (large objects move at the link's speed; 1.3 million
small ones do not).

    manifest = pack(Path("/data/imagenet"), Path("/staging/imagenet"))   # shard-00000.tar ... + manifest.json
    report = unpack(Path("/staging/imagenet"), Path("/data/imagenet"))   # checked, then extracted

The shards are plain tar files (uncompressed: JPEGs don't shrink), deterministic (sorted members,
mode 0644, no owners, mtime 0), each about `shard_bytes`, with whole files only. `manifest.json` is
written last and names each shard's size, SHA-256 and file count, and the splits' classes and
images; without it there is no dataset.

`unpack` trusts nothing it reads: a manifest whose fields are not what `pack` writes (shard names
`shard-NNNNN.tar`, each once; sizes and counts whole numbers; SHA-256 in hex), a shard whose size or
SHA-256 differs from the manifest, or a member that is not a regular file under a plain relative
path (`..`, an absolute path, a hidden part, a link, a device, a sparse file, more bytes or files
than the manifest says) is refused, naming the shard, before anything of that shard is written; a
folder inside DEST that is a link is not followed. Shards are checked and extracted by `workers`
threads; each one done is recorded in DEST/.unpacked.json (a hidden name no member may have), so an
interrupted restore continues where it stopped. A DEST that holds another manifest's restore is
emptied first (no stale files from an older version); a DEST that holds anything else is refused.
With `delete_shards`, each shard is removed once extracted (the disk then holds one copy, not two).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

FORMAT = "orch-shards/1"
MANIFEST = "manifest.json"
DONE = ".unpacked.json"
DEFAULT_SHARD_BYTES = 512 << 20
_SHARD = re.compile(r"shard-\d{5}\.tar")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)


class ShardError(RuntimeError):
    """A pack or restore that cannot go on; the message says which file and why."""


@dataclass(frozen=True)
class Shard:
    name: str
    bytes: int
    sha256: str
    files: int


@dataclass
class Manifest:
    format: str
    files: int
    bytes: int  # of the files inside (the shards add tar headers)
    splits: dict  # split -> {"classes": n, "images": n}
    shards: list = field(default_factory=list)  # Shard as dicts

    @property
    def shard_list(self) -> list[Shard]:
        return [Shard(**s) for s in self.shards]


@dataclass(frozen=True)
class UnpackReport:
    shards: int
    shards_skipped: int  # extracted by an earlier, interrupted run
    files: int
    bytes: int
    seconds: float


def _members(data: Path) -> list[Path]:
    """The dataset's files: not hidden ones, nor anything in a hidden folder (prepare's journal, .unpacked.json)."""
    files = [p for p in data.rglob("*") if p.is_file() and not p.is_symlink()
             and not any(part.startswith(".") for part in p.relative_to(data).parts)]
    return sorted(files, key=lambda p: p.relative_to(data).as_posix())


def _splits(members: list[str]) -> dict:
    splits: dict[str, dict] = {}
    for name in members:
        parts = name.split("/")
        if len(parts) >= 3:
            split = splits.setdefault(parts[0], {"classes": set(), "images": 0})
            split["classes"].add(parts[1])
            split["images"] += 1
    return {s: {"classes": len(v["classes"]), "images": v["images"]} for s, v in sorted(splits.items())}


class _Hashing:
    """A file being written that hashes what goes through it."""

    def __init__(self, f):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def write(self, b) -> int:
        self.sha.update(b)
        self.n += len(b)
        return self.f.write(b)

    def tell(self) -> int:
        return self.n


def pack(data: Path, out: Path, shard_bytes: int = DEFAULT_SHARD_BYTES,
         on_progress: Callable[[int, int], None] | None = None) -> Manifest:
    """Pack the folder `data` (a prepared dataset) into `out`; `on_progress(bytes done, bytes total)`."""
    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise ShardError(f"{data} is not a folder")
    files = _members(data)
    if not files:
        raise ShardError(f"{data} holds no files to pack")
    if out.resolve().is_relative_to(data.resolve()):
        raise ShardError(f"the shards' folder {out} is inside {data}: choose one outside it")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # until the new one is written, there is no dataset here
    for old in out.glob("shard-*.tar"):
        old.unlink()
    sizes = [p.stat().st_size for p in files]
    total, done = sum(sizes), 0
    shards: list[dict] = []
    group: list[tuple[Path, int]] = []
    group_bytes = 0

    def flush() -> None:
        nonlocal done
        name = f"shard-{len(shards):05d}.tar"
        with open(out / (name + ".partial"), "wb") as raw:
            hashing = _Hashing(raw)
            with tarfile.open(fileobj=hashing, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path, size in group:
                    info = tarfile.TarInfo(path.relative_to(data).as_posix())
                    info.size, info.mode, info.mtime = size, 0o644, 0
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                    done += size
                    if on_progress:
                        on_progress(done, total)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(out / (name + ".partial"), out / name)
        shards.append(asdict(Shard(name, hashing.n, hashing.sha.hexdigest(), len(group))))

    for path, size in zip(files, sizes):
        if group and group_bytes + size > shard_bytes:
            flush()
            group, group_bytes = [], 0
        group.append((path, size))
        group_bytes += size
    flush()
    names = [p.relative_to(data).as_posix() for p in files]
    manifest = Manifest(FORMAT, len(files), total, _splits(names), shards)
    tmp = out / (MANIFEST + ".partial")
    tmp.write_text(json.dumps(asdict(manifest), indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


def _whole(value, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} is {str(value)[:40]!r}, not a whole number")
    return value


def read_manifest(shards_dir: Path) -> Manifest:
    path = Path(shards_dir) / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path} is missing: not a packed dataset (or its packing did not finish)") from None
    except (OSError, ValueError) as e:
        raise ShardError(f"{path} can't be read ({type(e).__name__}: {e})") from None
    try:
        manifest = Manifest(raw["format"], _whole(raw["files"], "files"), _whole(raw["bytes"], "bytes"),
                            dict(raw["splits"]), list(raw["shards"]))
        shard_list = manifest.shard_list
        for s in shard_list:
            if not isinstance(s.name, str) or not _SHARD.fullmatch(s.name):
                raise ValueError(f"a shard is named {str(s.name)[:80]!r}: not shard-NNNNN.tar")
            _whole(s.bytes, f"{s.name}'s bytes")
            _whole(s.files, f"{s.name}'s files")
            if not isinstance(s.sha256, str) or not _SHA256.fullmatch(s.sha256):
                raise ValueError(f"{s.name}'s sha256 is not 64 hex digits")
        if len({s.name for s in shard_list}) != len(shard_list):
            raise ValueError("a shard is named twice")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ShardError(f"{path} is not a shard manifest ({type(e).__name__}: {e}): refused") from None
    if manifest.format != FORMAT:
        raise ShardError(f"{path}: format {manifest.format!r}, this trainer reads {FORMAT!r}")
    return manifest


def manifest_key(manifest: Manifest) -> str:
    """What identifies a manifest's shards (orch computes the same from manifest.json to skip shards done)."""
    return hashlib.sha256(json.dumps(manifest.shards, sort_keys=True).encode()).hexdigest()


def _safe_name(name: str) -> str | None:
    """The member's path if it is a plain relative one, else None."""
    if not name or "\\" in name or "\0" in name:
        return None
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("./") or any(part in ("..", "") or part.startswith(".") for part in p.parts):
        return None  # a hidden part too: pack never writes one, and DEST's own state is hidden
    return p.as_posix()


def _check(path: Path, shard: Shard) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ShardError(f"{shard.name} is missing from {path.parent}") from None
    if size != shard.bytes:
        raise ShardError(f"{shard.name}: {size:,} bytes, the manifest says {shard.bytes:,} (truncated or replaced); "
                         "nothing of it was extracted")
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    if sha.hexdigest() != shard.sha256:
        raise ShardError(f"{shard.name}: its SHA-256 differs from the manifest's (damaged or replaced); "
                         "nothing of it was extracted")


def _extract(path: Path, shard: Shard, dest: Path) -> tuple[int, int]:
    """Every member checked first (names, kinds, sizes), then written: a bad shard writes nothing."""
    root = dest.resolve()
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = []
            for m in tar:  # read one header at a time: a shard claiming millions of members stops early
                members.append(m)
                if len(members) > shard.files:
                    raise ShardError(f"{shard.name}: more files than the {shard.files} the manifest says: refused; "
                                     "nothing of this shard was extracted")
            names = set()
            for m in members:
                if m.type not in _REGULAR or m.sparse is not None or _safe_name(m.name) is None:
                    kind = ("a link" if m.issym() or m.islnk() else "a sparse file" if m.sparse is not None
                            else "not a regular file" if m.type not in _REGULAR else "a path")
                    raise ShardError(f"{shard.name}: member {m.name[:120]!r} is {kind} outside a plain relative "
                                     "path: refused; nothing of this shard was extracted")
                names.add(_safe_name(m.name))
            if len(members) != shard.files or len(names) != len(members):
                raise ShardError(f"{shard.name}: {len(names)} distinct files, the manifest says {shard.files}: "
                                 "refused; nothing of this shard was extracted")
            if sum(m.size for m in members) > shard.bytes:
                raise ShardError(f"{shard.name}: its members add up to more than the shard's {shard.bytes:,} bytes: "
                                 "refused; nothing of this shard was extracted")
            clash = next((n for n in names if any(str(parent) in names for parent in PurePosixPath(n).parents)),
                         None)
            if clash:
                raise ShardError(f"{shard.name}: {clash[:120]!r} is inside a member that is a file: refused; "
                                 "nothing of this shard was extracted")
            written = 0
            for m in members:
                target = dest / _safe_name(m.name)
                if not target.parent.resolve().is_relative_to(root):  # resolved before any folder is made
                    raise ShardError(f"{shard.name}: {m.name[:120]!r} would be written through a link in {dest}: "
                                     "refused")
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                tmp = target.with_name(target.name + ".partial")
                tmp.unlink(missing_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
                with os.fdopen(fd, "wb") as f:
                    while chunk := src.read(_CHUNK):
                        f.write(chunk)
                os.replace(tmp, target)  # replaces a link at target itself, never what it points to
                written += m.size
    except tarfile.TarError as e:
        raise ShardError(f"{shard.name} is not a readable tar ({e}): refused") from None
    except OSError as e:
        raise ShardError(f"{shard.name}: writing into {dest} failed ({type(e).__name__}: {e}); the same command "
                         "writes this shard again") from None
    return len(members), written


def _start_state(dest: Path, key: str) -> set[str]:
    """The shards an earlier run of this manifest restored into `dest`; another manifest's restore is emptied
    first, and a folder holding anything else is refused (nothing of it is touched)."""
    done_path = dest / DONE
    try:
        state = json.loads(done_path.read_text())
        names = state["shards"]
        if state.get("manifest") == key and isinstance(names, list):
            return {n for n in names if isinstance(n, str)}
        stale = True
    except FileNotFoundError:
        stale = False
    except (OSError, ValueError, KeyError, TypeError):
        stale = True  # our own state, damaged: what it covered can't be trusted
    if stale:
        for child in dest.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        return set()
    if any(dest.iterdir()):
        raise ShardError(f"{dest} is not empty and holds no restore of ours ({DONE}): choose an empty folder")
    return set()


def unpack(shards_dir: Path, dest: Path, workers: int = 4, delete_shards: bool = False,
           on_progress: Callable[[int, int], None] | None = None) -> UnpackReport:
    """Check and extract every shard into `dest`; `on_progress(shard bytes done, shard bytes total)`."""
    shards_dir, dest = Path(shards_dir), Path(dest)
    manifest = read_manifest(shards_dir)
    dest.mkdir(parents=True, exist_ok=True)
    done_path = dest / DONE
    key = manifest_key(manifest)
    done_names = _start_state(dest, key)
    if not done_path.exists():
        done_path.write_text(json.dumps({"manifest": key, "shards": []}))  # from here, DEST is a restore of ours
    todo = [s for s in manifest.shard_list if s.name not in done_names]
    total = sum(s.bytes for s in todo)
    lock = threading.Lock()
    progress = {"bytes": 0, "files": 0, "written": 0}
    start = time.monotonic()

    def one(shard: Shard) -> None:
        path = shards_dir / shard.name
        _check(path, shard)
        files, written = _extract(path, shard, dest)
        with lock:
            done_names.add(shard.name)
            tmp = done_path.with_name(DONE + ".partial")
            tmp.write_text(json.dumps({"manifest": key, "shards": sorted(done_names)}))
            os.replace(tmp, done_path)
            progress["bytes"] += shard.bytes
            progress["files"] += files
            progress["written"] += written
            if on_progress:
                on_progress(progress["bytes"], total)
        if delete_shards:
            path.unlink()

    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(one, s) for s in todo]
        try:
            for future in futures:
                future.result()  # the first failure is raised; shards already done stay recorded
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return UnpackReport(len(manifest.shards), len(manifest.shards) - len(todo), progress["files"],
                        progress["written"], time.monotonic() - start)
