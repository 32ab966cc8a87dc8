"""The trainer container through the Docker SDK: run detached, state, logs, stop. Never SSH, never boto3.

This module knows a `docker.DockerClient` and nothing of SSH or clouds: a machine hands it a client
for the engine it runs (`docker_client(session)`: over SSH on an instance, the local socket here).
The container's labels (labels.py) are the truth about a job.

    client = docker_client(session)
    run_detached(client, RunSpec(job="r50", image=tag, trainer_args=(...), data_dir=..., outputs_dir=...))
    for line in stream_logs(client, "r50", since_ns=None, follow=True): print(line.text)
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Callable, Iterator

from orchestrator import assets
from orchestrator.errors import ContainerError, EngineUnreachable, JobError, NoGPUs
from orchestrator.job.logtext import engine_line
from orchestrator.job.spec import command_of
from orchestrator.labels import (
    LABEL_CREATED_AT,
    LABEL_CREATED_BY,
    LABEL_DATA,
    LABEL_IMAGE_HASH,
    LABEL_JOB,
    LABEL_OUTPUTS,
    container_name,
)
from orchestrator.machines import tensorboard
from orchestrator.machines.image import IMAGE_REPOSITORY, ensure_image, image_exists, image_tag
from orchestrator.machines.registry import PullProgress, pull
from orchestrator.records import ENV_IN_CONTAINER, ENV_VARIABLE, ImageReady, JobSpec, LogLine, RunSpec, TrainerState

Say = Callable[[str], None]

DEFAULT_SHM_SIZE = "8g"  # DataLoader workers pass batches through /dev/shm; Docker's 64 MB default stalls them
NETWORK_MODE = "host"  # no bridge networks: the instance's own network (S3, metadata)


def docker_client(session):
    """A Docker SDK client for the engine on the session's machine."""
    import docker

    path = session.docker_socket()
    try:
        client = docker.DockerClient(base_url="unix://" + path, timeout=120)
        client.ping()
    except Exception as e:
        raise EngineUnreachable(
            f"no Docker engine answers on {session.where} ({type(e).__name__}: {e}). On an instance, "
            "infra/bootstrap.sh installs and starts it; check `systemctl status docker` there."
        ) from None
    return client


def find(client, job: str):
    """The job's container (any state) by its label, or None."""
    found = client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={job}"})
    if not found:
        return None
    found.sort(key=lambda c: c.attrs.get("Created", ""), reverse=True)
    return found[0]


def job_labels(client) -> dict[str, str]:
    """Every orch job on this engine: {job: container state}."""
    out = {}
    for c in client.containers.list(all=True, filters={"label": LABEL_JOB}):
        out[c.labels.get(LABEL_JOB, "?")] = c.status
    return out


