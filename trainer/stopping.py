"""Reasons to stop training early and cleanly: SIGTERM/SIGINT/SIGHUP, a spot-interruption notice, a stop file.

The loop polls `StopRequest.reason` after each step; nothing here touches the model or files.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import urllib.request
from pathlib import Path

log = logging.getLogger("trainer")

IMDS = "http://169.254.169.254"
# SIGHUP: the terminal or SSH session the run was started from went away (not on Windows).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


def shield_worker_from_stop_signals(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a stop signal meant for the run must reach only the training
    process, which finishes its step and saves; a worker it killed would make the training process
    raise instead (torch turns a worker's death into an error at whatever line it is running).

    - Sent to the whole process group (`timeout`, `kill -- -PGID`, systemd, Slurm, Ctrl-C or a
      closed terminal): each worker leaves the group, and ignores SIGINT and SIGHUP sent to it alone.
    - SIGTERM sent to each process (`pkill -f "trainer train"` matches the workers' command lines
      too): a thread takes the worker's SIGTERMs with `sigwaitinfo` and exits only for one from the
      training process (how it shuts its workers down: torch's own rule, by the sender's pid) or
      once that process is gone; others are the training process's to act on. Without
      `sigwaitinfo` (macOS), torch's handler stays: such a SIGTERM kills the worker as before.
    Each worker also exits when its parent does (torch's watchdog)."""
    try:
        os.setpgid(0, 0)
    except (AttributeError, OSError):   # Windows; or not permitted here: group signals then reach it as before
        pass
    for sig in STOP_SIGNALS:
        if sig != signal.SIGTERM:   # Ctrl-C or a hang-up sent to a worker alone: the training process decides
            signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):
        parent = os.getppid()
        # Blocked before any other thread exists in the worker, so every thread it starts inherits the
        # mask and the signal waits for `sigwaitinfo` instead of running a handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=_take_worker_sigterms, args=(parent,), daemon=True, name="sigterm").start()


def _take_worker_sigterms(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent or os.getppid() != parent:
            os._exit(0)


class StopRequest:
    def __init__(self, stop_file: Path | None = None):
        self.reason: str | None = None      # "SIGTERM", "SIGINT", "SIGHUP", "spot", "stop-file"
        self.stop_file = stop_file
        self._previous: dict[int, object] = {}

    def install_signal_handlers(self) -> None:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.reason is None:
            log.warning("received %s: finishing this step, saving last.pt, then stopping", name)
        self.reason = self.reason or name

    def poll(self) -> str | None:
        if self.reason is None and self.stop_file is not None and self.stop_file.exists():
            log.warning("stop file %s appeared: saving last.pt, then stopping", self.stop_file)
            self.reason = "stop-file"
        return self.reason

    def watch_spot_notice(self, interval_s: float | None = None) -> None:
        """Poll the EC2 instance metadata for a spot interruption notice in a daemon thread (IMDSv2).

        AWS gives two minutes' notice; every 5 s (TRAINER_SPOT_POLL_SECONDS) leaves ample time to
        finish the step and save. The metadata endpoint is botocore's AWS_EC2_METADATA_SERVICE_ENDPOINT.
        """
        if interval_s is None:
            interval_s = float(os.environ.get("TRAINER_SPOT_POLL_SECONDS", "5"))

        def loop():
            while self.reason is None:
                if spot_interruption_pending():
                    log.warning("spot interruption notice: saving last.pt, then stopping")
                    self.reason = "spot"
                    return
                threading.Event().wait(interval_s)
        threading.Thread(target=loop, name="spot-notice", daemon=True).start()


def spot_interruption_pending(timeout_s: float = 1.0) -> bool:
    """True when IMDS lists a spot instance-action (404 means none; no IMDS means not on EC2)."""
    base = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", IMDS).rstrip("/")
    try:
        token_req = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                           headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
        token = urllib.request.urlopen(token_req, timeout=timeout_s).read().decode()
        req = urllib.request.Request(f"{base}/latest/meta-data/spot/instance-action",
                                     headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status == 200
    except OSError:  # URLError/HTTPError (404: no notice) and timeouts are all OSError
        return False
