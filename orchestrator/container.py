"""The trainer container through the Docker SDK: build, run detached, labels, logs, exit code.

This module knows a `docker.DockerClient` and nothing of SSH or clouds: `job.py` hands it a client
for the engine on the job's machine. The container's labels are the truth about a job (what image,
which folders, who made it); anything orch keeps locally is a cache of them.

    client = docker.DockerClient(base_url="unix://" + session.docker_socket())
    tag = ensure_image(client, repo_root())                # orch-trainer:<content hash>, cached
    run_detached(client, RunSpec(job="r50", image=tag, command=(...), data_dir=..., outputs_dir=...))
    for line in stream_logs(client, "r50", since_ns=None, follow=True): print(line.text)
"""
from __future__ import annotations

import hashlib
import io
import re
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

LABEL_JOB = "orch.job"
LABEL_CREATED_BY = "orch.created-by"
LABEL_CREATED_AT = "orch.created-at"
LABEL_IMAGE_HASH = "orch.image-hash"
LABEL_DATA = "orch.data"
LABEL_OUTPUTS = "orch.outputs"
LABEL_SOURCE = "orch.source"  # the launch's --data as given (a local folder resolved): a second launch compares it
# The launch's trainer arguments as given (JSON): the command may differ (orch adds --max-hours under a hard cap).
LABEL_TRAINER_ARGS = "orch.trainer-args"
LABEL_AUTOSTOP = "orch.autostop-minutes"  # what the instance was told: it stops this long after the job ends
IMAGE_REPOSITORY = "orch-trainer"
DEFAULT_SHM_SIZE = "8g"  # DataLoader workers pass batches through /dev/shm; Docker's 64 MB default stalls them
DEFAULT_MAX_RESTARTS = 5  # restarts after a crash; each resumes from last.pt (`--resume auto`)

# What the Dockerfile copies: the only files sent as the build context, and what the image tag hashes.
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "setup.py", "README.md")
CONTEXT_TREES = ("trainer",)


class ContainerError(RuntimeError):
    """The engine refused or failed something; the message says what and what to do."""


class NoGPUs(ContainerError):
    """The engine cannot give a container the GPUs (no NVIDIA container runtime or toolkit, or no GPU)."""


@dataclass(frozen=True)
class RunSpec:
    job: str
    image: str
    command: tuple[str, ...]  # arguments to the image's `trainer` entrypoint
    data_dir: str  # on the engine's machine; mounted read-only at /data
    outputs_dir: str  # on the engine's machine; mounted at /outputs
    gpus: bool = True  # all GPUs; an engine that cannot give them refuses (`NoGPUs`) rather than run on the CPU
    shm_size: str = DEFAULT_SHM_SIZE
    user: str | None = None  # "uid:gid"; None: the image's non-root user
    max_restarts: int = DEFAULT_MAX_RESTARTS
    network_mode: str = "host"  # no bridge networks: the instance's own network (S3, metadata)
    image_hash: str = ""
    created_by: str = "orch"
    extra_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerState:
    job: str
    state: str  # created | running | restarting | paused | exited | dead | missing
    exit_code: int | None = None
    restarts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    image: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()  # what the image's entrypoint was given

    @property
    def ended(self) -> bool:
        """Exited for good: no restart is coming."""
        return self.state in ("exited", "dead", "missing")


@dataclass(frozen=True)
class LogLine:
    ts_ns: int  # the engine's timestamp, nanoseconds since the epoch
    text: str


def container_name(job: str) -> str:
    return f"orch-{job}"


# -- the image ----------------------------------------------------------------------------------


def _context_members(root: Path) -> list[tuple[str, Path | None]]:
    members: list[tuple[str, Path | None]] = []
    for name in CONTEXT_FILES:
        path = root / name
        members.append((name, path if path.is_file() else None))
    for tree in CONTEXT_TREES:
        for path in sorted((root / tree).rglob("*")):
            # Not what a local install built in place (bytecode, trainer._jpegcrop's .so for this
            # machine's Python): the image builds its own.
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".so"):
                members.append((path.relative_to(root).as_posix(), path))
    return members


def context_tar(root: Path) -> tuple[bytes, str]:
    """The build context as an in-memory tar (deterministic), and its content hash."""
    digest = hashlib.sha256()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in _context_members(root):
            if path is None:
                if name == "README.md":  # pyproject names it; a checkout without it still builds
                    data = b"orch-trainer\n"
                elif name == "Dockerfile":
                    raise ContainerError(f"{root / 'Dockerfile'} is missing: orch builds the trainer image from it.")
                else:
                    continue
            else:
                data = path.read_bytes()
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), digest.hexdigest()


def image_tag(root: Path, base_image: str | None = None) -> tuple[str, str]:
    """(`orch-trainer:<hash>`, hash) for the build context and base image."""
    _, content = context_tar(root)
    h = hashlib.sha256((content + "\0" + (base_image or "")).encode()).hexdigest()[:16]
    return f"{IMAGE_REPOSITORY}:{h}", h


