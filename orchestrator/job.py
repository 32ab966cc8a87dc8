"""The job on a machine: dataset sync, trainer container, logs, weights.

Everything here takes an `SSHEndpoint` for a remote machine, or `None` for this machine (the
local target, see `local.py`). It never calls a cloud API.

On the machine, a job lives in `<root>/<job>/{data,outputs}`, where `<root>` is the `remote_root`
setting when given, else the fast local disk that `infra/bootstrap.sh` mounts at /mnt/orch when
the instance has one, else `~/orch`. A job launched with `--keep-volume` writes its outputs to
`~/orch/<job>/outputs` instead (`JobSpec.outputs_root`): the root EBS volume, which outlives the
instance, while the data stays on the fast disk (it can be synced again). The container's labels
(`orch.job`, `orch.data`, `orch.outputs`, ...) say where; orch keeps no copy of them, and a job
whose container exists keeps the folders they name. On a fresh instance the folders are chosen
only once its first-boot set-up (cloud-init running the user data) is done: sshd answers before
it has mounted the fast disk or given Docker the GPUs. `JobSpec.restore` (from
`orch launch --resume`) puts the newest checkpoint back in the outputs folder before the container
starts (`restore.py`).

    status = start_job(endpoint, JobSpec(job="r50", data="~/data/imagenet", trainer_args=("--recipe", "t4-rn50")))
    code = follow_logs(endpoint, "r50", follow=True)       # survives dropped connections
    report = fetch_weights(endpoint, "r50", "best", Path("weights/r50"))
    stop_job(endpoint, "r50")

Settings read from the environment (all optional):
    ORCH_BASE_IMAGE          build the trainer on this base instead of the Dockerfile's pinned NGC tag
    ORCH_RECONNECT_S         how long `follow_logs` keeps trying to reconnect (default 600 s)
    ORCH_KEEPALIVE_S         how often a connection is asked for a reply while logs, a sync or a fetch
                             stream; with none in twice that it is dropped and reopened (default 15 s)
    ORCH_QUICK_SSH_S         how long `orch status` and `orch teardown` try SSH before going on without
                             the machine's answer (default 20 s; a launch waits SSH_DEADLINE_S)
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from orchestrator.providers.base import SSHEndpoint

REMOTE_FAST_ROOT = "/mnt/orch"  # infra/bootstrap.sh mounts the instance's NVMe disk here
WATCHER_STATE_DIR = "/var/lib/orch"  # infra/bootstrap.sh's watcher keeps its hard cap and its clock here
ROOT_VOLUME_ROOT = "~/orch"  # on the root EBS volume: outputs that outlive the instance (--keep-volume)
SSH_DEADLINE_S = 300.0
QUICK_SSH_DEADLINE_S = 20.0  # a glance (status) or a courtesy before terminating (teardown): never minutes
DEFAULT_RECONNECT_S = 600.0
BOOTSTRAP_WAIT_S = 900.0  # cloud-init on a fresh instance: installing Docker (when missing) takes minutes


@dataclass(frozen=True)
class JobSpec:
    job: str
    data: str  # a local folder, "demo", or an s3:// URI (copied on the instance)
    image: str | None = None  # a prebuilt trainer image; None builds from the project's Dockerfile
    trainer_args: tuple[str, ...] = ()  # passed through to `trainer train` (after `--`)
    gpus: bool = True
    base_image: str | None = None  # None: $ORCH_BASE_IMAGE, else the Dockerfile's pinned NGC image
    max_restarts: int = 5  # restarts after a crash, each resuming from last.pt
    remote_root: str | None = None  # None: /mnt/orch when the machine has it, else ~/orch
    restore: Any = None  # orchestrator.restore.Restore: bring a checkpoint back before starting (--resume)
    outputs_root: str | None = None  # None: `<job root>/outputs`; else `<outputs_root>/<job>/outputs` (--keep-volume)
    autostop_minutes: int | None = None  # what the instance was told (--autostop-minutes); kept as a container label


@dataclass(frozen=True)
class ContainerStatus:
    job: str
    state: str  # created | running | restarting | exited | dead | missing
    exit_code: int | None = None
    restarts: int = 0
    last_metrics: dict = field(default_factory=dict)  # the latest line of metrics.jsonl
    image: str | None = None
    outputs: str | None = None  # the outputs folder on the job's machine
    runner: str = "docker"  # docker | process (the local target without an engine)
    # From a start that found the job already running, and so changed nothing: what it asked for that the
    # running job does not use (e.g. "--data /new (it trains on /old)"). Empty: nothing differs, or not a start.
    not_applied: tuple[str, ...] = ()
    # From a start that continues the job: the outputs folder whose checkpoint the trainer resumes (None: fresh).
    continues_from: str | None = None
    # From a start that found the job already running (its container or process): nothing of the start was used.
    already_running: bool = False
    # From a start under the instance's hard cap: the --max-hours the trainer was given, and why (one line).
    budget: str | None = None


@dataclass(frozen=True)
class HardCap:
    """The instance's hard cap, as its watcher (infra/bootstrap.sh) counts it: it stops the job there."""

    seconds: int  # the cap (--max-hours, or --max-dollars at the hourly price)
    elapsed_s: int  # since the watcher first started, by the machine's own clock


