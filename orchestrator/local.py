"""The local target: the job on this machine, for people without an AWS account.

With a Docker engine answering here, the job runs in the same trainer container as on an instance
(`job.start_on` with a `LocalSession`; the data folder is mounted where it is). Without one, the
trainer runs as a detached local process under a small supervisor that restarts it after a crash
with `--resume auto`, like the container's restart policy. Either way a job keeps its files in
`$ORCH_HOME/jobs/<job>/`:

    job.json        what runs (runner, command, folders, supervisor pid); written atomically
    console.log     the trainer's output, each line prefixed with an RFC 3339 time (like `docker logs -t`)
    exit.json       the supervisor's final word: exit code and restarts
    last-run.json   written at teardown: the data the outputs were trained on (a relaunch compares it)
    outputs/        the trainer's --out folder (checkpoints, metrics.jsonl, train.log, curves.png)
    data/           the generated dataset for `--data demo`

`ORCH_LOCAL_RUNNER` picks the runner: auto (default: Docker when it answers), docker, or process.
Teardown stops the job and forgets it; outputs/ and console.log stay, and a launch under the same
name continues from the checkpoint in outputs/ (on the same data: other data is refused, as the
trainer would refuse to resume on it).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # job.py imports this module: the type only, never at run time
    from orchestrator.job import ContainerStatus

RUNNER_ENV = "ORCH_LOCAL_RUNNER"
STOP_TIMEOUT_S = 60.0
RESTART_PAUSE_S = 1.0
# trainer.errors.EXIT_BAD_INPUT (not imported: orch runs without the trainer's dependencies). Bad flags, recipe or
# data layout: a restart would fail the same way, so the supervisor stops. (Docker's on-failure restart policy, on
# an instance or with the docker runner, can't tell exit codes apart: it still retries those.)
TRAINER_BAD_INPUT_EXIT = 2


@dataclass(frozen=True)
class LocalJob:
    job: str
    runner: str  # docker | process
    data_dir: str
    outputs_dir: str
    command: tuple[str, ...] = ()
    pid: int | None = None  # the supervisor (process runner)
    max_restarts: int = 5
    started_at: str | None = None
    extra: dict = field(default_factory=dict)


def _orch_home() -> Path:
    from orchestrator.config import orch_home

    return orch_home()


def job_dir(job: str) -> Path:
    return _orch_home() / "jobs" / job


def outputs_dir(job: str) -> Path:
    record = load_record(job)
    return Path(record.outputs_dir) if record else job_dir(job) / "outputs"


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def load_record(job: str) -> LocalJob | None:
    raw = _read_json(job_dir(job) / "job.json")
    if raw is None:
        return None
    known = LocalJob.__dataclass_fields__
    raw = {k: v for k, v in raw.items() if k in known}
    raw["command"] = tuple(raw.get("command") or ())
    return LocalJob(**raw)


def _save_record(record: LocalJob) -> None:
    _write_json(job_dir(record.job) / "job.json", asdict(record))


def _now_rfc3339() -> str:
    ns = time.time_ns()
    return datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


# -- which runner ------------------------------------------------------------------------------------


def engine_answers(timeout_s: float = 3.0) -> bool:
    """Whether a Docker engine answers on this machine ($DOCKER_HOST or the default socket)."""
    from orchestrator.remote import LocalSession, RemoteError

    try:
        path = LocalSession().docker_socket()
    except RemoteError:
        return False
    if not os.path.exists(path):
        return False
    try:
        import docker

        client = docker.DockerClient(base_url="unix://" + path, timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def choose_runner() -> str:
    from orchestrator.job import JobError

    wanted = os.environ.get(RUNNER_ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "docker", "process"):
        raise JobError(f"{RUNNER_ENV}={wanted!r}: use auto, docker or process")
    if wanted == "process":
        return "process"
    if engine_answers():
        return "docker"
    if wanted == "docker":
        raise JobError(f"{RUNNER_ENV}=docker but no Docker engine answers here ($DOCKER_HOST or "
                       "/var/run/docker.sock). Start Docker, or unset it to run the trainer as a local process.")
    return "process"


def _runner_of(job: str) -> str | None:
    record = load_record(job)
    if record:
        return record.runner
    return "docker" if engine_answers() else None


# -- start -------------------------------------------------------------------------------------------


def start(spec) -> "ContainerStatus":
    from orchestrator import job as job_api
    from orchestrator.remote import LocalSession

    record = load_record(spec.job)
    root = job_dir(spec.job)
    data = None if spec.data.startswith("s3://") else str(root / "data") if spec.data == "demo" \
        else job_api.data_source(spec)
    if record and record.runner == "process" and _alive(record.pid):
        running_args = job_api.trainer_args_of(record.command[3:])  # after `python -m trainer`
        return replace(status(spec.job), not_applied=job_api.not_applied(record.data_dir, running_args, spec, data),
                       already_running=True)
    _check_kept_outputs(spec, record, root, data)
    runner = choose_runner()
    if runner == "docker":
        from orchestrator.trainer_args import check_container_paths

        check_container_paths(spec.trainer_args, spec.data)   # a local process reads this machine's paths
        st = job_api.start_on(LocalSession(), spec, root=str(root), local_target=True)
        _save_record(LocalJob(job=spec.job, runner="docker", data_dir=data or str(root / "data"),
                              outputs_dir=str(root / "outputs"), started_at=_now_rfc3339()))
        return st
    return _start_process(spec, root)


def _check_kept_outputs(spec, record: LocalJob | None, root: Path, data: str | None) -> None:
    """Refuse to continue kept outputs on other data: the trainer resumes their checkpoint, and refuses it then."""
    from orchestrator.job import JobError

    outputs = Path(record.outputs_dir) if record else root / "outputs"
    if not (outputs / "checkpoints" / "last.pt").exists():
        return
    before = record.data_dir if record else (_read_json(root / "last-run.json") or {}).get("data_dir")
    if before and data and before != data:
        raise JobError(
            f"job {spec.job} has outputs at {outputs}, trained on {before}: a launch under the same name continues "
            f"from their checkpoint, and --data {spec.data} is other data (the trainer refuses to resume on other "
            f"classes). Nothing was started. To start {spec.job} over: delete that folder (`rm -rf {outputs}`, after copying "
            f"what you want to keep); or choose another --name; or pass --data {before} to continue it.")


def _start_process(spec, root: Path):
    from orchestrator.job import JobError, trainer_command

    if spec.data.startswith("s3://"):
        raise JobError(f"--data {spec.data}: an s3:// dataset is copied by an instance with its role; on this "
                       "machine, download it first (`aws s3 sync URI DIR`) and pass --data DIR.")
    outputs = root / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    if spec.data == "demo":
        data = root / "data"
        if not (data / "dataset.json").exists():
            print("  generating the demo dataset (trainer demo-data)", file=sys.stderr, flush=True)
            made = subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", str(data)],
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if made.returncode != 0:
                raise JobError(f"`trainer demo-data` failed (exit {made.returncode}):\n"
                               f"{(made.stderr or made.stdout)[-2000:]}\nIs the trainer installed "
                               "(pip install 'orch-trainer[trainer]')?")
    else:
        data = Path(spec.data).expanduser().resolve()
        if not data.is_dir():
            raise JobError(f"the data folder {data} does not exist; nothing was started. Pass --data with a "
                           "dataset folder (train/ and val/), or --data demo.")
    command = (sys.executable, "-m", "trainer", *trainer_command(spec.trainer_args, str(data), str(outputs)))
    (root / "exit.json").unlink(missing_ok=True)
    record = LocalJob(job=spec.job, runner="process", data_dir=str(data), outputs_dir=str(outputs),
                      command=command, max_restarts=spec.max_restarts, started_at=_now_rfc3339())
    _save_record(record)
    with open(os.devnull, "rb") as devnull, open(root / "supervisor.log", "ab") as errors:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.local", "supervise", str(root)],
                                stdin=devnull, stdout=errors, stderr=errors, start_new_session=True,
                                close_fds=True)
    _save_record(LocalJob(**{**asdict(record), "pid": proc.pid}))
    resumes = (outputs / "checkpoints" / "last.pt").exists()
    return replace(status(spec.job), continues_from=str(outputs) if resumes else None)


# -- the supervisor (its own process, detached from orch) -----------------------------------------


def supervise(root: Path) -> int:
    """Run the record's command, timestamping its output into console.log; restart after a crash."""
    raw = _read_json(root / "job.json") or {}
    command = list(raw.get("command") or ())
    max_restarts = int(raw.get("max_restarts", 5))
    stopping = False
    child: subprocess.Popen | None = None

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # the trainer saves last.pt and exits

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    restarts, code = 0, 1
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    with open(root / "console.log", "ab", buffering=0) as log:
        while True:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
            for line in child.stdout:
                log.write(_now_rfc3339().encode() + b" " + line.rstrip(b"\n") + b"\n")
            code = child.wait()
            code = 128 - code if code < 0 else code  # killed by a signal: the shell's (and Docker's) number
            if code == 0 or stopping or restarts >= max_restarts:
                break
            if code == TRAINER_BAD_INPUT_EXIT:
                log.write(f"{_now_rfc3339()} [orch] trainer exited with {code} (bad input: see the error above); "
                          "not restarting, a restart would fail the same way. Fix the trainer arguments or the "
                          f"data, then `orch launch --target local --name {raw.get('job') or root.name} ...` "
                          "again\n".encode())
                break
            restarts += 1
            _write_json(root / "supervisor.json", {"restarts": restarts})
            log.write(f"{_now_rfc3339()} [orch] trainer exited with {code}; restart {restarts} of "
                      f"{max_restarts} resumes from the last checkpoint\n".encode())
            time.sleep(RESTART_PAUSE_S)
    _write_json(root / "exit.json", {"exit_code": code, "restarts": restarts, "finished_at": _now_rfc3339()})
    return code


