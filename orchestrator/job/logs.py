"""Follow a job's trainer output to this terminal, across dropped connections. Written once against `Machine`.

A dropped connection is reopened (for up to $ORCH_RECONNECT_S, default 600 s) and the stream
carries on from the last line printed: none lost, none repeated (`LogCursor`). A managed job's
machine (`replaceable`) is looked up again at each connection, and a trainer missing there is
waited for the same way: the stream goes on from its replacement's trainer. A link that goes
silent is noticed within about three times $ORCH_KEEPALIVE_S and treated the same way. A changed
host key or an unusable key file ends the following at once. Ctrl-C stops following, never the job.

    code = follow(machine, follow=True)     # the trainer's exit code once it ends (0 if still running)
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from orchestrator.errors import EngineUnreachable, JobError, MachineLost
from orchestrator.job.ended import ended_from
from orchestrator.job.logtext import LogCursor, parse_timestamp_ns
from orchestrator.printable import printable
from orchestrator.machines.base import SSH_DEADLINE_S, Machine
from orchestrator.records import JobEnded
from orchestrator.remote.base import TRANSPORT_ERRORS, HostKeyChanged, KeyFileError, RemoteError
from orchestrator.remote.linkwatch import LinkWatch

DEFAULT_RECONNECT_S = 600.0


class Replacing(Exception):
    """A replaceable machine's trainer is not there (yet): its replacement is being set up."""


def _connection_errors() -> tuple[type[BaseException], ...]:
    import requests
    import urllib3

    return (*TRANSPORT_ERRORS, RemoteError, EngineUnreachable, requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError, requests.exceptions.Timeout,
            urllib3.exceptions.ProtocolError)


_TIME = re.compile(r"(\d{4}-\d\d-\d\d)(?:[T ](\d\d:\d\d)(:\d\d(?:\.\d{1,9})?)?)?(Z|[+-]\d\d:\d\d)?", re.IGNORECASE)


def parse_since(since: str | None, now: datetime | None = None) -> int | None:
    """`--since` -> ns since the epoch: a duration (90s, 10m, 2h, 1d), Unix seconds, or a time
    (2024-05-01T12:00, 2024-05-01 12:00:30, 2024-05-01, 2024-05-01T12:00+02:00); without a zone, UTC."""
    if not since:
        return None
    text = since.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        now = now or datetime.now(timezone.utc)
        return int((now - timedelta(seconds=float(text[:-1]) * units[text[-1]])).timestamp() * 1e9)
    if text.replace(".", "", 1).isdigit():
        return int(float(text) * 1e9)
    m = _TIME.fullmatch(text)
    try:
        if not m:
            raise ValueError(text)
        day, minutes, seconds, zone = m.groups()
        return parse_timestamp_ns(f"{day}T{minutes or '00:00'}{seconds or ':00'}{(zone or 'Z').upper()}")
    except ValueError:
        raise JobError(f"--since {since!r}: use a duration (10m, 2h), a time (2026-01-31T08:00, UTC unless it "
                       "ends in Z or +HH:MM) or Unix seconds") from None