@dataclass(frozen=True)
class JobEnded:
    """How a job's container ended (see `after_the_job`)."""

    job: str
    exit_code: int
    finished_at: str | None = None  # RFC 3339, the engine's clock
    outputs: str | None = None  # the outputs folder on the job's machine
    autostop_minutes: int | None = None  # what the instance was told (a container label); None: not known


@dataclass(frozen=True)
class FetchReport:
    dest: Path
    files: tuple[Path, ...]
    verified: tuple[Path, ...]
    bytes_downloaded: int


class JobError(RuntimeError):
    """The job could not be started or reached; the message says what was kept and what to do."""


class EngineUnreachable(JobError):
    """No Docker engine answered on the job's machine."""


class MachineLost(JobError):
    """The job's machine went away (the caller's `machine_lost` check said so) while following its logs."""


def quick_ssh_deadline_s() -> float:
    """$ORCH_QUICK_SSH_S, else QUICK_SSH_DEADLINE_S."""
    raw = os.environ.get("ORCH_QUICK_SSH_S", "").strip()
    try:
        value = float(raw) if raw else QUICK_SSH_DEADLINE_S
    except ValueError:
        value = QUICK_SSH_DEADLINE_S
    return value if value > 0 else QUICK_SSH_DEADLINE_S


def trainer_command(trainer_args: tuple[str, ...], data: str = "/data", out: str = "/outputs") -> list[str]:
    """`trainer train` on the mounted folders; `--resume auto` last so a restart always resumes."""
    return ["train", "--data", data, "--out", out, *trainer_args, "--resume", "auto"]


def trainer_args_of(command: tuple[str, ...] | list[str]) -> tuple[str, ...] | None:
    """The user's trainer arguments in a `trainer_command`; None when it is not one (another image's)."""
    command = tuple(command)
    if len(command) >= 7 and command[:2] == ("train", "--data") and command[3] == "--out" \
            and command[-2:] == ("--resume", "auto"):
        return command[5:-2]
    return None


def launched_args(st) -> tuple[str, ...] | None:
    """The trainer arguments a container was launched with (`container.ContainerState`): its label, which holds
    them as given; else its command (an older orch's container, whose command had nothing added)."""
    from orchestrator.container import LABEL_TRAINER_ARGS

    raw = st.labels.get(LABEL_TRAINER_ARGS)
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        value = None
    if isinstance(value, list):
        return tuple(str(a) for a in value)
    return trainer_args_of(st.command)


def not_applied(running_data: str | None, running_args: tuple[str, ...] | None, spec: JobSpec,
                data: str | None) -> tuple[str, ...]:
    """What `spec` asks for that a job already running does not use. `data`: spec.data as the machine names it;
    a None (not known, e.g. a container from an older orch) is not compared."""
    differences = []
    if running_data is not None and data is not None and running_data != data:
        differences.append(f"--data {spec.data} (it trains on {running_data})")
    if running_args is not None and tuple(spec.trainer_args) != tuple(running_args):
        differences.append(f"trainer arguments `{shlex.join(spec.trainer_args) or '(none)'}` "
                           f"(it runs with `{shlex.join(running_args) or '(none)'}`)")
    return tuple(differences)