def _alive(pid: int | None) -> bool:
    """Whether `pid` is a live (not zombie) orch supervisor."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no /proc (macOS): the signal check is all we have
    try:
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return b"orchestrator.local" in (proc / "cmdline").read_bytes()
    except OSError:
        return False


# -- status, logs, stop ----------------------------------------------------------------------------


def _last_metrics(outputs: Path) -> dict:
    try:
        lines = (outputs / "metrics.jsonl").read_text(encoding="utf-8").strip().splitlines()
        value = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def status(job: str):
    from orchestrator import job as job_api
    from orchestrator.remote import LocalSession

    record = load_record(job)
    runner = record.runner if record else _runner_of(job)
    if runner == "docker":
        return job_api.status_on(LocalSession(), job)
    if record is None:
        return job_api.ContainerStatus(job=job, state="missing", runner="process")
    root = job_dir(job)
    final = _read_json(root / "exit.json")
    restarts = int(((final or _read_json(root / "supervisor.json")) or {}).get("restarts", 0))
    if _alive(record.pid):
        state, code = "running", None
    elif final is not None:
        state, code = "exited", int(final.get("exit_code", 1))
    else:
        state, code = "dead", None  # the supervisor died without a word (machine reboot, kill -9)
    return job_api.ContainerStatus(job=job, state=state, exit_code=code, restarts=restarts,
                                   last_metrics=_last_metrics(Path(record.outputs_dir)),
                                   outputs=record.outputs_dir, runner="process")


def follow_logs(job: str, follow: bool, since_ns: int | None, out=None, ended=None) -> int:
    from orchestrator import job as job_api
    from orchestrator.container import split_log_line
    from orchestrator.remote import LocalSession

    record = load_record(job)
    runner = record.runner if record else _runner_of(job)
    if runner == "docker":
        return job_api.follow_container_logs(LocalSession, job, follow, since_ns, out=out, ended=ended)
    if record is None:
        raise job_api.JobError(f"no local job {job!r} here. See `orch list`.")
    out = out or sys.stdout
    path = job_dir(job) / "console.log"
    pending = b""
    try:
        with open(path, "ab+") as f:  # created if the supervisor has not written yet
            f.seek(0)
            while True:
                chunk = f.read(1 << 16)
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        line = split_log_line(raw.decode(errors="replace"))
                        if since_ns and line.ts_ns and line.ts_ns < since_ns:
                            continue
                        out.write(line.text + "\n")
                    out.flush()
                    continue
                st = status(job)
                if st.state == "running" and follow:
                    time.sleep(0.3)
                    continue
                if st.state == "running":
                    return 0
                if f.read(1):  # written between the last read and the status check
                    f.seek(-1, os.SEEK_CUR)
                    continue
                code = int(st.exit_code if st.exit_code is not None else 1)
                if ended is not None:
                    ended(job_api.JobEnded(job=job, exit_code=code, outputs=record.outputs_dir))
                return code
    except KeyboardInterrupt:
        print(f"\n[orch] stopped following; the job keeps running. Again: orch logs {job} --follow",
              file=sys.stderr, flush=True)
        return 130


def stop(job: str) -> bool:
    """Stop the job (SIGTERM: the trainer saves last.pt) and forget it. True if it was known here."""
    from orchestrator import job as job_api
    from orchestrator.remote import LocalSession

    record = load_record(job)
    runner = record.runner if record else _runner_of(job)
    removed = False
    if runner == "docker":
        removed = job_api.stop_on(LocalSession(), job)
    elif record is not None and _alive(record.pid):
        try:
            os.kill(record.pid, signal.SIGTERM)  # the supervisor passes it on once, and restarts nothing
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(record.pid):
            try:
                os.killpg(record.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    root = job_dir(job)
    if record is not None:  # what the kept outputs were trained on: the next launch of this name compares it
        _write_json(root / "last-run.json", {"data_dir": record.data_dir, "outputs_dir": record.outputs_dir})
    for name in ("job.json", "exit.json", "supervisor.json"):
        if (root / name).exists():
            removed = True
            (root / name).unlink()
    return removed


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "supervise":
    sys.exit(supervise(Path(sys.argv[2])))
