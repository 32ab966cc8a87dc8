"""A job's TensorBoard, served at this machine's 127.0.0.1 until Ctrl-C. Written once against `Machine`.

    with serve(machine, 6006, say=print) as viewer:      # where it runs, and how it gets here, is the machine's
        print(viewer.url)                                # http://127.0.0.1:6006/
        why = watch(viewer)                              # returns when it stops by itself; Ctrl-C raises out
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

from orchestrator.job.control import outputs_of
from orchestrator.machines.base import SSH_DEADLINE_S, Machine, Say, Viewer

POLL_S = 0.5


@contextlib.contextmanager
def serve(machine: Machine, port: int, remote_root: str | None = None, outputs_root: str | None = None,
          say: Say = lambda m: None, deadline_s: float = SSH_DEADLINE_S) -> Iterator[Viewer]:
    """The job's TensorBoard on its outputs (the trainer's labels say where; without a trainer, the usual
    place), at this machine's 127.0.0.1:`port`; stopped, and what was started for it removed, after."""
    session = machine.open(deadline_s)
    try:
        outputs = outputs_of(machine, session, remote_root, outputs_root)
        with closing(machine.tensorboard(session, outputs, port, say), say) as viewer:
            yield viewer
    finally:
        session.close()


@contextlib.contextmanager
def closing(viewer: Viewer, say: Say) -> Iterator[Viewer]:
    """`viewer`, closed after; what its close says was left behind is said."""
    try:
        yield viewer
    finally:
        left = viewer.close()
        if left:
            say(left)


def watch(viewer: Viewer, poll_s: float = POLL_S) -> str:
    """Wait while the viewer serves; why it stopped by itself. Ctrl-C (KeyboardInterrupt) is the caller's."""
    while True:
        why = viewer.ended()
        if why:
            return why
        time.sleep(poll_s)
