"""What a run has finished, kept in DEST/.prepare/ so an interrupted run resumes where it was.

  options.json        the choices the run was started with (a rerun must use the same ones)
  done/<split>/<cls>  one marker per (split, class) whose images are all in place; holds the count
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from trainer.prepare.catalog import SPLITS
from trainer.prepare.shrink import PART


class Journal:
    def __init__(self, dest: Path):
        self.dest = Path(dest)
        self.root = self.dest / ".prepare"

    def started(self) -> bool:
        return (self.root / "options.json").is_file()

    def options(self) -> dict | None:
        path = self.root / "options.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def start(self, options: dict) -> None:
        write_json(self.root / "options.json", options)

    def done(self) -> dict[tuple[str, str], int]:
        out = {}
        for split in SPLITS:
            folder = self.root / "done" / split
            if folder.is_dir():
                for marker in folder.iterdir():
                    if not marker.name.endswith(".tmp"):
                        out[(split, marker.name)] = int(marker.read_text())
        return out

    def mark(self, split: str, cls: str, count: int) -> None:
        folder = self.root / "done" / split
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{cls}.tmp"
        tmp.write_text(str(count))
        os.replace(tmp, folder / cls)

    def clean_partial(self, done: dict[tuple[str, str], int]) -> int:
        """Delete half-written files left by an interrupted run; returns how many."""
        removed = 0
        for split in SPLITS:
            split_dir = self.dest / split
            if not split_dir.is_dir():
                continue
            for cls_dir in split_dir.iterdir():
                if (split, cls_dir.name) in done or not cls_dir.is_dir():
                    continue
                for f in cls_dir.iterdir():
                    if f.name.endswith(PART):
                        f.unlink()
                        removed += 1
        return removed


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