def image_exists(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_image(client, root: Path, base_image: str | None = None,
                 log: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Build the trainer image from `root` unless its content-hash tag is already there.

    `base_image` overrides the Dockerfile's BASE_IMAGE. Returns (tag, hash).
    """
    tar, content = context_tar(root)
    h = hashlib.sha256((content + "\0" + (base_image or "")).encode()).hexdigest()[:16]
    tag = f"{IMAGE_REPOSITORY}:{h}"
    if image_exists(client, tag):
        return tag, h
    buildargs = {"BASE_IMAGE": base_image} if base_image else {}
    tail: list[str] = []
    try:
        for chunk in client.api.build(fileobj=io.BytesIO(tar), custom_context=True, tag=tag, rm=True,
                                      forcerm=True, buildargs=buildargs, decode=True, network_mode="host",
                                      labels={LABEL_IMAGE_HASH: h}):
            if "error" in chunk:
                raise ContainerError(
                    f"building {tag} failed: {chunk['error'].strip()}\n" + "".join(tail[-20:])
                    + "\nFix the Dockerfile or the base image, or pass a prebuilt image with --image.")
            text = chunk.get("stream") or ""
            if text:
                tail.append(text)
                if log and text.strip():
                    log(text.rstrip("\n"))
    except ContainerError:
        raise
    except Exception as e:  # the engine dropped the build
        raise ContainerError(f"building {tag} failed: {e}") from e
    return tag, h


# -- the container --------------------------------------------------------------------------------


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


def run_detached(client, spec: RunSpec) -> ContainerState:
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
        **spec.extra_labels,
    }
    kwargs = dict(
        image=spec.image,
        command=list(spec.command),
        name=container_name(spec.job),
        labels=labels,
        volumes={spec.data_dir: {"bind": "/data", "mode": "ro"},
                 spec.outputs_dir: {"bind": "/outputs", "mode": "rw"}},
        shm_size=spec.shm_size,
        restart_policy={"Name": "on-failure", "MaximumRetryCount": spec.max_restarts},
        network_mode=spec.network_mode,
        # USER/LOGNAME: the uid orch runs as may have no passwd entry in the image (getpass needs a name).
        environment={"PYTHONUNBUFFERED": "1", "MPLCONFIGDIR": "/tmp/matplotlib", "USER": "orch", "LOGNAME": "orch"},
        log_config=docker.types.LogConfig(type="json-file", config={"max-size": "100m", "max-file": "3"}),
    )
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


def state_of(container, job: str) -> ContainerState:
    attrs = container.attrs
    st = attrs.get("State") or {}
    status = st.get("Status") or container.status
    if st.get("Restarting"):
        status = "restarting"
    exit_code = st.get("ExitCode") if status in ("exited", "dead") else None
    return ContainerState(
        job=job, state=status, exit_code=exit_code, restarts=int(attrs.get("RestartCount") or 0),
        started_at=st.get("StartedAt"), finished_at=st.get("FinishedAt"),
        image=(attrs.get("Config") or {}).get("Image"), labels=dict(container.labels or {}),
        command=tuple((attrs.get("Config") or {}).get("Cmd") or ()),
    )


def status(client, job: str) -> ContainerState:
    container = find(client, job)
    if container is None:
        return ContainerState(job=job, state="missing")
    return state_of(container, job)


def remove(client, job: str, timeout_s: int = 30) -> bool:
    """Stop (SIGTERM: the trainer saves last.pt) and remove the job's containers. True if any."""
    import docker

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


# -- logs ------------------------------------------------------------------------------------------

_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ?")


def parse_timestamp_ns(text: str) -> int:
    """RFC 3339 with nanoseconds (what the engine prefixes log lines with) -> ns since the epoch."""
    m = _TS.match(text)
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    tz = m.group(3)
    offset = 0 if tz == "Z" else (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60) * (1 if tz[0] == "+" else -1)
    seconds = int(base.replace(tzinfo=timezone.utc).timestamp()) - offset
    frac = (m.group(2) or "").ljust(9, "0")
    return seconds * 1_000_000_000 + int(frac or 0)


def split_log_line(raw: str) -> LogLine:
    m = _TS.match(raw)
    if not m:
        return LogLine(0, raw)
    return LogLine(parse_timestamp_ns(raw), raw[m.end():])


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
            yield split_log_line(raw.decode(errors="replace").rstrip("\r"))
    if pending and partial:
        yield split_log_line(pending.decode(errors="replace"))


class LogCursor:
    """Where a reader is in a log: the last timestamp printed and how many lines carried it.

    After a reconnect the engine sends again everything from that timestamp on; `fresh` lets
    through only what was not printed yet: no gap, no duplicate.
    """

    def __init__(self, since_ns: int | None = None):
        self.last_ns = since_ns or 0
        self.seen_at_last = 0

    def fresh(self, line: LogLine) -> bool:
        if line.ts_ns < self.last_ns:
            return False
        if line.ts_ns == self.last_ns:
            # The replay repeats lines at last_ns in order: skip as many as were printed.
            if self._replayed < self.seen_at_last:
                self._replayed += 1
                return False
            self.seen_at_last += 1
            self._replayed += 1
            return True
        self.last_ns, self.seen_at_last, self._replayed = line.ts_ns, 1, 1
        return True

    def restart(self) -> None:
        """Call before reading a new stream (a reconnect)."""
        self._replayed = 0

    _replayed = 0

    @property
    def since_ns(self) -> int | None:
        return self.last_ns or None


def wait_state(client, job: str, states: set[str], timeout_s: float, poll_s: float = 0.5) -> ContainerState:
    deadline = time.monotonic() + timeout_s
    while True:
        st = status(client, job)
        if st.state in states or time.monotonic() > deadline:
            return st
        time.sleep(poll_s)
