"""The machine a job runs on, and the runner that runs its trainer there: the two interfaces job/ is written against.

A `Machine` is where: an EC2 instance over SSH (machines/instance.py), or this machine
(machines/local_docker.py, machines/local_process.py). It opens a `Session` (remote/) for commands
and files, hands out the `Runner` that runs the trainer there, and owns what differs between
machines: waiting for an instance's first-boot set-up, its hard cap, where the job's folders go,
how the data gets there (synced, copied from S3, or mounted in place), and what to do when the
engine can't give the container a GPU.

A `Runner` is how the trainer runs: a Docker container (machines/docker_runner.py) or a supervised
process (machines/process_runner.py). Its state and labels are the truth about the job.

job/ (start, logs, status, stop, fetch) is written once against these two. A new kind of machine
is one new module here and one line in lifecycle/machines.py, where machines are chosen.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, Protocol

from orchestrator.records import HardCap, ImageReady, ImageRegistry, JobSpec, LogLine, RunSpec, TrainerState
from orchestrator.remote.base import Session

Say = Callable[[str], None]

SSH_DEADLINE_S = 300.0  # a launch, logs, a fetch: an instance may still be booting
QUICK_SSH_DEADLINE_S = 20.0  # a glance (status) or a courtesy before terminating (teardown): never minutes


def quick_ssh_deadline_s() -> float:
    """$ORCH_QUICK_SSH_S, else QUICK_SSH_DEADLINE_S."""
    raw = os.environ.get("ORCH_QUICK_SSH_S", "").strip()
    try:
        value = float(raw) if raw else QUICK_SSH_DEADLINE_S
    except ValueError:
        value = QUICK_SSH_DEADLINE_S
    return value if value > 0 else QUICK_SSH_DEADLINE_S


class Runner(Protocol):
    """Runs one job's trainer on a machine, and answers for it."""

    name: str  # "docker" | "process" (`ContainerStatus.runner`)
    what: str  # how messages name the trainer: "container" | "trainer process"

    def state(self) -> TrainerState: ...
    # The image by content hash: found, pulled with `auth` from spec.registry, or built. ImageReady("") if none.
    def ensure_image(self, spec: JobSpec, say: Say, auth: dict | None = None) -> ImageReady: ...
    def make_demo_data(self, image: str, data_dir: str, user: str) -> None: ...
    # `trainer unpack`: the shards in `shards_dir` checked and restored into `data_dir` (each removed once done)
    def unpack_dataset(self, image: str, shards_dir: str, data_dir: str, user: str) -> None: ...
    def run(self, run: RunSpec) -> TrainerState: ...  # raises errors.NoGPUs when it can't give the GPUs
    def logs(self, since_ns: int | None, follow: bool, partial: bool = False) -> Iterator[LogLine]: ...
    def remove(self) -> bool: ...  # stop (SIGTERM: the trainer saves last.pt) and remove; True if there was one
    def close(self) -> None: ...


class Viewer(Protocol):
    """A page served at this machine's `url` (http://127.0.0.1:PORT/) until closed: `orch tensorboard`."""

    url: str

    def ended(self) -> str | None: ...  # why it stopped serving by itself (the server exited, the link dropped)
    def close(self) -> str | None: ...  # stop serving, remove what was started for it; what could not be (bounded)


class Machine(Protocol):
    """Where one job runs; what job/ asks of it."""

    job: str
    where: str  # for messages: "ubuntu@203.0.113.10:22 (via proxy command)" or "this machine"
    progress: bool  # show transfer progress bars (a terminal is watching)
    autostops: bool  # it shuts itself down (and its disks go) once its job has ended: say when
    replaceable: bool  # the cloud may replace it mid-job (a managed job): a missing trainer is awaited, not an end

    def open(self, deadline_s: float = SSH_DEADLINE_S) -> Session: ...
    def runner(self, session: Session) -> Runner: ...
    def prepare(self, session: Session, spec: JobSpec, say: Say) -> None: ...  # before anything is chosen
    def hard_cap(self, session: Session) -> HardCap | None: ...
    def folders(self, session: Session, spec: JobSpec) -> tuple[str, str]: ...  # a new job's (data, outputs)
    def place_data(self, session: Session, runner: Runner, spec: JobSpec, data_dir: str, image: str, user: str,
                   say: Say) -> str: ...  # the data folder the trainer reads
    # Once the image is there: what place_data left for it (a kept dataset's shards to unpack); else nothing.
    def finish_data(self, session: Session, runner: Runner, spec: JobSpec, data_dir: str, image: str, user: str,
                    say: Say) -> None: ...
    def without_gpus(self, say: Say) -> bool: ...  # True: run on the CPU (after saying so); False: refuse
    def remember(self, run: RunSpec) -> None: ...  # after a start: what this machine keeps besides the labels
    def forget(self) -> bool: ...  # after a stop; True if there was something to forget
    # The engine's auth for the registry, from the machine's own credentials; (None, why) without them.
    def registry_auth(self, session: Session, registry: ImageRegistry) -> tuple[dict | None, str]: ...
    # After a build: push it to the registry from the machine, without making the start wait.
    def push_image(self, session: Session, registry: ImageRegistry, ready: ImageReady) -> str | None: ...
    # TensorBoard on the run's `outputs`/tensorboard, read-only, served at this machine's 127.0.0.1:`port` (never
    # on a public port of either machine) until the viewer is closed.
    def tensorboard(self, session: Session, outputs: str, port: int, say: Say) -> Viewer: ...
