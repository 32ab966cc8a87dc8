"""Where orch keeps datasets: on this machine, `$ORCH_HOME/datasets/<name>/` (the `--target local` store;
a bucket's comes with issue 20's cloud half).

    <name>/shards/        manifest.json + shard-NNNNN.tar, as `trainer pack` wrote them
    <name>/dataset.json   orch's description (records.DatasetInfo), written last: without it, no dataset
    <name>/data/          the copy jobs read, restored from the shards on first use (`trainer unpack`)

orch never imports the trainer: the manifest is read here as the JSON it is.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict, fields
from pathlib import Path

from orchestrator.config import ConfigError
from orchestrator.files import read_json, write_json
from orchestrator.paths import datasets_dir
from orchestrator.records import DatasetInfo

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
DESCRIPTION = "dataset.json"
SHARD_NAME = re.compile(r"shard-\d{5}\.tar")
SHA256 = re.compile(r"[0-9a-f]{64}")
VERSION = re.compile(r"[0-9A-Za-z]{1,40}")
KINDS = ("imagenet", "tiny-imagenet", "cifar100", "folder")


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise ConfigError(f"dataset name {name!r} is invalid: use 1-40 lowercase letters, digits and '-', starting "
                          "with a letter or digit (e.g. imagenet-256)")
    return name


def folder(name: str) -> Path:
    return datasets_dir() / check_name(name)


def shards_dir(name: str) -> Path:
    return folder(name) / "shards"


def data_dir(name: str) -> Path:
    return folder(name) / "data"


MAX_WHOLE = 1 << 53  # sizes and counts above it are no dataset's (and would overflow a float's $ figure)


def _whole(value) -> bool:
    return type(value) is int and 0 <= value <= MAX_WHOLE


def shard_entries(raw, where: str) -> tuple[tuple[str, int], ...]:
    """(name, bytes) of each shard a manifest names, checked as `trainer unpack` checks them (names
    shard-NNNNN.tar, each once; sizes whole numbers; SHA-256 in hex): a manifest read from a bucket or a
    machine decides file names and sizes here, so anything else is refused."""
    shards = raw.get("shards") if isinstance(raw, dict) else None
    if not isinstance(shards, list) or not shards:
        raise ConfigError(f"{where} is not a shard manifest (no shards): refused")
    entries = []
    for s in shards:
        ok = (isinstance(s, dict) and isinstance(s.get("name"), str) and SHARD_NAME.fullmatch(s["name"])
              and _whole(s.get("bytes")) and _whole(s.get("files")) and isinstance(s.get("sha256"), str)
              and SHA256.fullmatch(s["sha256"]))
        if not ok:
            raise ConfigError(f"{where} names a shard {str(s)[:120]!r} that `trainer pack` would not write: refused")
        entries.append((s["name"], s["bytes"]))
    if len({n for n, _ in entries}) != len(entries):
        raise ConfigError(f"{where} names a shard twice: refused")
    return tuple(entries)


def manifest_key(raw: dict) -> str:
    """What identifies a manifest's shards: the same as trainer/shards.py's manifest_key (it records it in
    DEST/.unpacked.json, which is how a machine knows which shards it restored already)."""
    return hashlib.sha256(json.dumps(raw["shards"], sort_keys=True).encode()).hexdigest()


def summary_of(shards: Path) -> dict:
    """Files, bytes, shards and the splits' classes and images, from `trainer pack`'s manifest."""
    where = shards / "manifest.json"
    try:
        manifest = json.loads(where.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where} can't be read ({type(e).__name__}: {e})") from None
    return summary_from(manifest, str(where))


def summary_from(manifest, where: str) -> dict:
    """summary_of, from a manifest already read (checked here)."""
    entries = shard_entries(manifest, where)
    splits = manifest.get("splits") if isinstance(manifest.get("splits"), dict) else {}

    def count(split: str, what: str) -> int:
        value = (splits.get(split) or {}).get(what, 0) if isinstance(splits.get(split), dict) else 0
        return value if _whole(value) else 0

    return {"classes": count("train", "classes"), "train_images": count("train", "images"),
            "val_images": count("val", "images"), "bytes": sum(b for _, b in entries), "shards": len(entries)}


_TYPES = {"name": str, "kind": str, "source": str, "classes": int, "train_images": int, "val_images": int,
          "bytes": int, "shards": int, "location": str, "created_at": str, "options": dict, "version": str}


def info_from(raw, name: str, location: str) -> DatasetInfo | None:
    """A description as orch wrote it, checked field by field (it may come from a bucket anyone with write
    access changed): None when it is not one. Its name must be the folder's, and where it is comes from
    where it was found (`location`), never from what it says."""
    if not isinstance(raw, dict) or raw.get("name") != name:
        return None
    known = {f.name for f in fields(DatasetInfo)}
    values = {k: v for k, v in raw.items() if k in known and k != "dollars_per_month"}
    for key, kind in _TYPES.items():
        if key in values and (type(values[key]) is not kind or (kind is int and not _whole(values[key]))):
            return None
    if values.get("kind") not in KINDS or not VERSION.fullmatch(values.get("version") or "0"):
        return None
    values["location"] = location
    try:
        return DatasetInfo(**values)
    except TypeError:  # a field missing
        return None


def save(info: DatasetInfo) -> None:
    write_json(folder(info.name) / DESCRIPTION, asdict(info))


def get(name: str) -> DatasetInfo | None:
    return info_from(read_json(folder(name) / DESCRIPTION), name, str(folder(name)))


def all_datasets() -> list[DatasetInfo]:
    root = datasets_dir()
    if not root.is_dir():
        return []
    found = (get(p.name) for p in sorted(root.iterdir()) if p.is_dir() and NAME_RE.fullmatch(p.name))
    return [d for d in found if d is not None]


def remove_parts(name: str) -> None:
    """What a dataset of this name held (description first, then shards and restored copy); the rest stays."""
    where = folder(name)
    (where / DESCRIPTION).unlink(missing_ok=True)
    for part in ("shards", "data"):
        shutil.rmtree(where / part, ignore_errors=True)


def remove(name: str) -> bool:
    where = folder(name)
    if not where.exists():
        return False
    (where / DESCRIPTION).unlink(missing_ok=True)  # first: a half-removed dataset is no dataset
    shutil.rmtree(where)
    return True
