"""A job's trainer after its start: its status, stopping it, and fetching its weights. Written once against `Machine`.

    status(machine).state                       # running, exited, missing, ...
    fetch_weights(machine, "best", Path("weights/r50"))
    stop(machine)                               # SIGTERM: the trainer saves last.pt; the outputs stay
"""
from __future__ import annotations

import contextlib
import json
import posixpath
import shlex
from pathlib import Path
from typing import Callable, Iterator

from orchestrator.errors import JobError
from orchestrator.job.fetch import fetch_files, folder_files, trainer_outputs
from orchestrator.labels import LABEL_OUTPUTS
from orchestrator.machines.base import SSH_DEADLINE_S, Machine, Runner
from orchestrator.records import ContainerStatus, FetchReport, JobSpec, TrainerState
from orchestrator.remote.base import Session


def last_metrics(session, outputs: str | None) -> dict:
    """The latest line of the run's metrics.jsonl; {} when there is none (yet)."""
    if not outputs:
        return {}
    result = session.run(f"tail -n 1 {shlex.quote(posixpath.join(outputs, 'metrics.jsonl'))} 2>/dev/null")
    try:
        value = json.loads(result.stdout.strip() or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def to_status(st: TrainerState, metrics: dict, runner: str) -> ContainerStatus:
    return ContainerStatus(job=st.job, state=st.state, exit_code=st.exit_code, restarts=st.restarts,
                           last_metrics=metrics, image=st.image, outputs=st.labels.get(LABEL_OUTPUTS), runner=runner)


@contextlib.contextmanager
def trainer_on(machine: Machine, deadline_s: float = SSH_DEADLINE_S,
               before: Callable[[Session], None] | None = None) -> Iterator[tuple[Session, Runner]]:
    """A session on the machine and the runner of its job's trainer, both closed after.

    `before` runs on the session first (a start checks its spec and waits for the machine's set-up there)."""
    session = machine.open(deadline_s)
    try:
        if before is not None:
            before(session)
        runner = machine.runner(session)
        try:
            yield session, runner
        finally:
            runner.close()
    finally:
        session.close()


def status(machine: Machine, deadline_s: float = SSH_DEADLINE_S) -> ContainerStatus:
    """The job's trainer and its latest metrics; `deadline_s` is how long to wait for the machine to answer."""
    with trainer_on(machine, deadline_s) as (session, runner):
        st = runner.state()
        return to_status(st, last_metrics(session, st.labels.get(LABEL_OUTPUTS)), runner.name)


def stop(machine: Machine, deadline_s: float = SSH_DEADLINE_S) -> bool:
    """Stop and remove the job's trainer; True if there was one. The outputs folder stays.

    `deadline_s` is how long to wait for the machine to answer (teardown waits briefly: the instance goes anyway)."""
    with trainer_on(machine, deadline_s) as (_, runner):
        removed = runner.remove()
    return machine.forget() or removed


def outputs_of(machine: Machine, session, remote_root: str | None = None, outputs_root: str | None = None) -> str:
    """The job's outputs folder: its trainer's labels say; without a trainer, the usual place."""
    try:
        runner = machine.runner(session)
    except JobError:
        runner = None
    if runner is not None:
        try:
            outputs = runner.state().labels.get(LABEL_OUTPUTS)
        finally:
            runner.close()
        if outputs:
            return outputs
    usual = JobSpec(job=machine.job, data="", remote_root=remote_root, outputs_root=outputs_root)
    return machine.folders(session, usual)[1]


def fetch_weights(machine: Machine, which: str, dest: Path, remote_root: str | None = None,
                  outputs_root: str | None = None) -> FetchReport:
    """Download the checkpoints (verified against their .sha256) and metrics.jsonl, train.log, curves.png, and the
    TensorBoard event files under tensorboard/ (`orch tensorboard --fetched DEST` shows them)."""
    names, optional = trainer_outputs(which)
    session = machine.open()
    try:
        outputs = outputs_of(machine, session, remote_root, outputs_root)
        events = folder_files(session, outputs)
        return fetch_files(session, outputs, names + events, dest, optional=optional + events,
                           progress=machine.progress)
    finally:
        session.close()
