"""`orch tensorboard`: a job's TensorBoard in this machine's browser, at http://127.0.0.1:PORT/, until Ctrl-C.

An instance's job: TensorBoard runs on the instance (on its 127.0.0.1 only) and is carried here over the
job's SSH connection (machines/instance.py). A local job, or outputs already fetched (`--fetched DIR`):
this machine's `tensorboard` on them (machines/tensorboard_here.py).
"""
from __future__ import annotations

import contextlib
import os
import sys
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from orchestrator.config import ConfigError, Settings
from orchestrator.job import tensorboard as job_tensorboard
from orchestrator.lifecycle import machines
from orchestrator.lifecycle.progress import Say, quiet
from orchestrator.lifecycle.resume import outputs_root_for, remote_root_for
from orchestrator.machines import tensorboard_here
from orchestrator.machines.base import Viewer

DEFAULT_PORT = 6006  # TensorBoard's own
CONSOLE_BROWSERS = ("www-browser", "links", "elinks", "lynx", "w3m")  # they would take over this terminal


@dataclass(frozen=True)
class TensorBoardRequest:
    job: str | None  # None with `fetched`
    port: int = DEFAULT_PORT
    fetched: Path | None = None  # outputs already fetched (`orch fetch-weights`): DIR/tensorboard is read


def check(request: TensorBoardRequest) -> None:
    """Refuse what can't work (a usage error, exit 2) before anything is asked of a machine."""
    if not 1 <= request.port <= 65535:
        raise ConfigError(f"--port {request.port}: use a port from 1 to 65535 (TensorBoard's own is {DEFAULT_PORT})")
    if request.fetched is not None:
        fetched_logdir(request.fetched)
    elif not request.job:
        raise ConfigError("name a job (`orch tensorboard JOB`), or a folder of fetched outputs (--fetched DIR)")


def fetched_logdir(folder: Path) -> Path:
    """DIR/tensorboard of fetched outputs; a usage error when it is not there."""
    folder = folder.expanduser()
    logdir = folder / "tensorboard"
    if not logdir.is_dir():
        what = "does not exist" if not folder.exists() else "has no tensorboard/ folder"
        raise ConfigError(f"--fetched {folder}: it {what}. `orch fetch-weights JOB --dest {folder}` brings a job's "
                          "TensorBoard files (OUT/tensorboard) with its weights.")
    return logdir


@contextlib.contextmanager
def serve(request: TensorBoardRequest, settings: Settings, say: Say = quiet) -> Iterator[Viewer]:
    """TensorBoard at this machine's 127.0.0.1:`request.port`; stopped, and what was started for it removed, after."""
    check(request)
    if request.fetched is not None:
        here = tensorboard_here.start(fetched_logdir(request.fetched), request.port)
        with job_tensorboard.closing(here, say) as viewer:
            yield viewer
        return
    job = request.job
    machine = machines.machine_for(job, settings)
    with job_tensorboard.serve(machine, request.port, remote_root=remote_root_for(job, settings),
                               outputs_root=outputs_root_for(job), say=say) as viewer:
        yield viewer


def watch(viewer: Viewer) -> str:
    """Block while it serves; why it stopped by itself (Ctrl-C raises KeyboardInterrupt out of here)."""
    return job_tensorboard.watch(viewer)


def open_browser(url: str) -> bool:
    """Open `url` in the desktop's browser; False (nothing opened) without a display, or with only a browser that
    would run in this terminal."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")) and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        browser = webbrowser.get()
        if type(browser) is webbrowser.GenericBrowser and os.path.basename(browser.name) in CONSOLE_BROWSERS:
            return False
        return bool(browser.open(url, new=2))
    except (webbrowser.Error, OSError):
        return False
