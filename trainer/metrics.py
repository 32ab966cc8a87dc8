"""OUT/metrics.jsonl (one JSON object per epoch), OUT/config.json, and live progress output."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("trainer")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a kill: drop it, the epoch is redone
    return rows


def _write_atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def truncate_metrics(path: Path, completed_epochs: int) -> None:
    """Keep the lines of the epochs a resumed checkpoint has (later ones are redone)."""
    rows = [r for r in read_metrics(path) if r.get("epoch", 0) <= completed_epochs]
    _write_atomic_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_run_config(path: Path, config: dict[str, Any], extra: dict[str, Any]) -> None:
    import platform

    import torch
    import torchvision
    versions = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    doc = {"config": config, **extra, "versions": versions, "git_revision": git_revision(), "host": platform.node()}
    _write_atomic_text(path, json.dumps(doc, indent=2) + "\n")


def setup_logging(log_file: Path | None, main_process: bool) -> None:
    """Human-readable lines to stderr and OUT/train.log (main process only). The other DDP ranks
    print errors only: their warnings repeat the main one's (the same data, settings and signal)."""
    logger = logging.getLogger("trainer")
    logger.setLevel(logging.INFO if main_process else logging.ERROR)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_file is not None and main_process:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.propagate = False


class Progress:
    """A rich progress bar on a terminal; a plain line every `every_seconds` otherwise (and in train.log)."""

    def __init__(self, enabled: bool, every_seconds: float):
        self.enabled = enabled
        self.every = every_seconds
        self.tty = enabled and sys.stderr.isatty()
        self._bar = None
        self._task = None
        self._last = 0.0

    def start(self, description: str, total: int) -> None:
        self.description, self.total, self._last = description, total, time.monotonic()
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, info="")

    def due(self) -> bool:
        """Whether an update would show anything now (the bar: 4 times a second)."""
        if not self.enabled:
            return False
        return time.monotonic() - self._last >= (0.25 if self._bar is not None else self.every)

    def update(self, done: int, info: str) -> None:
        if not self.enabled:
            return
        self._last = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=info)
        else:
            log.info("%s %d/%d %s", self.description, done, self.total, info)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
