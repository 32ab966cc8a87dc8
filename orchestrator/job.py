"""The job on a machine: dataset sync, trainer container, logs, weights. (Interface; being built.)

Everything here takes an `SSHEndpoint` for a remote machine, or `None` for this machine (the
local target). It never calls a cloud API.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.providers.base import SSHEndpoint


@dataclass(frozen=True)
class JobSpec:
    job: str
    data: str  # a local folder, "demo", or an s3:// URI (copied on the instance)
    image: str | None = None  # a prebuilt trainer image; None builds from the project's Dockerfile
    trainer_args: tuple[str, ...] = ()  # passed through to `trainer train` (after `--`)
    gpus: bool = True


@dataclass(frozen=True)
class ContainerStatus:
    job: str
    state: str  # created | running | restarting | exited | dead | missing
    exit_code: int | None = None
    restarts: int = 0
    last_metrics: dict = field(default_factory=dict)  # the latest line of metrics.jsonl


@dataclass(frozen=True)
class FetchReport:
    dest: Path
    files: tuple[Path, ...]
    verified: tuple[Path, ...]
    bytes_downloaded: int


def start_job(endpoint: SSHEndpoint | None, spec: JobSpec) -> ContainerStatus:
    raise NotImplementedError


def job_status(endpoint: SSHEndpoint | None, job: str) -> ContainerStatus:
    raise NotImplementedError


def follow_logs(endpoint: SSHEndpoint | None, job: str, follow: bool = False, since: str | None = None) -> int:
    """Stream the trainer's output to stdout; return the container's exit code (or 0 if still running)."""
    raise NotImplementedError


def fetch_weights(endpoint: SSHEndpoint | None, job: str, which: str, dest: Path) -> FetchReport:
    raise NotImplementedError


def stop_job(endpoint: SSHEndpoint | None, job: str) -> bool:
    """Stop and remove the job's container. True if one was removed."""
    raise NotImplementedError
