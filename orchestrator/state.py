"""The job registry: `$ORCH_HOME/state.json`, a cache of what the cloud's tags say.

Schema-versioned, written atomically (temp file + os.replace), mode 600. It holds names, ids and
paths only: never credentials. When it disagrees with the cloud, the cloud wins (`orch list`
reconciles it).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from orchestrator.config import orch_home
from orchestrator.files import locked, write_atomic

SCHEMA_VERSION = 1


class StateError(RuntimeError):
    pass


@dataclass(frozen=True)
class LaunchRecord:
    """What `orch launch` was given, so `orch launch --name JOB --resume` can start the same job again.

    Only what is needed to rebuild the launch: never credentials. `data` is an absolute local path,
    'demo' or an s3:// URI. The checkpoint bucket, the recover and keep-volume settings are also instance tags.
    """

    data: str | None = None
    trainer_args: tuple[str, ...] = ()
    image: str | None = None
    gpus: bool = True
    instance_type: str | None = None
    region: str | None = None
    spot: bool = False
    checkpoint_bucket: str | None = None
    iam_instance_profile: str | None = None
    subnet_id: str | None = None
    volume_gb: int | None = None
    remote_root: str | None = None
    recover: bool = False
    max_recoveries: int = 3
    keep_volume: bool = False
    nodes: int = 1

    @classmethod
    def from_json(cls, raw: dict) -> "LaunchRecord":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["trainer_args"] = tuple(str(a) for a in values.get("trainer_args") or ())
        return cls(**values)


@dataclass(frozen=True)
class JobRecord:
    job: str
    target: str = "aws"  # aws | local
    region: str | None = None
    instance_id: str | None = None
    instance_type: str | None = None
    spot: bool = False
    key_name: str | None = None
    key_path: str | None = None
    security_group_id: str | None = None
    ssh_user: str = "ubuntu"
    ssh_proxy_command: str | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    status: str = "launching"  # launching | running | interrupted | terminated | ... (cloud state)
    created_at: str | None = None
    updated_at: str | None = None
    launch: LaunchRecord | None = None  # what the job was launched with (for --resume / --recover)
    nodes: int = 1  # a local `--nodes N` job: its N trainers (an instance's node is tagged orch:node instead)
    spec_folder: str | None = None  # a managed job's s3://.../orch-jobs/JOB (its group's tag orch:spec says it too)


def state_path() -> Path:
    return orch_home() / "state.json"


def load() -> dict[str, JobRecord]:
    path = state_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StateError(
            f"{path} is unreadable ({e}). It is only a cache: move it aside and run `orch list`, "
            "which rebuilds the AWS jobs from their tags."
        ) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        raise StateError(
            f"{path} has schema {data.get('schema') if isinstance(data, dict) else '?'}, "
            f"expected {SCHEMA_VERSION}. Move it aside and run `orch list` to rebuild it."
        )
    raw_jobs = data.get("jobs", {})
    if not isinstance(raw_jobs, dict):
        raise StateError(_unchanged(path, "its jobs are not an object"))
    jobs = {}
    for name, raw in raw_jobs.items():
        jobs[name] = _record(name, raw, path)
    return jobs


def _unchanged(path: Path, what: str) -> str:
    return (f"{path}: {what}. The file was left as it is. It is only a cache of the cloud's tags: move it aside "
            f"(`mv {path} {path}.bad`) and run `orch list`, which rebuilds the AWS jobs from their tags.")


def _record(name: str, raw: object, path: Path) -> JobRecord:
    """One job's record, each field of the type it is declared with (a hand-edited file says where it is not)."""
    if not isinstance(raw, dict):
        raise StateError(_unchanged(path, f"job {name!r} is not an object"))
    values = {k: v for k, v in raw.items() if k in _hints(JobRecord)}
    values.setdefault("job", name)  # the key names the job; a record without the field still says which
    if values["job"] != name:
        raise StateError(_unchanged(path, f"job {name!r} holds the record of {values['job']!r}"))
    launch = values.get("launch")
    for cls, fields_ in ((JobRecord, values), (LaunchRecord, launch if isinstance(launch, dict) else {})):
        for field_name, value in fields_.items():
            hint = _hints(cls).get(field_name)
            if hint is not None and not _is(value, hint):
                raise StateError(_unchanged(path, f"job {name!r}: {field_name} is {value!r}, not {hint}"))
    values["launch"] = LaunchRecord.from_json(launch) if isinstance(launch, dict) else None
    return JobRecord(**values)


def _hints(cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(cls)}


_TYPES = {"str": str, "bool": bool, "int": int, "None": type(None), "LaunchRecord": dict}


def _is(value: object, hint: str) -> bool:
    """Whether a JSON value fits a field declared as `hint` ("str | None", "tuple[str, ...]", ...)."""
    for option in (part.strip() for part in hint.split("|")):
        if option.startswith("tuple["):
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return True
        elif option == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif isinstance(value, _TYPES[option]):
            return True
    return False


def _write(jobs: dict[str, JobRecord]) -> None:
    payload = {"schema": SCHEMA_VERSION, "jobs": {n: asdict(r) for n, r in sorted(jobs.items())}}
    write_atomic(state_path(), json.dumps(payload, indent=2))


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _locked() -> contextlib.AbstractContextManager[None]:
    """Serialize read-modify-write between concurrent `orch` processes."""
    return locked(state_path().with_suffix(".lock"))


def get(job: str) -> JobRecord | None:
    return load().get(job)


def put(record: JobRecord) -> JobRecord:
    with _locked():
        return _put(record)


def _put(record: JobRecord) -> JobRecord:
    jobs = load()
    old = jobs.get(record.job)
    record = replace(
        record,
        created_at=record.created_at or (old.created_at if old else None) or _now(),
        updated_at=_now(),
    )
    jobs[record.job] = record
    _write(jobs)
    return record


def update(job: str, **changes) -> JobRecord:
    with _locked():
        old = get(job) or JobRecord(job=job)
        return _put(replace(old, **changes))


def remove(job: str) -> bool:
    with _locked():
        jobs = load()
        if job not in jobs:
            return False
        del jobs[job]
        _write(jobs)
        return True