def run_detached(client, spec: RunSpec) -> TrainerState:
    """Start the job's container, or leave a running one alone (a second launch never duplicates).

    An ended container of the same job is replaced; the new one resumes from the outputs folder.
    With `spec.gpus`, the container gets every GPU or is not started: `NoGPUs` says why.
    """
    import docker

    existing = find(client, spec.job)
    if existing is not None:
        if existing.status in ("running", "restarting", "created", "paused"):
            return state_of(existing, spec.job)
        existing.remove(force=True)
    labels = {
        LABEL_JOB: spec.job,
        LABEL_CREATED_BY: spec.created_by,
        LABEL_CREATED_AT: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        LABEL_IMAGE_HASH: spec.image_hash,
        LABEL_DATA: spec.data_dir,
        LABEL_OUTPUTS: spec.outputs_dir,
        **spec.labels,
    }
    kwargs = dict(
        image=spec.image,
        # `--resume auto` last: a restart after a crash always carries on from last.pt.
        command=command_of(spec),
        name=container_name(spec.job),
        labels=labels,
        volumes={spec.data_dir: {"bind": "/data", "mode": "ro"},
                 spec.outputs_dir: {"bind": "/outputs", "mode": "rw"}},
        shm_size=DEFAULT_SHM_SIZE,
        # Docker reads a MaximumRetryCount of 0 as "no limit": no restarts is the "no" policy.
        restart_policy=({"Name": "on-failure", "MaximumRetryCount": spec.max_restarts} if spec.max_restarts > 0
                        else {"Name": "no"}),
        network_mode=NETWORK_MODE,
        # USER/LOGNAME: the uid orch runs as may have no passwd entry in the image (getpass needs a name).
        environment={"PYTHONUNBUFFERED": "1", "MPLCONFIGDIR": "/tmp/matplotlib", "USER": "orch", "LOGNAME": "orch"},
        log_config=docker.types.LogConfig(type="json-file", config={"max-size": "100m", "max-file": "3"}),
    )
    if spec.env_file:  # --env values: a read-only file the trainer reads, not the container's environment
        kwargs["volumes"][spec.env_file] = {"bind": ENV_IN_CONTAINER, "mode": "ro"}
        kwargs["environment"][ENV_VARIABLE] = ENV_IN_CONTAINER
    if spec.user:
        kwargs["user"] = spec.user
    if spec.gpus:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    try:
        container = client.containers.create(**kwargs)
    except docker.errors.ImageNotFound as e:
        raise ContainerError(f"image {spec.image} is not on the machine ({e.explanation}). "
                             "Pass an image that exists there with --image, or leave --image out to build.") from e
    except docker.errors.APIError as e:
        raise ContainerError(f"the engine refused to create the job's container: {e.explanation or e}") from e
    try:
        container.start()
    except docker.errors.APIError as e:
        container.remove(force=True)  # left "created", it would pass for the job's container next time
        text = str(e.explanation or e)
        if spec.gpus and "could not select device driver" in text:
            raise NoGPUs(
                f"the Docker engine on the job's machine cannot give the container the GPUs ({text}), so the job "
                "was not started: it would train on the CPU. On an instance, infra/bootstrap.sh registers the "
                f"NVIDIA container runtime at boot: check `orch ssh {spec.job} -- nvidia-smi` and "
                "/var/log/orch-bootstrap.log there. To train on the CPU on purpose, launch with --no-gpus.") from e
        raise ContainerError(f"the engine refused to start the job's container: {text}") from e
    container.reload()
    return state_of(container, spec.job)


def run_once(client, image: str, command: list[str], volumes: dict, user: str | None = None,
             network_mode: str = "none") -> tuple[int, str]:
    """Run a short command in `image` to completion (e.g. `demo-data`); (exit code, output)."""
    container = client.containers.run(image, command, volumes=volumes, detach=True, user=user,
                                      network_mode=network_mode, labels={LABEL_CREATED_BY: "orch"})
    try:
        result = container.wait()
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        return int(result.get("StatusCode", 1)), output
    finally:
        container.remove(force=True)


def state_of(container, job: str) -> TrainerState:
    attrs = container.attrs
    st = attrs.get("State") or {}
    status = st.get("Status") or container.status
    if st.get("Restarting"):
        status = "restarting"
    exit_code = st.get("ExitCode") if status in ("exited", "dead") else None
    return TrainerState(
        job=job, state=status, exit_code=exit_code, restarts=int(attrs.get("RestartCount") or 0),
        started_at=st.get("StartedAt"), finished_at=st.get("FinishedAt"),
        image=(attrs.get("Config") or {}).get("Image"), labels=dict(container.labels or {}),
        command=tuple((attrs.get("Config") or {}).get("Cmd") or ()),
    )


def status(client, job: str) -> TrainerState:
    container = find(client, job)
    if container is None:
        return TrainerState(job=job, state="missing")
    return state_of(container, job)


def remove(client, job: str, timeout_s: int = 30) -> bool:
    """Stop (SIGTERM: the trainer saves last.pt) and remove the job's containers (and its TensorBoard's). True if
    the job had any."""
    import docker

    tensorboard.remove(client, job)
    removed = False
    for c in client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={job}"}):
        try:
            if c.status in ("running", "restarting", "paused"):
                c.stop(timeout=timeout_s)
            c.remove(force=True)
            removed = True
        except docker.errors.NotFound:
            pass
    return removed