# -- sessions and engines -------------------------------------------------------------------------


def _open(endpoint: SSHEndpoint | None, deadline_s: float = SSH_DEADLINE_S):
    from orchestrator import remote

    return remote.open_session(endpoint, deadline_s)


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


def _connection_errors() -> tuple[type[BaseException], ...]:
    import requests
    import urllib3

    from orchestrator.remote import TRANSPORT_ERRORS, RemoteError

    return (*TRANSPORT_ERRORS, RemoteError, EngineUnreachable, requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError, requests.exceptions.Timeout,
            urllib3.exceptions.ProtocolError)


# -- the job's folders on the machine ---------------------------------------------------------------


def _absolute(session, path: str) -> str:
    if path.startswith("~/"):  # Docker mounts and SFTP need it absolute: the machine's $HOME
        home = session.run('echo "$HOME"', check=True).stdout.strip()
        return posixpath.join(home, path[2:])
    return path


def job_root(session, job: str, remote_root: str | None = None) -> str:
    """`<remote_root>/<job>`, else `<fast disk or ~>/orch/<job>` on the session's machine."""
    if remote_root:
        return posixpath.join(_absolute(session, remote_root), job)
    out = session.run(
        f"if [ -d {REMOTE_FAST_ROOT} ] && [ -w {REMOTE_FAST_ROOT} ]; then echo {REMOTE_FAST_ROOT}; "
        'else echo "$HOME/orch"; fi', check=True).stdout.strip()
    return posixpath.join(out, job)


def wait_for_bootstrap(session, timeout_s: float = BOOTSTRAP_WAIT_S, say: Callable[[str], None] | None = None) -> None:
    """Wait, up to `timeout_s`, for an instance's first-boot set-up (cloud-init running infra/bootstrap.sh).

    sshd answers before cloud-init has run the user data, which mounts the fast disk at /mnt/orch and
    gives Docker the GPUs: a job set up before it would put its folders on the root volume. A machine
    without cloud-init, or whose set-up is over, returns at once.
    """
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    probe = session.run("command -v cloud-init >/dev/null 2>&1 || exit 0; cloud-init status 2>/dev/null", timeout=60)
    if re.search(r"^status:\s*error", probe.stdout, re.MULTILINE):
        say("  warning: the instance's set-up (cloud-init) reported an error; carrying on "
            "(see /var/log/cloud-init-output.log and /var/log/orch-bootstrap.log there)")
    if not re.search(r"^status:\s*(running|not run|not started)", probe.stdout, re.MULTILINE):
        return
    say(f"  waiting for the instance's first-boot set-up (cloud-init) on {session.where}")
    waited = session.run(f"timeout {int(timeout_s)} cloud-init status --wait >/dev/null 2>&1; echo $?",
                         timeout=timeout_s + 60)
    code = waited.stdout.strip().splitlines()[-1:] or ["?"]
    if code[0] == "124":
        say(f"  warning: the instance's set-up had not finished after {timeout_s:.0f} s; carrying on "
            "(see /var/log/cloud-init-output.log there)")
    elif code[0] not in ("0", "2"):  # 2: done, with recoverable errors
        say(f"  warning: the instance's set-up reported an error (cloud-init exit {code[0]}); carrying on "
            "(see /var/log/cloud-init-output.log and /var/log/orch-bootstrap.log there)")


def hard_cap(session) -> HardCap | None:
    """The instance's hard cap from its watcher's state folder; None: no cap, or no watcher that says (another
    machine, a bootstrap older than this orch, or a watcher not started yet)."""
    folder = shlex.quote(WATCHER_STATE_DIR)
    out = session.run(f"cat {folder}/started {folder}/cap 2>/dev/null && date +%s").stdout.split()
    try:
        started, cap, now = (int(v) for v in out)
    except ValueError:
        return None
    return HardCap(seconds=cap, elapsed_s=max(0, now - started)) if cap > 0 else None


def _trained_s(metrics: dict) -> float:
    """What a run has trained so far, by its latest metrics line (epoch ends: its checkpoint may be later)."""
    try:
        return max(0.0, float(metrics.get("elapsed_hours") or 0) * 3600)
    except (TypeError, ValueError):
        return 0.0


