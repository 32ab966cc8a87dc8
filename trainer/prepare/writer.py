"""Put each image in DEST/<split>/<class>/<name> and mark a class complete once all are there.

Without --resize-short the bytes are written as they came (one process: the work is I/O). With
it, decoding and re-encoding run in a process pool; the main process keeps reading the source,
and at most a few images per worker are in flight so memory stays flat. Each split has its own
short side (--resize-short-train), taken from the split each image is written to.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from trainer.prepare.catalog import Entry, Event, Expect
from trainer.prepare.journal import Journal
from trainer.prepare.shrink import PART, shrink_or_keep, shrink_to_file, write_atomic

# Fault injection for tests only: after this many classes complete in a run, the next image is
# left half-written and the run raises, as a kill or a full disk would leave it.
FAULT_ENV = "TRAINER_PREPARE_FAIL_AFTER_CLASSES"


class InjectedFault(RuntimeError):
    pass


@dataclass
class _Pending:
    remaining: set[str]
    count: int
    in_flight: int = 0


@dataclass
class Writer:
    dest: Path
    journal: Journal
    short_side: dict[str, int | None] = field(default_factory=dict)  # split -> short side; None: as they came
    workers: int = 1
    on_written: Callable[[str, int], None] = lambda split, n: None     # progress: images written
    pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    completed: int = 0
    bytes_written: int = 0
    # "split/class/name" of images --resize-short could not decode, stored unchanged
    undecodable: list[str] = field(default_factory=list)
    _pool: ProcessPoolExecutor | None = None
    _futures: deque = field(default_factory=deque)

    def __post_init__(self):
        fault = os.environ.get(FAULT_ENV)
        self._fail_after = int(fault) if fault else None
        if any(self.short_side.values()) and self.workers > 1:
            self._pool = ProcessPoolExecutor(self.workers)

    def handle(self, event: Event) -> None:
        if isinstance(event, Expect):
            (self.dest / event.split / event.cls).mkdir(parents=True, exist_ok=True)
            if event.names:  # a class with no images in the source is never marked complete
                key = (event.split, event.cls)
                self.pending[key] = _Pending(set(event.names), len(event.names))
            return
        key = (event.split, event.cls)
        state = self.pending.get(key)
        if state is None or event.name not in state.remaining:
            return  # a duplicate, or an image of a class this run does not write
        self._check_fault(event)
        path = self.dest / event.split / event.cls / event.name
        short = self.short_side.get(event.split)
        if self._pool is None or not short:
            data, decoded = event.data, True
            if short:
                data, decoded = shrink_or_keep(event.data, short, png=event.name.lower().endswith(".png"))
            write_atomic(path, data)
            if not decoded:
                self.undecodable.append(f"{event.split}/{event.cls}/{event.name}")
            self._written(key, event.name, len(data))
        else:
            state.in_flight += 1
            fut = self._pool.submit(shrink_to_file, event.data, str(path), short)
            self._futures.append((fut, key, event.name))
            while len(self._futures) > 4 * self.workers:
                self._drain_one()

    def finish(self) -> dict[tuple[str, str], int]:
        """Wait for the pool; returns {(split, class): images missing} for incomplete classes."""
        try:
            while self._futures:
                self._drain_one()
        finally:
            self.close()
        return {k: len(s.remaining) for k, s in self.pending.items() if s.remaining}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _drain_one(self) -> None:
        fut, key, name = self._futures.popleft()
        size, decoded = fut.result()
        if not decoded:
            self.undecodable.append(f"{key[0]}/{key[1]}/{name}")
        self.pending[key].in_flight -= 1
        self._written(key, name, size)

    def _written(self, key: tuple[str, str], name: str, size: int) -> None:
        state = self.pending[key]
        state.remaining.discard(name)
        self.bytes_written += size
        self.on_written(key[0], 1)
        self._maybe_complete(key)

    def _maybe_complete(self, key: tuple[str, str]) -> None:
        state = self.pending[key]
        if not state.remaining and state.in_flight == 0:
            self.journal.mark(key[0], key[1], state.count)
            del self.pending[key]
            self.completed += 1

    def _check_fault(self, event: Entry) -> None:
        if self._fail_after is not None and self.completed >= self._fail_after:
            part = self.dest / event.split / event.cls / f".{event.name}{PART}"
            part.write_bytes(event.data[: len(event.data) // 2])
            raise InjectedFault(f"{FAULT_ENV}={self._fail_after}: stopped after {self.completed} classes")
