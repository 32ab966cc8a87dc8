"""Notice a link that went silent (a laptop that slept, a NAT that forgot the flow) while a transfer or a log stream runs."""
from __future__ import annotations

import threading

from orchestrator.remote.base import ConnectionLost, keepalive_s


class LinkWatch:
    """While open, ask the session's machine for a reply every `period_s` (default `keepalive_s()`);
    when none comes in twice that, abort the session, so that a read or write blocked on a silently
    dead link fails at once and the caller's reconnect or resume path takes over.

        with LinkWatch(session) as link:
            ...      # a ConnectionLost out of here starts with the watch's reason when the watch cut it

    A session without `check_alive` (this machine) is not watched.
    """

    def __init__(self, session, period_s: float | None = None):
        self.session = session
        self.period_s = period_s if period_s is not None else keepalive_s()
        self.lost = threading.Event()
        self._stop = threading.Event()
        if callable(getattr(session, "check_alive", None)):
            threading.Thread(target=self._watch, name="orch-link-watch", daemon=True).start()

    @property
    def reason(self) -> str:
        return f"{self.session.where} gave no answer for {2 * self.period_s:.0f} s"

    def _watch(self) -> None:
        while not self._stop.wait(self.period_s):
            if self.session.check_alive(timeout=2 * self.period_s) or self._stop.is_set():
                continue
            if not self.session.alive:  # closed, or dropped with a word: what was blocked has failed already
                return
            self.lost.set()
            self.session.abort()
            return

    def stop(self) -> None:
        self._stop.set()

    def __enter__(self) -> "LinkWatch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if isinstance(exc, ConnectionLost) and self.lost.is_set():
            raise ConnectionLost(f"{self.reason}: the connection was dropped. {exc}") from exc