def stream_logs(client, job: str, since_ns: int | None = None, follow: bool = False,
                partial: bool = False) -> Iterator[LogLine]:
    """The container's output as timestamped lines, from `since_ns` (inclusive) on.

    With `follow`, the iterator ends when the container stops (a restart needs a new call).
    Connection errors propagate: the caller reconnects and calls again with the last timestamp.
    A trailing piece without a newline may be a line cut by a dropped connection, so it is only
    yielded with `partial` (for a last read once the container has ended).
    """
    container = find(client, job)
    if container is None:
        return
    kwargs = dict(stdout=True, stderr=True, timestamps=True, stream=True, follow=follow)
    if since_ns:
        # Microseconds floor: `since` is inclusive, so nothing at or after since_ns is missed.
        kwargs["since"] = (since_ns // 1000) / 1_000_000
    pending = b""
    for chunk in container.logs(**kwargs):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            yield engine_line(raw)
    if pending and partial:
        yield engine_line(pending)



def wait_state(client, job: str, states: set[str], timeout_s: float, poll_s: float = 0.5) -> TrainerState:
    deadline = time.monotonic() + timeout_s
    while True:
        st = status(client, job)
        if st.state in states or time.monotonic() > deadline:
            return st
        time.sleep(poll_s)


class DockerRunner:
    """The `Runner` for a Docker engine (an instance's, or this machine's): the trainer in a container."""

    name = "docker"
    what = "container"

    def __init__(self, client, job: str, where: str):
        self.client, self.job, self.where = client, job, where

    def state(self) -> TrainerState:
        return status(self.client, self.job)

    def ensure_image(self, spec: JobSpec, say: Say, auth: dict | None = None) -> ImageReady:
        """--image as given (pulled if missing); else the trainer image by content hash: found on the engine,
        pulled from `spec.registry` with `auth` (built once elsewhere), or built here (the base pulled first)."""
        if spec.image:
            if not image_exists(self.client, spec.image):
                try:
                    self.client.images.pull(spec.image)
                except Exception as e:
                    raise JobError(f"image {spec.image} is not on {self.where} and could not be pulled ({e}). "
                                   "Leave out --image to build the trainer image there.") from None
            return ImageReady(spec.image)
        base = spec.base_image or os.environ.get("ORCH_BASE_IMAGE") or None
        tag, h = image_tag(assets.root(), base)
        if image_exists(self.client, tag):
            say(f"  trainer image {tag} is on {self.where} already")
            return ImageReady(tag, h, "found")
        if spec.registry is not None and auth is not None:
            remote = f"{spec.registry.repository}:{h}"
            say(f"  pulling the trainer image {remote} (built once, by an earlier machine)")
            pulled, detail = pull(self.client, remote, auth, say)
            if pulled:
                self.client.api.tag(remote, IMAGE_REPOSITORY, h)
                say(f"  {tag}: pulled ({detail})")
                return ImageReady(tag, h, "pulled")
            missing = "manifest unknown" in detail or "not found" in detail
            say(f"  not in the registry yet{'' if missing else f' ({detail[:300]})'}: building it here, once")
        say(f"  building the trainer image on {self.where} (once per content hash; the base image's "
            "pull, if it is not there yet, is most of it)")
        progress = PullProgress(say)
        image, image_hash = ensure_image(self.client, assets.root(), base, progress=progress.update,
                                         log=lambda text: say("    " + text) if text.startswith("Step ") else None)
        say(f"  {image}: built")
        return ImageReady(image, image_hash, "built")

    def make_demo_data(self, image: str, data_dir: str, user: str) -> None:
        code, output = run_once(self.client, image, ["demo-data", "--dest", "/data"],
                                {data_dir: {"bind": "/data", "mode": "rw"}}, user=user)
        if code != 0:
            raise JobError(f"`trainer demo-data` failed in {image} (exit {code}):\n{output[-2000:]}")

    def unpack_dataset(self, image: str, shards_dir: str, data_dir: str, user: str) -> None:
        code, output = run_once(self.client, image, ["unpack", "--shards", "/shards", "--dest", "/data",
                                                     "--delete-shards"],
                                {shards_dir: {"bind": "/shards", "mode": "rw"}, data_dir: {"bind": "/data", "mode": "rw"}},
                                user=user)
        if code != 0:
            raise JobError(f"`trainer unpack` failed in {image} (exit {code}):\n{output[-2000:]}\nThe same launch "
                           "carries on with the shards not yet restored.")

    def run(self, run: RunSpec) -> TrainerState:
        return run_detached(self.client, run)

    def logs(self, since_ns: int | None, follow: bool, partial: bool = False) -> Iterator[LogLine]:
        return stream_logs(self.client, self.job, since_ns, follow, partial=partial)

    def remove(self) -> bool:
        return remove(self.client, self.job)

    def close(self) -> None:
        self.client.close()
