"""Reaching a running job from this terminal: its logs, its weights, a shell on its instance."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from orchestrator.cloud import job_specs
from orchestrator.config import ConfigError, Settings
from orchestrator.errors import FlowError, JobError, NoRunningInstance
from orchestrator.files import write_atomic
from orchestrator.job import control
from orchestrator.job.ended import after_the_job
from orchestrator.job.fetch import sha256_file
from orchestrator.job.restore import bucket_uri
from orchestrator.job.logs import follow, parse_since
from orchestrator.lifecycle import machines
from orchestrator.lifecycle.resume import outputs_root_for, recorded_launch, remote_root_for
from orchestrator.records import FetchReport, JobEnded
from orchestrator.remote.proxy import openssh_command


def check_since(since: str | None) -> None:
    """Refuse a `--since` that can't be read (a usage error), before anything is asked of the machine."""
    try:
        parse_since(since)
    except JobError as e:
        raise ConfigError(str(e)) from None


def logs(job: str, settings: Settings, follow_on: bool = False, since: str | None = None,
         say_after: Callable[[str], None] | None = None, node: int = 0) -> int:
    """Print the job's trainer output (of node `node`, with --nodes; following it with `follow_on`); the trainer's
    exit code.

    Once an instance's trainer has ended for good, `say_after` is told when autostop takes its disks."""
    check_since(since)
    machine = machines.machine_for(job, settings, node=node)
    ended: list[JobEnded] = []
    code = follow(machine, follow=follow_on, since_ns=parse_since(since), ended=ended.append)
    if follow_on and ended and say_after is not None and machine.autostops:
        try:
            launched = recorded_launch(job, settings)
        except Exception:  # the cloud can't be asked: say what is known
            launched = None
        say_after(after_the_job(ended[0], launched.checkpoint_bucket if launched else None,
                                bool(launched and launched.keep_volume)))
    return code


def check_which(which: str) -> None:
    if which not in ("best", "last", "all"):
        raise ConfigError(f"--which {which!r}: use best, last or all")


def fetch_weights(job: str, settings: Settings, which: str, dest: Path) -> FetchReport:
    """The job's checkpoints (verified against their .sha256) and metrics.jsonl, train.log, curves.png into `dest`;
    with no instance up, what its checkpoint bucket holds (a managed job between instances, or ended)."""
    check_which(which)
    try:
        machine = machines.machine_for(job, settings)
    except NoRunningInstance:
        launched = recorded_launch(job, settings)
        if launched is None or not launched.checkpoint_bucket:
            raise
        return from_bucket(job, launched.region or settings.region, launched.checkpoint_bucket, which, dest)
    return control.fetch_weights(machine, which, dest,
                                 remote_root=remote_root_for(job, settings), outputs_root=outputs_root_for(job))


def from_bucket(job: str, region: str, bucket: str, which: str, dest: Path) -> FetchReport:
    """The checkpoints infra/bootstrap.sh's watcher copied to `bucket` (each checked against the SHA-256 on the object,
    else its .sha256, which it copies last), and the metrics copied with last.pt."""
    dest = Path(dest).expanduser()
    got, verified, moved = [], [], 0
    wanted = {"best": ["best.pt"], "last": ["last.pt"], "all": ["best.pt", "last.pt"]}[which]
    for name in wanted + ["metrics.jsonl"]:
        local = dest / ("checkpoints/" + name if name.endswith(".pt") else name)
        if name.endswith(".pt"):
            # The digest on the object is the checkpoint's own (one PUT); its .sha256 beside it can be an older
            # checkpoint's when the instance was lost between the watcher's two copies.
            on_object = job_specs.object_sha256(region, bucket_uri(bucket, job, name))
            digest = on_object.encode() if on_object else \
                job_specs.get_small(region, bucket_uri(bucket, job, name + ".sha256"))
            if digest is None:
                if which == "all" and name == "best.pt":
                    continue  # best.pt only exists once an evaluation ran
                raise FlowError(f"No running instance for job {job!r}, and {bucket_uri(bucket, job, name)} (with its "
                                ".sha256) is not in its checkpoint bucket: nothing was downloaded for it.")
            expected = (digest.decode(errors="replace").split() or [""])[0]
            if not re.fullmatch(r"[0-9a-f]{64}", expected):
                raise FlowError(f"{bucket_uri(bucket, job, name + '.sha256')} holds no SHA-256: nothing was downloaded "
                                "for it.")
        fetched = local.with_name(local.name + ".fetched")  # checked before it replaces what is here
        if local.exists() and name.endswith(".pt") and sha256_file(local) == expected:
            size = 0  # already here and intact
        else:
            size = job_specs.download(region, bucket_uri(bucket, job, name), fetched)
            if size is None:
                continue
            if name.endswith(".pt") and sha256_file(fetched) != expected:
                fetched.unlink()
                raise FlowError(f"{bucket_uri(bucket, job, name)} does not match its .sha256 (a newer checkpoint "
                                "being copied?): run `orch fetch-weights` again.")
            os.replace(fetched, local)
        if name.endswith(".pt"):
            write_atomic(local.with_name(name + ".sha256"), f"{expected}  {name}\n")
            verified.append(local)
        got.append(local)
        moved += size
    return FetchReport(dest=dest, files=tuple(got), verified=tuple(verified), bytes_downloaded=moved, source=bucket)


def ssh_command(job: str, settings: Settings, extra: list[str], node: int = 0) -> list[str]:
    """The `ssh` command line that opens a shell (or runs `extra`) on the job's instance (node `node`'s), as orch
    reaches it."""
    if machines.is_local(job):
        raise ConfigError(f"Job {job} runs on this machine; use `docker exec` or `orch logs {job}`.")
    return openssh_command(machines.endpoint_for(job, settings, node), extra)
