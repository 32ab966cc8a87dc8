"""Timestamped log lines, as the Docker engine writes them (`docker logs -t`) and a local job's console.log.

`LogCursor` lets a follower that reconnects print each line once: none lost, none repeated.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from orchestrator.records import LogLine

_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ?")


def parse_timestamp_ns(text: str) -> int:
    """RFC 3339 with nanoseconds (what the engine prefixes log lines with) -> ns since the epoch."""
    m = _TS.match(text)
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    tz = m.group(3)
    offset = 0 if tz == "Z" else (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60) * (1 if tz[0] == "+" else -1)
    seconds = int(base.replace(tzinfo=timezone.utc).timestamp()) - offset
    frac = (m.group(2) or "").ljust(9, "0")
    return seconds * 1_000_000_000 + int(frac or 0)


# The engine's log drivers store a line longer than this in pieces, and `docker logs -t` prints each piece
# with a timestamp of its own, in the middle of the line.
ENGINE_PIECE_BYTES = 16 * 1024
_TS_BYTES = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d) ")


def engine_line(raw: bytes) -> LogLine:
    """One line of `docker logs -t` output: its first timestamp, and its text with the timestamps the engine put
    before each further 16 KiB piece taken out (they sit exactly at the piece boundaries, so text that merely looks
    like a timestamp elsewhere stays)."""
    first = _TS_BYTES.match(raw)
    if first is not None:
        pieces, rest = [raw[:first.end()]], raw[first.end():]
        while len(rest) > ENGINE_PIECE_BYTES and (ts := _TS_BYTES.match(rest, ENGINE_PIECE_BYTES)):
            pieces.append(rest[:ENGINE_PIECE_BYTES])
            rest = rest[ts.end():]
        raw = b"".join(pieces) + rest
    return split_log_line(raw.decode(errors="replace").rstrip("\r"))


def split_log_line(raw: str) -> LogLine:
    m = _TS.match(raw)
    if not m:
        return LogLine(0, raw)
    return LogLine(parse_timestamp_ns(raw), raw[m.end():])



class LogCursor:
    """Where a reader is in a log: the last timestamp printed and how many lines carried it.

    After a reconnect the engine sends again everything from that timestamp on; `fresh` lets
    through only what was not printed yet: no gap, no duplicate.
    """

    def __init__(self, since_ns: int | None = None):
        self.last_ns = since_ns or 0
        self.seen_at_last = 0

    def fresh(self, line: LogLine) -> bool:
        if line.ts_ns < self.last_ns:
            return False
        if line.ts_ns == self.last_ns:
            # The replay repeats lines at last_ns in order: skip as many as were printed.
            if self._replayed < self.seen_at_last:
                self._replayed += 1
                return False
            self.seen_at_last += 1
            self._replayed += 1
            return True
        self.last_ns, self.seen_at_last, self._replayed = line.ts_ns, 1, 1
        return True

    def restart(self) -> None:
        """Call before reading a new stream (a reconnect)."""
        self._replayed = 0

    _replayed = 0

    @property
    def since_ns(self) -> int | None:
        return self.last_ns or None




def now_rfc3339() -> str:
    """This moment as the engine stamps a log line: RFC 3339, nanoseconds, UTC."""
    ns = time.time_ns()
    return datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"
