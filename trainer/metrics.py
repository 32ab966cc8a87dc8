"""OUT/metrics.jsonl (one JSON object per epoch), OUT/config.json, and live progress output."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from trainer.forecast import Speed

if TYPE_CHECKING:   # the type only: reading metrics (report, tests) needs no torch
    from trainer.engine import EvalResult

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class EpochRow:
    """One line of metrics.jsonl. The names and their order are the file's format: report.py and orch
    read it, and a resumed run appends to lines an earlier version may have written."""
    epoch: int                    # 1-based
    epochs: int
    lr: float                     # after the epoch's last step
    train_res: int
    train_loss: float
    train_top1: float             # percent, of the training crops as trained (augmented, in train mode)
    val_loss: float | None        # None: not evaluated this epoch (--eval-every, or no time left)
    val_top1: float | None
    val_top5: float | None
    images_per_sec: float         # trained, all processes together; evaluation not counted
    epoch_seconds: float          # training only
    eval_seconds: float           # the last evaluation's (an earlier epoch's when this one skipped it)
    data_wait_fraction: float
    max_gpu_mem: float            # GiB, the peak of the process that writes the file; 0.0 off a GPU
    train_images: int
    skipped_images: int           # unreadable
    elapsed_hours: float          # the whole run so far, every resume together
    seconds_left: float | None    # projected (trainer/forecast.py); None: nothing to project from
    val_top1_flip: float | None = None   # --tta flip: val top-1 of the image and its mirror averaged (None: off)
    val_top5_flip: float | None = None


def epoch_row(epoch: int, epochs: int, lr: float, totals: Sequence[float], val: EvalResult | None, throughput: Speed,
              train_seconds: float, eval_seconds: float, max_gpu_mem: float, elapsed_seconds: float,
              seconds_left: float | None) -> EpochRow:
    """`epoch` 0-based; `totals`: the epoch's loss*n, correct, n and skipped, summed over processes;
    `throughput`: the epoch's own speed (images over its training time)."""
    n_train = max(1.0, float(totals[2]))
    return EpochRow(
        epoch=epoch + 1, epochs=epochs, lr=lr, train_res=throughput.res,
        train_loss=float(totals[0]) / n_train, train_top1=100 * float(totals[1]) / n_train,
        val_loss=None if val is None else val.loss, val_top1=None if val is None else val.top1,
        val_top5=None if val is None else val.top5,
        images_per_sec=throughput.images_per_sec, epoch_seconds=train_seconds, eval_seconds=eval_seconds,
        data_wait_fraction=throughput.data_wait, max_gpu_mem=max_gpu_mem, train_images=int(totals[2]),
        skipped_images=int(totals[3]), elapsed_hours=elapsed_seconds / 3600,
        seconds_left=None if seconds_left is None else round(seconds_left, 1),
        val_top1_flip=None if val is None else val.top1_flip, val_top5_flip=None if val is None else val.top5_flip,
    )


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


def append_metrics(path: Path, row: EpochRow) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(asdict(row)) + "\n")
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
