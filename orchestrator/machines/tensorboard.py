"""TensorBoard beside a job's trainer, in a container of the trainer's image on the machine's engine: the Docker
SDK only, never SSH or boto3 (machines/instance.py carries its port to the laptop).

    tb = start(client, "r50", image, "/mnt/orch/r50/outputs")  # TensorBoardContainer: on the machine's 127.0.0.1:tb.port
    ended(client, tb)                                            # None while it serves, else why it stopped
    remove(client, "r50")

A container of its own rather than `docker exec` in the trainer's: people look at curves once the job has
ended, when there is no trainer container to exec in. It mounts the outputs folder read-only and listens on
the machine's 127.0.0.1 only (host networking, a port the OS picks: never a public port, and no
security-group change). Its labels say it is orch's (`orch.created-by`) and whose (`orch.tensorboard=JOB`),
so teardown removes it; it does not carry `orch.job`, which marks the job's trainer (`orch status`, logs)
and which the instance's autostop waits on. One per job: a second `orch tensorboard JOB` replaces it, and
one left by a laptop that went away is removed by the next one, by teardown, or with the instance.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from orchestrator.errors import ContainerError, JobError
from orchestrator.labels import LABEL_CREATED_AT, LABEL_CREATED_BY, LABEL_TENSORBOARD, tensorboard_container_name
from orchestrator.machines.image import IMAGE_REPOSITORY

START_S = 120.0  # from the container's start to TensorBoard saying where it listens (seconds, usually)
POLL_S = 0.3
LOGDIR = "/outputs/tensorboard"  # the trainer writes its event files to OUT/tensorboard
TAIL_CHARS = 1500  # of the container's output, in a message when it stops
# What TensorBoard prints once it listens: "TensorBoard 2.16.2 at http://127.0.0.1:43117/ (Press CTRL+C to quit)".
# The container's text is data: only a port number is taken from it.
_LISTENING = re.compile(r"TensorBoard \S+ at https?://[^\s/]+:(\d{1,5})/")


@dataclass(frozen=True)
class TensorBoardContainer:
    job: str
    container_id: str
    image: str
    port: int  # where it listens, on the machine's 127.0.0.1


def listening_port(output: str) -> int | None:
    """The port of TensorBoard's "TensorBoard X at http://HOST:PORT/" line; None until it has said so."""
    found = _LISTENING.search(output)
    port = int(found.group(1)) if found else 0
    return port if 0 < port < 65536 else None


def trainer_image(client, image: str | None) -> str:
    """The job's trainer image (`image`, its container's), else the newest trainer image on the engine."""
    if image:
        return image
    found = [i for i in client.images.list(name=IMAGE_REPOSITORY) if i.tags]
    if not found:
        raise JobError("the machine has no trainer image to run TensorBoard in (no job container, no "
                       f"{IMAGE_REPOSITORY} image).")
    found.sort(key=lambda i: i.attrs.get("Created", ""), reverse=True)
    return found[0].tags[0]


def start(client, job: str, image: str, outputs_dir: str, deadline_s: float = START_S) -> TensorBoardContainer:
    """TensorBoard on `outputs_dir`/tensorboard (read-only), on the machine's 127.0.0.1; once it listens.

    The job's earlier one, if any, is replaced. Raises `JobError` (saying why, with its output) when it
    cannot start or stops before it listens; nothing is left running then."""
    import docker

    remove(client, job)
    try:
        container = client.containers.create(
            image, ["--logdir", LOGDIR, "--host", "127.0.0.1", "--port", "0"], entrypoint=["tensorboard"],
            name=tensorboard_container_name(job), network_mode="host",
            labels={LABEL_CREATED_BY: "orch", LABEL_TENSORBOARD: job,
                    LABEL_CREATED_AT: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
            # A bind mount of a folder that is not there fails (a -v volume would make it, owned by root).
            mounts=[docker.types.Mount("/outputs", outputs_dir, type="bind", read_only=True)],
            environment={"HOME": "/tmp"},
            log_config=docker.types.LogConfig(type="json-file", config={"max-size": "10m", "max-file": "1"}))
    except docker.errors.ImageNotFound as e:
        raise JobError(f"image {image} is not on the machine ({e.explanation}).") from None
    except docker.errors.APIError as e:
        raise ContainerError(f"the engine refused to create TensorBoard's container: {e.explanation or e}") from None
    try:
        container.start()
    except docker.errors.APIError as e:
        remove(client, job)
        text = str(e.explanation or e)
        if "executable file not found" in text or "no such file" in text.lower():
            raise JobError(f"image {image} has no `tensorboard` command (an --image of your own?). Fetch the "
                           f"outputs (`orch fetch-weights {job}`) and run `orch tensorboard --fetched weights/{job}` "
                           "with TensorBoard installed on this machine.") from None
        raise ContainerError(f"the engine refused to start TensorBoard's container: {text}") from None
    try:
        return _listening(client, container, job, image, deadline_s)
    except BaseException:  # Ctrl-C too: nothing stays behind
        remove(client, job)
        raise


def _listening(client, container, job: str, image: str, deadline_s: float) -> TensorBoardContainer:
    deadline = time.monotonic() + deadline_s
    while True:
        container.reload()
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        port = listening_port(output)
        if port is not None:
            return TensorBoardContainer(job, container.id, image, port)
        if container.status in ("exited", "dead"):
            code = (container.attrs.get("State") or {}).get("ExitCode")
            raise JobError(f"TensorBoard stopped on the machine (exit code {code}) before it listened; "
                           f"it said:\n{output[-TAIL_CHARS:]}")
        if time.monotonic() > deadline:
            raise JobError(f"TensorBoard did not say where it listens within {deadline_s:.0f} s on the machine; "
                           f"it said:\n{output[-TAIL_CHARS:] or '(nothing)'}")
        time.sleep(POLL_S)


def ended(client, tb: TensorBoardContainer) -> str | None:
    """None while `tb` serves; else why not (exited, with its output; or removed)."""
    import docker

    try:
        container = client.containers.get(tb.container_id)
    except docker.errors.NotFound:
        return ("its container on the machine was removed (by another `orch tensorboard` of the job, which "
                "replaces it, or by a teardown)")
    if container.status in ("exited", "dead"):
        code = (container.attrs.get("State") or {}).get("ExitCode")
        output = container.logs(stdout=True, stderr=True, tail=20).decode(errors="replace")
        return f"TensorBoard exited on the machine (exit code {code}); it said:\n{output[-TAIL_CHARS:]}"
    return None


def remove(client, job: str) -> bool:
    """Remove the job's TensorBoard containers, running or not; True if there was one."""
    import docker

    removed = False
    for c in client.containers.list(all=True, filters={"label": f"{LABEL_TENSORBOARD}={job}"}):
        try:
            c.remove(force=True)
            removed = True
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: its removal is under way already
                raise
    return removed
