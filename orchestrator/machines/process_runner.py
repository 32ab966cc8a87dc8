"""The trainer as a supervised process on this machine (`--target local` without a Docker engine).

The `Runner` for machines/local_process.py: `run` starts machines/supervisor.py detached, which
runs `python -m trainer train ...` and restarts it after a crash; the job's files
(machines/local_jobs.py) say what runs, and `console.log` holds its output, timestamped like the
engine's logs, so job/logs.py follows it as it follows a container.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from orchestrator.errors import JobError
from orchestrator.files import read_json
from orchestrator.job.logtext import now_rfc3339, split_log_line
from orchestrator.job.spec import command_of, in_folders, trainer_command
from orchestrator.labels import LABEL_DATA, LABEL_OUTPUTS
from orchestrator.machines.base import Say
from orchestrator.machines.local_jobs import LocalJob, job_dir, load_record, save_record
from orchestrator.records import ENV_VARIABLE, ImageReady, JobSpec, LogLine, RunSpec, TrainerState

STOP_TIMEOUT_S = 60.0
POLL_S = 0.3


def alive(pid: int | None) -> bool:
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
        return b"orchestrator.machines.supervisor" in (proc / "cmdline").read_bytes()
    except OSError:
        return False


class ProcessRunner:
    name = "process"
    what = "trainer process"

    def __init__(self, job: str):
        self.job, self.root = job, job_dir(job)

    def state(self) -> TrainerState:
        record = load_record(self.job)
        if record is None or record.runner != "process":
            return TrainerState(job=self.job, state="missing")
        final = read_json(self.root / "exit.json")
        restarts = int(((final or read_json(self.root / "supervisor.json")) or {}).get("restarts", 0))
        if alive(record.pid):
            state, code = "running", None
        elif final is not None:
            state, code = "exited", int(final.get("exit_code", 1))
        else:
            state, code = "dead", None  # the supervisor died without a word (machine reboot, kill -9)
        labels = {**record.labels, LABEL_DATA: record.data_dir, LABEL_OUTPUTS: record.outputs_dir}
        return TrainerState(job=self.job, state=state, exit_code=code, restarts=restarts,
                            started_at=record.started_at, finished_at=(final or {}).get("finished_at"),
                            labels=labels, command=record.command[3:])  # after `python -m trainer`

    def ensure_image(self, spec: JobSpec, say: Say, auth: dict | None = None) -> ImageReady:
        return ImageReady("")  # the trainer installed here runs as it is

    def unpack_dataset(self, image: str, shards_dir: str, data_dir: str, user: str) -> None:
        done = subprocess.run([sys.executable, "-m", "trainer", "unpack", "--shards", shards_dir, "--dest", data_dir,
                               "--delete-shards"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise JobError(f"`trainer unpack` failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-2000:]}")

    def make_demo_data(self, image: str, data_dir: str, user: str) -> None:
        made = subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", data_dir],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if made.returncode != 0:
            raise JobError(f"`trainer demo-data` failed (exit {made.returncode}):\n"
                           f"{(made.stderr or made.stdout)[-2000:]}\nIs the trainer installed "
                           "(pip install 'orch-trainer[trainer]')?")

    def run(self, run: RunSpec) -> TrainerState:
        current = self.state()
        if current.state == "running":
            return current
        command = (sys.executable, "-m", "trainer", *(in_folders(command_of(run), run.data_dir, run.outputs_dir)
                                                       if run.command else
                                                       trainer_command(run.trainer_args, run.data_dir, run.outputs_dir)))
        (self.root / "exit.json").unlink(missing_ok=True)
        (self.root / "supervisor.json").unlink(missing_ok=True)
        record = LocalJob(job=self.job, runner="process", data_dir=run.data_dir, outputs_dir=run.outputs_dir,
                          command=command, max_restarts=run.max_restarts, started_at=now_rfc3339(),
                          labels=dict(run.labels))
        save_record(record)
        env = {k: v for k, v in os.environ.items() if k != ENV_VARIABLE}
        if run.env_file:  # the trainer reads the values from the file (never from this command line)
            env[ENV_VARIABLE] = run.env_file
        with open(os.devnull, "rb") as devnull, open(self.root / "supervisor.log", "ab") as errors:
            proc = subprocess.Popen([sys.executable, "-m", "orchestrator.machines.supervisor", "supervise",
                                     str(self.root)], stdin=devnull, stdout=errors, stderr=errors,
                                    start_new_session=True, close_fds=True, env=env)
        save_record(replace(record, pid=proc.pid))
        return self.state()

    def logs(self, since_ns: int | None, follow: bool, partial: bool = False) -> Iterator[LogLine]:
        """console.log from `since_ns` on; with `follow`, until the trainer is no longer running."""
        pending = b""
        with open(self.root / "console.log", "ab+") as f:  # created if the supervisor has not written yet
            f.seek(0)
            while True:
                chunk = f.read(1 << 16)
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        line = split_log_line(raw.decode(errors="replace"))
                        if not since_ns or line.ts_ns >= since_ns:
                            yield line
                    continue
                if not follow or self.state().state != "running":
                    if f.read(1):  # written between the last read and the state check
                        f.seek(-1, os.SEEK_CUR)
                        continue
                    break
                time.sleep(POLL_S)
        if pending and partial:
            yield split_log_line(pending.decode(errors="replace"))

    def remove(self) -> bool:
        """Stop the trainer (SIGTERM to its supervisor: the trainer saves last.pt, nothing restarts)."""
        record = load_record(self.job)
        if record is None or not alive(record.pid):
            return False
        try:
            os.kill(record.pid, signal.SIGTERM)  # the supervisor passes it on once, and restarts nothing
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(record.pid):
            try:
                os.killpg(record.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return True

    def close(self) -> None:
        pass