def job_dirs(session, spec: JobSpec, root: str | None = None) -> tuple[str, str]:
    """The job's (data, outputs) folders on the session's machine, absolute."""
    root = root or job_root(session, spec.job, spec.remote_root)
    if spec.outputs_root:
        return posixpath.join(root, "data"), posixpath.join(_absolute(session, spec.outputs_root), spec.job, "outputs")
    return posixpath.join(root, "data"), posixpath.join(root, "outputs")


def _uid_gid(session) -> str:
    ids = session.run("id -u; id -g", check=True).stdout.split()
    return f"{ids[0]}:{ids[1]}"


def _last_metrics(session, outputs: str | None) -> dict:
    if not outputs:
        return {}
    result = session.run(f"tail -n 1 {shlex.quote(posixpath.join(outputs, 'metrics.jsonl'))} 2>/dev/null")
    try:
        value = json.loads(result.stdout.strip() or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _to_status(st, metrics: dict) -> ContainerStatus:
    from orchestrator.container import LABEL_OUTPUTS

    return ContainerStatus(job=st.job, state=st.state, exit_code=st.exit_code, restarts=st.restarts,
                           last_metrics=metrics, image=st.image, outputs=st.labels.get(LABEL_OUTPUTS))


# -- start ------------------------------------------------------------------------------------------


def start_on(session, spec: JobSpec, root: str | None = None, say: Callable[[str], None] | None = None,
             local_target: bool = False) -> ContainerStatus:
    """Put the data on the session's machine, build or reuse the image, and run the container.

    A job whose container exists (in any state) keeps the folders its labels name: its checkpoints
    are there. Otherwise they are chosen now, on an instance once its set-up is done (`wait_for_bootstrap`).
    `local_target`: the machine is this one (`--target local`): the data folder is mounted where it
    is, and an engine that cannot give the container a GPU runs it on the CPU, with a warning. On an
    instance that is an error instead (`container.NoGPUs`): a GPU instance training on its CPU
    costs as much for a fraction of the speed.

    Under the instance's hard cap (its watcher stops the container there), the trainer gets `--max-hours`
    for what is left of it when the container starts, less a margin (`trainer_args.budget_under_cap`), so
    it saves and exits first; a cap too near its end is refused before the sync (`trainer_args.CapSpent`).
    """
    from orchestrator import container as ctr
    from orchestrator.config import repo_root
    from orchestrator.trainer_args import budget_under_cap, max_hours_of, training_left_s, with_max_hours

    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    if not local_target:
        wait_for_bootstrap(session, say=say)
    client = docker_client(session)
    try:
        existing = ctr.status(client, spec.job)
        if existing.state in ("running", "restarting", "created"):
            say(f"  the job's container is already {existing.state}; not starting a second one")
            ignored = not_applied(existing.labels.get(ctr.LABEL_SOURCE), launched_args(existing), spec,
                                  data_source(spec))
            return replace(_to_status(existing, _last_metrics(session, existing.labels.get(ctr.LABEL_OUTPUTS))),
                           not_applied=ignored, already_running=True)
        if not local_target and (cap := hard_cap(session)) is not None:
            training_left_s(cap.seconds, cap.elapsed_s)  # a cap about to stop the machine: refused before the sync
        labels = existing.labels
        if labels.get(ctr.LABEL_DATA) and labels.get(ctr.LABEL_OUTPUTS):
            data_dir, outputs_dir = labels[ctr.LABEL_DATA], labels[ctr.LABEL_OUTPUTS]
        else:
            data_dir, outputs_dir = job_dirs(session, spec, root)
        if local_target and spec.data not in ("demo",) and not spec.data.startswith("s3://"):
            local = Path(spec.data).expanduser().resolve()
            if not local.is_dir():
                raise JobError(f"the data folder {local} does not exist; nothing was started. "
                               "Pass --data with a dataset folder (train/ and val/), or --data demo.")
            data_dir = str(local)
            session.run(f"mkdir -p {shlex.quote(outputs_dir)}", check=True)
        else:
            session.run(f"mkdir -p {shlex.quote(data_dir)} {shlex.quote(outputs_dir)}", check=True)
        user = _uid_gid(session)

        if spec.image:
            image, image_hash = spec.image, ""
            if not ctr.image_exists(client, image):
                try:
                    client.images.pull(image)
                except Exception as e:
                    raise JobError(f"image {image} is not on {session.where} and could not be pulled ({e}). "
                                   "Leave out --image to build the trainer image there.") from None
        else:
            base = spec.base_image or os.environ.get("ORCH_BASE_IMAGE") or None
            say(f"  trainer image on {session.where} (built once per content hash)")
            image, image_hash = ctr.ensure_image(  # the first build pulls the base: minutes, once
                client, repo_root(), base, log=lambda text: say("    " + text) if text.startswith("Step ") else None)
            say(f"  {image}")

        if spec.data == "demo":
            marker = session.run(f"test -f {shlex.quote(posixpath.join(data_dir, 'dataset.json'))}")
            if marker.exit_code != 0:
                say("  generating the demo dataset (trainer demo-data)")
                code, output = ctr.run_once(client, image, ["demo-data", "--dest", "/data"],
                                            {data_dir: {"bind": "/data", "mode": "rw"}}, user=user)
                if code != 0:
                    raise JobError(f"`trainer demo-data` failed in {image} (exit {code}):\n{output[-2000:]}")
        elif spec.data.startswith("s3://"):
            from orchestrator.sync import sync_s3

            say(f"  copying {spec.data} on {session.where} with its instance role")
            report = sync_s3(session, spec.data, data_dir)
            say(f"  {report.files_sent} of {report.files_total} files copied")
        elif not local_target:
            from orchestrator.sync import sync_dataset

            say(f"  syncing {spec.data} to {session.where}:{data_dir}")
            report = sync_dataset(session, Path(spec.data), data_dir)
            say(f"  {report.files_sent} of {report.files_total} files sent "
                f"({report.bytes_sent / 1e6:.1f} MB, {report.mb_per_s:.1f} MB/s)")

        if spec.restore is not None:
            from orchestrator.restore import restore_checkpoints

            report = restore_checkpoints(session, spec.restore, spec.job, outputs_dir, say=say)
            if report.source != "machine":
                say(f"  restored {', '.join(report.files)} from {report.where}")

        has_checkpoint = session.run(f"test -f {shlex.quote(posixpath.join(outputs_dir, 'checkpoints', 'last.pt'))}")
        continues_from = outputs_dir if has_checkpoint.exit_code == 0 else None
        args, budget = tuple(spec.trainer_args), None
        if not local_target and (cap := hard_cap(session)) is not None:  # read again: the sync took its time
            trained = _trained_s(_last_metrics(session, outputs_dir)) if continues_from else 0.0
            budget = budget_under_cap(cap.seconds, cap.elapsed_s, trained, max_hours_of(args))
            args = with_max_hours(args, budget.hours)
        extra = {ctr.LABEL_SOURCE: data_source(spec), ctr.LABEL_TRAINER_ARGS: json.dumps(list(spec.trainer_args))}
        if spec.autostop_minutes is not None:
            extra[ctr.LABEL_AUTOSTOP] = str(spec.autostop_minutes)
        run = ctr.RunSpec(job=spec.job, image=image, command=tuple(trainer_command(args)),
                          data_dir=data_dir, outputs_dir=outputs_dir, gpus=spec.gpus, user=user,
                          max_restarts=spec.max_restarts, image_hash=image_hash, created_by=_created_by(),
                          extra_labels=extra)
        try:
            st = ctr.run_detached(client, run)
        except ctr.NoGPUs:
            if not local_target:
                raise
            say("  warning: this machine's Docker engine cannot give the container a GPU (no NVIDIA Container "
                "Toolkit), so the trainer runs on the CPU. Install the toolkit for the GPU, or pass --no-gpus.")
            st = ctr.run_detached(client, replace(run, gpus=False))
        return replace(_to_status(st, {}), continues_from=continues_from, budget=budget.note if budget else None)
    finally:
        client.close()


def data_source(spec: JobSpec) -> str:
    """The job's --data as this machine names it: demo, an s3:// URI, or a local folder's absolute path."""
    if spec.data == "demo" or spec.data.startswith("s3://"):
        return spec.data
    return str(Path(spec.data).expanduser().resolve())


def _created_by() -> str:
    try:
        from importlib.metadata import version

        return f"orch {version('orch-trainer')}"
    except Exception:
        return "orch"


def start_job(endpoint: SSHEndpoint | None, spec: JobSpec) -> ContainerStatus:
    """Sync the data, build or reuse the trainer image, run it detached. Idempotent per job."""
    if endpoint is None:
        from orchestrator import local

        return local.start(spec)
    session = _open(endpoint)
    try:
        return start_on(session, spec)
    finally:
        session.close()


# -- status -----------------------------------------------------------------------------------------


def job_status(endpoint: SSHEndpoint | None, job: str, deadline_s: float = SSH_DEADLINE_S) -> ContainerStatus:
    """The job's container; `deadline_s` is how long to wait for SSH to answer."""
    if endpoint is None:
        from orchestrator import local

        return local.status(job)
    session = _open(endpoint, deadline_s)
    try:
        return status_on(session, job)
    finally:
        session.close()


def status_on(session, job: str) -> ContainerStatus:
    from orchestrator import container as ctr

    client = docker_client(session)
    try:
        st = ctr.status(client, job)
    finally:
        client.close()
    outputs = st.labels.get(ctr.LABEL_OUTPUTS)
    return _to_status(st, _last_metrics(session, outputs))


# -- logs -------------------------------------------------------------------------------------------


_TIME = re.compile(r"(\d{4}-\d\d-\d\d)(?:[T ](\d\d:\d\d)(:\d\d(?:\.\d{1,9})?)?)?(Z|[+-]\d\d:\d\d)?", re.IGNORECASE)


def parse_since(since: str | None, now: datetime | None = None) -> int | None:
    """`--since` -> ns since the epoch: a duration (90s, 10m, 2h, 1d), Unix seconds, or a time
    (2024-05-01T12:00, 2024-05-01 12:00:30, 2024-05-01, 2024-05-01T12:00+02:00); without a zone, UTC."""
    if not since:
        return None
    from orchestrator.container import parse_timestamp_ns

    text = since.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        now = now or datetime.now(timezone.utc)
        return int((now - timedelta(seconds=float(text[:-1]) * units[text[-1]])).timestamp() * 1e9)
    if text.replace(".", "", 1).isdigit():
        return int(float(text) * 1e9)
    m = _TIME.fullmatch(text)
    try:
        if not m:
            raise ValueError(text)
        day, minutes, seconds, zone = m.groups()
        return parse_timestamp_ns(f"{day}T{minutes or '00:00'}{seconds or ':00'}{(zone or 'Z').upper()}")
    except ValueError:
        raise JobError(f"--since {since!r}: use a duration (10m, 2h), a time (2026-01-31T08:00, UTC unless it "
                       "ends in Z or +HH:MM) or Unix seconds") from None


def follow_logs(endpoint: SSHEndpoint | None, job: str, follow: bool = False, since: str | None = None,
                machine_lost: Callable[[], bool] | None = None, check_s: float = 30.0,
                ended: Callable[[JobEnded], None] | None = None) -> int:
    """Stream the trainer's output to stdout; return the container's exit code (or 0 if still running).

    A dropped connection is reopened (for up to $ORCH_RECONNECT_S) and the stream carries on from
    the last line printed: none lost, none repeated. A link that goes silent is noticed within
    about three times $ORCH_KEEPALIVE_S and treated the same way. A changed host key or an
    unusable key file ends the following at once. Ctrl-C stops following, never the job (130).
    `machine_lost`, asked every `check_s` seconds, ends the following with `MachineLost` once it
    says True (the caller knows the cloud; this module does not). `ended` is called once the
    container has exited for good, before returning its exit code.
    """
    since_ns = parse_since(since)
    if endpoint is None:
        from orchestrator import local

        return local.follow_logs(job, follow, since_ns, ended=ended)
    # Watched: short SSH attempts, so a machine that is gone is noticed between them, not after minutes.
    deadline_s = SSH_DEADLINE_S if machine_lost is None else min(SSH_DEADLINE_S, max(10.0, 2 * check_s))
    return follow_container_logs(lambda: _open(endpoint, deadline_s), job, follow, since_ns,
                                 machine_lost=machine_lost, check_s=check_s, ended=ended)


def follow_container_logs(open_session: Callable[[], object], job: str, follow: bool, since_ns: int | None,
                          out=None, reconnect_s: float | None = None,
                          machine_lost: Callable[[], bool] | None = None, check_s: float = 30.0,
                          keepalive_s: float | None = None, ended: Callable[[JobEnded], None] | None = None) -> int:
    """The reconnecting log follower behind `follow_logs`; `open_session` gives a fresh session.

    Each session is watched (`remote.LinkWatch`, every `keepalive_s`, default $ORCH_KEEPALIVE_S):
    the engine's log stream has no timeout, so a silently dead link would block it for good.
    """
    import threading

    from orchestrator import container as ctr
    from orchestrator.remote import HostKeyChanged, KeyFileError, LinkWatch

    out = out or sys.stdout
    reconnect_s = reconnect_s if reconnect_s is not None else float(os.environ.get("ORCH_RECONNECT_S", DEFAULT_RECONNECT_S))
    errors = _connection_errors()
    cursor = ctr.LogCursor(since_ns)
    lost_since: float | None = None
    gone, done = threading.Event(), threading.Event()
    current: list = []  # the open session, for the watchdog to close

    def watchdog():  # a blocked log read only ends when its connection does: close it
        while not done.wait(check_s):
            try:
                lost = machine_lost()
            except Exception:  # the cloud can't be asked right now: keep following
                lost = False
            if lost:
                gone.set()
                for s in list(current):
                    try:
                        getattr(s, "abort", s.close)()  # its link is likely dead: no goodbye, it would block
                    except Exception:
                        pass
                return

    def check_gone():
        if gone.is_set():
            raise MachineLost(f"the machine of job {job!r} is gone; stopped following its logs")

    if machine_lost is not None:
        threading.Thread(target=watchdog, name="orch-machine-watch", daemon=True).start()
    try:
        while True:
            session = client = link = None
            try:
                check_gone()
                session = open_session()
                current[:] = [session]
                link = LinkWatch(session, keepalive_s)
                check_gone()
                client = docker_client(session)
                if lost_since is not None:
                    print(f"[orch] reconnected to {session.where}; carrying on", file=sys.stderr, flush=True)
                lost_since = None
                while True:
                    cursor.restart()
                    for line in ctr.stream_logs(client, job, cursor.since_ns, follow):
                        if cursor.fresh(line):
                            out.write(line.text + "\n")
                            out.flush()
                    st = ctr.status(client, job)
                    check_gone()
                    if st.state == "missing":
                        raise JobError(f"job {job!r} has no container on {session.where}. "
                                       "See `orch status` (it may have been torn down).")
                    if st.ended:
                        cursor.restart()
                        for line in ctr.stream_logs(client, job, cursor.since_ns, follow=False, partial=True):
                            if cursor.fresh(line):  # a last line with no newline, if any
                                out.write(line.text + "\n")
                        out.flush()
                        if ended is not None:
                            ended(_ended(st))
                        return int(st.exit_code or 0)
                    if not follow:
                        return 0
                    time.sleep(0.5)  # restarting (crash, then resume): attach again
            except (HostKeyChanged, KeyFileError):
                raise  # no reconnect can fix these; the message says what does
            except errors as e:
                check_gone()
                now = time.monotonic()
                lost_since = lost_since or now
                why = link.reason if link is not None and link.lost.is_set() else type(e).__name__
                if not follow or now - lost_since > reconnect_s:
                    raise JobError(f"lost the connection to job {job!r} ({why}: {e}). The job "
                                   f"keeps running; `orch logs {job} --follow` picks up where this stopped.") from None
                print(f"[orch] connection lost ({why}); reconnecting", file=sys.stderr, flush=True)
                time.sleep(1.0)
            finally:
                current.clear()
                if link is not None:
                    link.stop()
                if client is not None:
                    try:
                        client.close()
                    except Exception:
                        pass
                if session is not None:
                    try:
                        session.close()
                    except Exception:
                        pass
    except KeyboardInterrupt:
        print(f"\n[orch] stopped following; the job keeps running. Again: orch logs {job} --follow",
              file=sys.stderr, flush=True)
        return 130
    finally:
        done.set()


def _ended(st) -> JobEnded:
    from orchestrator import container as ctr

    try:
        autostop = int(st.labels[ctr.LABEL_AUTOSTOP])
    except (KeyError, ValueError):
        autostop = None
    return JobEnded(job=st.job, exit_code=int(st.exit_code or 0), finished_at=st.finished_at,
                    outputs=st.labels.get(ctr.LABEL_OUTPUTS), autostop_minutes=autostop)


def after_the_job(ended: JobEnded, checkpoint_bucket: str | None = None, keep_volume: bool = False) -> str:
    """What to do once an instance's job has ended: fetch the weights before autostop takes the disks."""
    from orchestrator.container import parse_timestamp_ns

    try:
        at = datetime.fromtimestamp(parse_timestamp_ns(ended.finished_at or "") / 1e9, timezone.utc)
    except (ValueError, OverflowError, OSError):
        at = None
    if at is not None and at.year < 2000:  # the engine's "never": 0001-01-01
        at = None
    job, minutes = ended.job, ended.autostop_minutes
    text = (f"[orch] Job {job} ended{at.strftime(' at %H:%M UTC') if at else ''} (exit code {ended.exit_code}). "
            f"Its weights are on the instance{f', in {ended.outputs}' if ended.outputs else ''}. ")
    if minutes == 0:
        return text + (f"Autostop is off: the instance bills until `orch teardown {job}`. "
                       f"Run `orch fetch-weights {job}` now.")
    when = (f"{minutes} minutes after the job ended" + (f" (about {(at + timedelta(minutes=minutes)).strftime('%H:%M UTC')})"
                                                        if at else "")
            if minutes is not None else "--autostop-minutes (30 by default) after the job ended")
    kept = []
    if keep_volume:
        kept.append(f"the root volume with the outputs is kept (`orch launch --name {job} --resume` restores from it; "
                    f"it bills until `orch teardown {job}`)")
    if checkpoint_bucket:
        kept.append(f"the checkpoints are also copied to {checkpoint_bucket}")
    disks = "and its disks with it" + (f"; {' and '.join(kept)}" if kept else ", weights included")
    return text + f"Autostop terminates the instance {when}, {disks}. Run `orch fetch-weights {job}` now."


# -- weights ----------------------------------------------------------------------------------------


def fetch_weights(endpoint: SSHEndpoint | None, job: str, which: str, dest: Path,
                  remote_root: str | None = None, outputs_root: str | None = None) -> FetchReport:
    """Download the checkpoints (verified against their .sha256) and metrics.jsonl, train.log, curves.png."""
    from orchestrator.fetch import fetch_files, trainer_outputs

    names, optional = trainer_outputs(which)
    if endpoint is None:
        from orchestrator import local
        from orchestrator.remote import LocalSession

        return fetch_files(LocalSession(), str(local.outputs_dir(job)), names, dest, optional=optional)
    session = _open(endpoint)
    try:
        outputs = outputs_on(session, job, remote_root, outputs_root)
        return fetch_files(session, outputs, names, dest, optional=optional, progress=sys.stderr.isatty())
    finally:
        session.close()


def outputs_on(session, job: str, remote_root: str | None = None, outputs_root: str | None = None) -> str:
    """The job's outputs folder: the container's label says; without a container, the usual place."""
    from orchestrator import container as ctr

    def usual() -> str:
        return job_dirs(session, JobSpec(job=job, data="", remote_root=remote_root, outputs_root=outputs_root))[1]

    try:
        client = docker_client(session)
    except JobError:
        return usual()
    try:
        st = ctr.status(client, job)
    finally:
        client.close()
    return st.labels.get(ctr.LABEL_OUTPUTS) or usual()


# -- stop -------------------------------------------------------------------------------------------


def stop_job(endpoint: SSHEndpoint | None, job: str, deadline_s: float = SSH_DEADLINE_S) -> bool:
    """Stop and remove the job's container. True if one was removed. The outputs folder stays.

    `deadline_s` is how long to wait for SSH to answer (teardown waits briefly: the instance goes anyway)."""
    if endpoint is None:
        from orchestrator import local

        return local.stop(job)
    session = _open(endpoint, deadline_s)
    try:
        return stop_on(session, job)
    finally:
        session.close()


def stop_on(session, job: str) -> bool:
    from orchestrator import container as ctr

    client = docker_client(session)
    try:
        return ctr.remove(client, job)
    finally:
        client.close()
