"""OUT/tensorboard/: the run's figures as TensorBoard scalars (`tensorboard --logdir OUT/tensorboard`).

Optional: without the `tensorboard` package the run logs one line saying so and trains as before
(metrics.jsonl and curves.png hold the same per-epoch figures). Only the main process writes, and
nothing here may stop training: a write that fails (a full disk, permissions) is one warning, and
the writing stops.

The x-axis ("step"):
- every number of an epoch's metrics.jsonl line (`EpochRow`) at step = the epoch, 1-based; the tag
  follows from the field's name (`epoch_tag`), so a field added to EpochRow appears by itself;
- while training, `running/train_loss` (the mean over the images since the previous point) and
  `running/lr`, at step = images into training: the completed epochs times the train images, plus
  the images of this epoch trained so far by all processes. It does not depend on the batch size or
  the number of processes, so it keeps rising across a resume that changes them.

A resumed run appends to the same folder. First it drops the events past its checkpoint (a run
killed after it saved wrote them, and the resumed run trains that part again), as metrics.jsonl is
cut back: no step is written twice, and none goes back.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.metrics import EpochRow

log = logging.getLogger("trainer")

RUNNING = "running/"               # the tags whose step counts images, not epochs
EVENT_FILES = "events.out.tfevents.*"
NOT_PLOTTED = ("epoch", "epochs")  # the x-axis itself, and the run's length
# EpochRow fields not named train_* or val_*: the section each is shown in (one added later: run/<field>).
SECTIONS = {"images_per_sec": "speed", "data_wait_fraction": "speed", "epoch_seconds": "time",
            "eval_seconds": "time", "elapsed_hours": "time", "seconds_left": "time", "max_gpu_mem": "gpu",
            "skipped_images": "data"}


def epoch_tag(field: str) -> str:
    """train_loss -> train/loss, val_top1_flip -> val/top1_flip, images_per_sec -> speed/images_per_sec, lr -> lr."""
    head, _, rest = field.partition("_")
    if head in ("train", "val") and rest:
        return f"{head}/{rest}"
    return field if field == "lr" else f"{SECTIONS.get(field, 'run')}/{field}"


def cut_back(logdir: Path, epochs_done: int, images_done: int) -> None:
    """Drop the events past a resumed run's position (and any written twice). The rest goes into the
    earliest event file, replaced atomically, then the later files are removed: an interruption in
    between leaves duplicates, never a loss, and the next resume drops them."""
    files = sorted(logdir.glob(EVENT_FILES))
    if not files:
        return
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    kept: list[bytes] = []
    seen: set[tuple[str, int]] = set()
    dropped = False
    for path in files:
        for record in RawEventFileLoader(str(path)).Load():   # a record torn by a kill ends its file
            event = Event.FromString(record)
            if event.HasField("summary") and event.summary.value:
                tag = event.summary.value[0].tag
                last = images_done if tag.startswith(RUNNING) else epochs_done
                if event.step > last or (tag, event.step) in seen:
                    dropped = True
                    continue
                seen.add((tag, event.step))
            kept.append(record)
    if not dropped:
        return
    tmp = logdir / ".cut-back.tmp"   # no "tfevents" in the name: readers never take it for an event file
    with open(tmp, "wb") as f:
        writer = RecordWriter(f)
        for record in kept:
            writer.write(record)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, files[0])
    for path in files[1:]:
        path.unlink()


class Scalars:
    """Writes while it has a writer; without one (turned off, not installed, failed) every call does nothing."""

    def __init__(self, writer: Any = None, logdir: Path | None = None, train_images: int = 0,
                 every_seconds: float = 5.0):
        self._writer = writer
        self._logdir = logdir
        self._train_images = train_images
        self._every = every_seconds
        self._last_point = float("-inf")
        self._since = (0.0, 0)   # this epoch's loss sum and images at the previous running point

    @classmethod
    def open(cls, logdir: Path, train_images: int, epochs_done: int, images_done: int,
             every_seconds: float) -> Scalars:
        """Write into `logdir`, after dropping what a resumed run redoes: `epochs_done` completed epochs
        and `images_done` of the next one (all processes together); `train_images`: one epoch's."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            why = "the tensorboard package is not installed" if isinstance(exc, ModuleNotFoundError) else str(exc)
            log.info("TensorBoard scalars are off: %s; `pip install tensorboard` turns them on (metrics.jsonl and "
                     "curves.png have the same figures; --set tensorboard=false drops this line)", why)
            return cls()
        try:
            if logdir.is_dir():
                cut_back(logdir, epochs_done, epochs_done * train_images + images_done)
            writer = SummaryWriter(str(logdir), flush_secs=10)
        except Exception as exc:  # noqa: BLE001 - TensorBoard must never stop training
            log.warning("TensorBoard scalars are off: could not write to %s (%s); training goes on (metrics.jsonl has "
                        "the same figures)", logdir, exc)
            return cls()
        log.info("TensorBoard scalars: %s (to see them: tensorboard --logdir %s)", logdir, logdir)
        return cls(writer, logdir, train_images, every_seconds)

    def step(self, epoch: int, images: int, loss_sum: float, seen: int, lr: float) -> None:
        """A running point, at most every `every_seconds`. `epoch`: 0-based; `images`: of the epoch, trained by all
        processes; `loss_sum`, `seen`: this process's loss*n and images so far this epoch (the progress line's)."""
        if self._writer is None or time.monotonic() - self._last_point < self._every:
            return
        before_sum, before_seen = self._since
        if seen <= before_seen:
            return
        self._last_point, self._since = time.monotonic(), (loss_sum, seen)
        self._write({f"{RUNNING}train_loss": (loss_sum - before_sum) / (seen - before_seen), f"{RUNNING}lr": lr},
                    epoch * self._train_images + images)

    def epoch(self, row: EpochRow) -> None:
        """Every number of the epoch's metrics.jsonl line that is not None, at step = the epoch (1-based)."""
        self._since = (0.0, 0)   # the next epoch's sums start from zero
        values = {epoch_tag(name): float(value) for name, value in dataclasses.asdict(row).items()
                  if name not in NOT_PLOTTED and isinstance(value, (int, float)) and not isinstance(value, bool)}
        self._write(values, row.epoch, flush=True)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as exc:  # noqa: BLE001 - the run is over or stopping: say so, go on
                self._warn(exc)

    def _write(self, values: dict[str, float], step: int, flush: bool = False) -> None:
        if self._writer is None:
            return
        try:
            for tag, value in values.items():
                self._writer.add_scalar(tag, value, step)
            if flush:   # an epoch's figures reach the disk (and a TensorBoard watching it) at once
                self._writer.flush()
        except Exception as exc:  # noqa: BLE001 - TensorBoard must never stop training
            self._warn(exc)
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - it failed already; what it still holds is lost
                pass

    def _warn(self, exc: Exception) -> None:
        log.warning("could not write TensorBoard scalars to %s (%s): none are written for the rest of this run; "
                    "training goes on (metrics.jsonl has the same figures)", self._logdir, exc)
