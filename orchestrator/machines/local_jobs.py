"""This machine's jobs (`--target local`): their folder under `$ORCH_HOME/jobs/<job>/`, and what the two local
machines (machines/local_docker.py, machines/local_process.py) share.

    job.json        what runs (runner, folders, labels; the process runner's command and supervisor pid)
    console.log     a trainer process's output, each line prefixed with an RFC 3339 time (like `docker logs -t`)
    exit.json       the supervisor's final word: exit code and restarts
    last-run.json   written at teardown: the data the outputs were trained on (a relaunch compares it)
    outputs/        the trainer's --out folder (checkpoints, metrics.jsonl, train.log, curves.png)
    data/           the generated dataset for `--data demo`

Teardown stops the job and forgets it; outputs/ and console.log stay, and a launch under the same
name continues from the checkpoint in outputs/ (on the same data: other data is refused, as the
trainer would refuse to resume on it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from orchestrator.errors import JobError
from orchestrator.files import read_json, write_json
from orchestrator.job.spec import data_source
from orchestrator.machines import tensorboard_here
from orchestrator.paths import local_job_dir
from orchestrator.records import ENV_FILE_NAME, HardCap, ImageReady, ImageRegistry, JobSpec, RunSpec
from orchestrator.remote.local import LocalSession

RECORD_FILES = ("job.json", "exit.json", "supervisor.json")


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
    labels: dict = field(default_factory=dict)  # as a container's labels say: the launch's data, arguments, ...


def job_dir(job: str) -> Path:
    return local_job_dir(job)


def load_record(job: str) -> LocalJob | None:
    raw = read_json(job_dir(job) / "job.json")
    if raw is None:
        return None
    known = {f.name for f in fields(LocalJob)}
    if "extra" in raw and "labels" not in raw:  # written by an older orch
        raw["labels"] = raw.pop("extra")
    values = {k: v for k, v in raw.items() if k in known}
    values["command"] = tuple(values.get("command") or ())
    values["labels"] = {str(k): str(v) for k, v in (values.get("labels") or {}).items()}
    return LocalJob(**values)


def save_record(record: LocalJob) -> None:
    write_json(job_dir(record.job) / "job.json", asdict(record))


def outputs_dir(job: str) -> Path:
    record = load_record(job)
    return Path(record.outputs_dir) if record else job_dir(job) / "outputs"


class LocalMachine:
    """What both local machines do alike: folders under `$ORCH_HOME/jobs/<job>`, data read where it is, no cap."""

    where = "this machine"
    progress = False
    autostops = False
    replaceable = False

    def __init__(self, job: str):
        self.job = job
        self.root = job_dir(job)

    def finish_data(self, session, runner, spec: JobSpec, data_dir: str, image: str, user: str, say) -> None:
        pass  # a kept dataset is restored before a local job starts (lifecycle/datasets.py)

    def registry_auth(self, session, registry: ImageRegistry) -> tuple[dict | None, str]:
        return None, "a local job builds here"  # no instance role on a laptop: nothing leaves it

    def push_image(self, session, registry: ImageRegistry, ready: ImageReady) -> str | None:
        return None

    def open(self, deadline_s: float = 0) -> LocalSession:
        return LocalSession()

    def hard_cap(self, session) -> HardCap | None:
        return None  # no watcher here: `--max-hours` goes to the trainer as it is

    def tensorboard(self, session, outputs: str, port: int, say) -> tensorboard_here.LocalTensorBoard:
        """The outputs are here: this machine's `tensorboard` on them (a container would need the trainer image)."""
        return tensorboard_here.start(Path(outputs) / "tensorboard", port)

    def data_here(self, spec: JobSpec) -> str | None:
        """The data folder the trainer reads: a local folder where it is, demo's under the job; None for s3://."""
        if spec.data.startswith("s3://"):
            return None
        return str(self.root / "data") if spec.data == "demo" else data_source(spec)

    def folders(self, session, spec: JobSpec) -> tuple[str, str]:
        return self.data_here(spec) or str(self.root / "data"), str(self.root / "outputs")

    def check_data(self, spec: JobSpec) -> None:
        """Refuse a missing folder, or kept outputs trained on other data (the trainer would refuse their checkpoint)."""
        data = self.data_here(spec)
        if data is not None and spec.data != "demo" and not Path(data).is_dir():
            raise JobError(f"the data folder {data} does not exist; nothing was started. Pass --data with a "
                           "dataset folder (train/ and val/), or --data demo.")
        record = load_record(self.job)
        outputs = Path(record.outputs_dir) if record else self.root / "outputs"
        if not (outputs / "checkpoints" / "last.pt").exists():
            return
        before = record.data_dir if record else (read_json(self.root / "last-run.json") or {}).get("data_dir")
        if before and data and before != data:
            raise JobError(
                f"job {self.job} has outputs at {outputs}, trained on {before}: a launch under the same name continues "
                f"from their checkpoint, and --data {spec.data} is other data (the trainer refuses to resume on other "
                f"classes). Nothing was started. To start {self.job} over: delete that folder (`rm -rf {outputs}`, after "
                f"copying what you want to keep); or choose another --name; or pass --data {before} to continue it.")

    def remember(self, run: RunSpec) -> None:
        pass

    def forget(self) -> bool:
        """Forget the job here; keep a note of the data its outputs were trained on (the next launch compares it)."""
        record = load_record(self.job)
        if record is not None:
            write_json(self.root / "last-run.json", {"data_dir": record.data_dir, "outputs_dir": record.outputs_dir})
        (self.root / ENV_FILE_NAME).unlink(missing_ok=True)  # the --env values go with the job (the outputs stay)
        removed = False
        for name in RECORD_FILES:
            if (self.root / name).exists():
                removed = True
                (self.root / name).unlink()
        return removed