def follow(machine: Machine, follow: bool = False, since_ns: int | None = None, out=None,
           reconnect_s: float | None = None, machine_lost: Callable[[], bool] | None = None, check_s: float = 30.0,
           keepalive_s: float | None = None, ended: Callable[[JobEnded], None] | None = None) -> int:
    """Stream the trainer's output to `out` (stdout); return its exit code (or 0 if still running).

    `machine_lost`, asked every `check_s` seconds, ends the following with `MachineLost` once it
    says True (the caller knows the cloud; this module does not). `ended` is called once the
    trainer has exited for good, before returning its exit code. Each session is watched
    (`LinkWatch`, every `keepalive_s`, default $ORCH_KEEPALIVE_S): the engine's log stream has no
    timeout, so a silently dead link would block it for good.
    """
    job = machine.job
    # Watched: short SSH attempts, so a machine that is gone is noticed between them, not after minutes.
    deadline_s = SSH_DEADLINE_S if machine_lost is None else min(SSH_DEADLINE_S, max(10.0, 2 * check_s))
    out = out or sys.stdout
    if reconnect_s is None:  # a managed job's replacement boots, restores and starts: longer than a dropped link
        reconnect_s = float(os.environ.get("ORCH_RECONNECT_S", 3 * DEFAULT_RECONNECT_S if machine.replaceable
                                           else DEFAULT_RECONNECT_S))
    errors = _connection_errors()
    cursor = LogCursor(since_ns)
    lost_since: float | None = None
    waiting_since: float | None = None  # a replaceable machine's trainer missing since (its replacement sets up)
    gone, done = threading.Event(), threading.Event()
    current: list = []  # the open session, for the watchdog to close

    def watchdog():  # a blocked log read only ends when its connection does: close it
        while not done.wait(check_s):
            try:
                lost = machine_lost()
            except Exception:  # the cloud can't be asked right now: keep following
                lost = False
            if lost:
                gone.set()
                for s in list(current):
                    try:
                        getattr(s, "abort", s.close)()  # its link is likely dead: no goodbye, it would block
                    except Exception:
                        pass
                return

    def check_gone():
        if gone.is_set():
            raise MachineLost(f"the machine of job {job!r} is gone; stopped following its logs")

    if machine_lost is not None:
        threading.Thread(target=watchdog, name="orch-machine-watch", daemon=True).start()
    try:
        while True:
            session = runner = link = None
            try:
                check_gone()
                session = machine.open(deadline_s)
                current[:] = [session]
                link = LinkWatch(session, keepalive_s)
                check_gone()
                runner = machine.runner(session)
                if lost_since is not None and waiting_since is None:
                    print(f"[orch] reconnected to {session.where}; carrying on", file=sys.stderr, flush=True)
                lost_since = None
                while True:
                    cursor.restart()
                    for line in runner.logs(cursor.since_ns, follow):
                        if cursor.fresh(line):
                            out.write(printable(line.text) + "\n")
                            out.flush()
                    st = runner.state()
                    check_gone()
                    if st.state != "missing":
                        waiting_since = None
                    elif machine.replaceable and follow:
                        raise Replacing(f"no {runner.what} on {session.where}: AWS is replacing the instance, and "
                                        "the new one starts the job itself; waiting for it")
                    if st.state == "missing":
                        raise JobError(f"job {job!r} has no {runner.what} on {session.where}. "
                                       "See `orch status` (it may have been torn down).")
                    if st.ended:
                        cursor.restart()
                        for line in runner.logs(cursor.since_ns, follow=False, partial=True):
                            if cursor.fresh(line):  # a last line with no newline, if any
                                out.write(printable(line.text) + "\n")
                        out.flush()
                        if ended is not None:
                            ended(ended_from(st))
                        return int(st.exit_code or 0)
                    if not follow:
                        return 0
                    time.sleep(0.5)  # restarting (crash, then resume): attach again
            except (HostKeyChanged, KeyFileError):
                raise  # no reconnect can fix these; the message says what does
            except (*errors, Replacing) as e:
                check_gone()
                now = time.monotonic()
                said_before = lost_since is not None or waiting_since is not None
                lost_since = lost_since or now
                if isinstance(e, Replacing):  # a connection that works does not end the wait for the trainer
                    waiting_since = lost_since = waiting_since or now
                why = link.reason if link is not None and link.lost.is_set() else type(e).__name__
                if not follow or now - lost_since > reconnect_s:
                    raise JobError(f"lost the connection to job {job!r} ({why}: {e}). The job "
                                   f"keeps running; `orch logs {job} --follow` picks up where this stopped.") from None
                if not (said_before and machine.replaceable):  # a replacement takes minutes: said once
                    print(f"[orch] {e}" if isinstance(e, Replacing) else
                          f"[orch] connection lost ({why}); reconnecting", file=sys.stderr, flush=True)
                time.sleep(5.0 if machine.replaceable else 1.0)
            finally:
                current.clear()
                if link is not None:
                    link.stop()
                if runner is not None:
                    try:
                        runner.close()
                    except Exception:
                        pass
                if session is not None:
                    try:
                        session.close()
                    except Exception:
                        pass
    except KeyboardInterrupt:
        print(f"\n[orch] stopped following; the job keeps running. Again: orch logs {job} --follow",
              file=sys.stderr, flush=True)
        return 130
    finally:
        done.set()


