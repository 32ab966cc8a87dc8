"""The `tensorboard` command installed on this machine, on a folder here: a local job's outputs, or outputs already
fetched (`orch tensorboard --fetched DIR`). orch itself does not need TensorBoard: without it, `start` says how
to install it and starts nothing.

    viewer = start(Path("weights/r50/tensorboard"), 6006)   # once it answers on http://127.0.0.1:6006/
    viewer.ended()                                           # None while it serves, else why it stopped
    viewer.close()                                           # stops it (and its data server)
"""
from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from orchestrator.errors import JobError, ToolMissing
from orchestrator.remote.forward import listen_loopback

READY_S = 60.0  # from the start to its first answer: TensorBoard imports for a few seconds
STOP_S = 10.0
INSTALL = "pip install 'orch[tensorboard]'"


def command() -> list[str] | None:
    """`tensorboard` beside this Python (orch's own environment, where `pip install 'orch[tensorboard]'` puts it
    and where pipx does not put it on PATH), else the one on PATH; None when neither is there."""
    beside = Path(sys.executable).parent / "tensorboard"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("tensorboard")
    return [found] if found else None


def missing_message(logdir: Path) -> str:
    return (f"TensorBoard is not installed on this machine, so nothing was started. Install it where orch is "
            f"(`{INSTALL}`, or `pip install tensorboard`), then run the same command again; or run "
            f"`tensorboard --logdir {logdir}` wherever it is installed.")


class LocalTensorBoard:
    """A `tensorboard` process of this machine, serving on its 127.0.0.1:`port`."""

    def __init__(self, proc: subprocess.Popen, port: int):
        self._proc, self.port = proc, port
        self.url = f"http://127.0.0.1:{port}/"
        self._said: collections.deque[str] = collections.deque(maxlen=20)
        self._reader = threading.Thread(target=self._read, name="orch-tensorboard-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for line in self._proc.stdout:  # read all of it: a full pipe would stall TensorBoard
                self._said.append(line.decode(errors="replace").rstrip())
        except (OSError, ValueError):
            pass

    def _output(self) -> str:
        time.sleep(0.2)  # the reader's last lines
        return "\n".join(self._said) or "(nothing)"

    def wait_ready(self, deadline_s: float = READY_S) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            if self._proc.poll() is not None:
                raise JobError(f"tensorboard exited (code {self._proc.returncode}) before it served; it said:\n"
                               f"{self._output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise JobError(f"tensorboard did not answer on 127.0.0.1:{self.port} within {deadline_s:.0f} s; "
                               f"it said:\n{self._output()}")
            time.sleep(0.2)

    def ended(self) -> str | None:
        if self._proc.poll() is None:
            return None
        return f"tensorboard exited (code {self._proc.returncode}); it said:\n{self._output()}"

    def close(self) -> str | None:
        if self._proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, STOP_S), (signal.SIGKILL, STOP_S)):
                try:
                    os.killpg(self._proc.pid, sig)  # its group: its data server goes too
                except ProcessLookupError:
                    break
                try:
                    self._proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._reader.join(STOP_S)  # its output ends with it (unless something it started holds the pipe)
        if not self._reader.is_alive():
            self._proc.stdout.close()
        if self._proc.poll() is None:
            return f"tensorboard (pid {self._proc.pid}) did not stop; `kill {self._proc.pid}` stops it."
        return None


def start(logdir: Path, port: int) -> LocalTensorBoard:
    """`tensorboard --logdir LOGDIR` on this machine's 127.0.0.1:`port`, once it answers there.

    Raises `ToolMissing` when it is not installed and `PortBusy` when the port is taken: nothing is started."""
    found = command()
    if found is None:
        raise ToolMissing(missing_message(logdir))
    listen_loopback(port).close()  # a taken port is said plainly (naming --port), before anything starts
    proc = subprocess.Popen([*found, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # Ctrl-C is orch's: it stops TensorBoard itself
    viewer = LocalTensorBoard(proc, port)
    try:
        viewer.wait_ready()
    except BaseException:
        viewer.close()
        raise
    return viewer
