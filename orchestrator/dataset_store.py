"""Where orch keeps datasets: on this machine, `$ORCH_HOME/datasets/<name>/` (the `--target local` store;
a bucket's comes with issue 20's cloud half).

    <name>/shards/        manifest.json + shard-NNNNN.tar, as `trainer pack` wrote them
    <name>/dataset.json   orch's description (records.DatasetInfo), written last: without it, no dataset
    <name>/data/          the copy jobs read, restored from the shards on first use (`trainer unpack`)

orch never imports the trainer: the manifest is read here as the JSON it is.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from orchestrator.config import ConfigError
from orchestrator.files import read_json, write_json
from orchestrator.paths import datasets_dir
from orchestrator.records import DatasetInfo

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
DESCRIPTION = "dataset.json"


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


def summary_of(shards: Path) -> dict:
    """Files, bytes, shards and the splits' classes and images, from `trainer pack`'s manifest."""
    manifest = json.loads((shards / "manifest.json").read_text())
    splits = manifest.get("splits") or {}
    return {"classes": int((splits.get("train") or {}).get("classes", 0)),
            "train_images": int((splits.get("train") or {}).get("images", 0)),
            "val_images": int((splits.get("val") or {}).get("images", 0)),
            "bytes": sum(int(s["bytes"]) for s in manifest["shards"]), "shards": len(manifest["shards"])}


def save(info: DatasetInfo) -> None:
    write_json(folder(info.name) / DESCRIPTION, asdict(info))


def get(name: str) -> DatasetInfo | None:
    raw = read_json(folder(name) / DESCRIPTION)
    if not raw:
        return None
    try:
        return DatasetInfo(**raw)
    except TypeError:
        return None


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
