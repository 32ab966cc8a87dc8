"""What a job runs and what it was launched with: the trainer's command, and how a second launch compares.

Pure functions over records: no machine, no engine.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from orchestrator.labels import LABEL_TRAINER_ARGS
from orchestrator.records import JobSpec, TrainerState


def trainer_command(trainer_args: tuple[str, ...] | list[str], data: str = "/data", out: str = "/outputs") -> list[str]:
    """`trainer train` on the job's folders; `--resume auto` last so a restart always resumes."""
    return ["train", "--data", data, "--out", out, *trainer_args, "--resume", "auto"]


def command_of(run) -> list[str]:
    """The trainer's command for a RunSpec: its own (JobSpec.command), else `trainer train` on the job's folders."""
    return list(run.command) if run.command else trainer_command(run.trainer_args)


def in_folders(command: list[str], data: str, out: str) -> list[str]:
    """A container command's /data and /outputs paths as the folders they are on this machine (a process runner)."""
    def one(arg: str) -> str:
        for inside, here in (("/data", data), ("/outputs", out)):
            if arg == inside or arg.startswith(inside + "/"):
                return here + arg[len(inside):]
        return arg
    return [one(a) for a in command]


def trainer_args_of(command: tuple[str, ...] | list[str]) -> tuple[str, ...] | None:
    """The user's trainer arguments in a `trainer_command`; None when it is not one (another image's)."""
    command = tuple(command)
    if len(command) >= 7 and command[:2] == ("train", "--data") and command[3] == "--out" \
            and command[-2:] == ("--resume", "auto"):
        return command[5:-2]
    return None


def launched_args(st: TrainerState) -> tuple[str, ...] | None:
    """The trainer arguments a job was launched with: its label, which holds them as given; else its
    command (an older orch's container, whose command had nothing added)."""
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


def data_source(spec: JobSpec) -> str:
    """The job's --data as this machine names it: demo, an s3:// URI, or a local folder's absolute path."""
    if spec.data == "demo" or spec.data.startswith(("s3://", "dataset:", "kaggle:")):
        return spec.data
    return str(Path(spec.data).expanduser().resolve())


def created_by() -> str:
    try:
        from importlib.metadata import version

        return f"orch {version('orch-trainer')}"
    except Exception:
        return "orch"
