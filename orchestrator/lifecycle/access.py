"""Reaching a running job from this terminal: its logs, its weights, a shell on its instance."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from orchestrator.config import ConfigError, Settings
from orchestrator.errors import JobError
from orchestrator.job import control
from orchestrator.job.ended import after_the_job
from orchestrator.job.logs import follow, parse_since
from orchestrator.lifecycle import machines
from orchestrator.lifecycle.resume import outputs_root_for, recorded_launch, remote_root_for
from orchestrator.records import FetchReport, JobEnded
from orchestrator.remote.proxy import openssh_command


def check_since(since: str | None) -> None:
    """Refuse a `--since` that can't be read (a usage error), before anything is asked of the machine."""
    try:
        parse_since(since)
    except JobError as e:
        raise ConfigError(str(e)) from None


def logs(job: str, settings: Settings, follow_on: bool = False, since: str | None = None,
         say_after: Callable[[str], None] | None = None, node: int = 0) -> int:
    """Print the job's trainer output (of node `node`, with --nodes; following it with `follow_on`); the trainer's
    exit code.

    Once an instance's trainer has ended for good, `say_after` is told when autostop takes its disks."""
    check_since(since)
    machine = machines.machine_for(job, settings, node=node)
    ended: list[JobEnded] = []
    code = follow(machine, follow=follow_on, since_ns=parse_since(since), ended=ended.append)
    if follow_on and ended and say_after is not None and machine.autostops:
        try:
            launched = recorded_launch(job, settings)
        except Exception:  # the cloud can't be asked: say what is known
            launched = None
        say_after(after_the_job(ended[0], launched.checkpoint_bucket if launched else None,
                                bool(launched and launched.keep_volume)))
    return code


def check_which(which: str) -> None:
    if which not in ("best", "last", "all"):
        raise ConfigError(f"--which {which!r}: use best, last or all")


def fetch_weights(job: str, settings: Settings, which: str, dest: Path) -> FetchReport:
    """The job's checkpoints (verified against their .sha256) and metrics.jsonl, train.log, curves.png into `dest`."""
    check_which(which)
    return control.fetch_weights(machines.machine_for(job, settings), which, dest,
                                 remote_root=remote_root_for(job, settings), outputs_root=outputs_root_for(job))


def ssh_command(job: str, settings: Settings, extra: list[str], node: int = 0) -> list[str]:
    """The `ssh` command line that opens a shell (or runs `extra`) on the job's instance (node `node`'s), as orch
    reaches it."""
    if machines.is_local(job):
        raise ConfigError(f"Job {job} runs on this machine; use `docker exec` or `orch logs {job}`.")
    return openssh_command(machines.endpoint_for(job, settings, node), extra)
